"""Figures: valid files with the expected panels and curves, and one clear line for every bad input."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hamnet import systems
from hamnet import plots
from hamnet.diagnostics import conservation_series
from hamnet.population import MAX_SYSTEMS_SHOWN, summarize_population
from hamnet.io import Trajectories, save_trajectories
from hamnet.rollouts import rollout
from hamnet.simulation import generate

from problems import run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def suptitle(figure) -> str:
    """The figure's title (``Figure.get_suptitle`` exists from matplotlib 3.8; the lowest tested is 3.7)."""
    return figure._suptitle.get_text() if figure._suptitle is not None else ""


def make_truth(dim=2, n_systems=2):
    return generate(systems.Springs(n_particles=3, dim=dim), n_systems=n_systems, steps=20, dt=0.01, seed=0)


def make_rollout(truth, method="rk4", dt=0.01, model="true springs"):
    z = rollout(truth.system(), truth.z[:, 0], truth.params, steps=truth.n_times - 1, dt=dt, method=method)
    return Trajectories(truth.t, z, truth.params, {**truth.meta, "model": model, "method": method})


@pytest.fixture(scope="module")
def data():
    truth = make_truth()
    # a coarse step makes the rk4 rollout visibly wrong, so error curves are not all round-off
    return truth, make_rollout(truth, "rk4", dt=0.05), make_rollout(truth, "leapfrog")


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("plots")
    paths = {}
    for name, trajectories in zip(("truth", "rk4", "leapfrog"), data):
        paths[name] = folder / f"{name}.npz"
        save_trajectories(paths[name], trajectories)
    return paths


def assert_png(path, figure):
    raw = path.read_bytes()
    assert raw.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(raw)) as image:
        image.load()
        width, height = figure.get_size_inches() * plots.FIGURE_DPI
        assert image.format == "PNG" and image.size == (round(width), round(height))


def curves(ax, gid="median"):
    """The lines drawn with ``gid``: by default one median (or single-system curve) per rollout."""
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def band(ax):
    """The percentile bands of ``ax`` read back from their polygons, each as (x, low, high) along x."""
    found = []
    for collection in ax.collections:
        if collection.get_gid() == "band":
            vertices = collection.get_paths()[0].vertices
            xs = np.unique(vertices[:, 0])
            low = np.array([vertices[vertices[:, 0] == x, 1].min() for x in xs])
            high = np.array([vertices[vertices[:, 0] == x, 1].max() for x in xs])
            found.append((xs, low, high))
    return found


def worst_labels(ax):
    return [text.get_text() for text in ax.texts if text.get_gid() == "worst-label"]


def test_conservation_figure(tmp_path, data):
    truth, coarse, leapfrog = data
    out = tmp_path / "conservation.png"
    figure = plots.plot_conservation([coarse, leapfrog, truth], ["rk4", "leapfrog", "truth"], out)
    assert_png(out, figure)
    assert [ax.get_title() for ax in figure.axes] == ["linear momentum", "angular momentum", "true energy"]
    for ax in figure.axes:
        assert ax.get_yscale() == "log" and "relative" in ax.get_ylabel() and ax.get_xlabel()
        lines = curves(ax)
        assert len(lines) == 3 and len({line.get_linestyle() for line in lines}) == 3
        assert len({line.get_marker() for line in lines}) == 3
        for line in lines:
            assert (line.get_ydata() >= plots.ZERO_FLOOR).all() and len(line.get_xdata()) == truth.n_times - 1
        # two systems per rollout: a band and a labelled worst system each
        assert len(band(ax)) == 3 and len(curves(ax, "worst")) == 3 and len(worst_labels(ax)) == 3
    legend = {text.get_text() for text in figure.legends[0].get_texts()}
    assert legend >= {"rk4", "leapfrog", "truth", "worst system (labelled)"}
    assert any("10th-90th percentile" in name for name in legend)


def test_learned_energy_adds_a_panel(data):
    truth, coarse, _ = data
    hamiltonian = truth.system().hamiltonian
    figure = plots.plot_conservation([coarse, truth], learned_energy=[hamiltonian, None])
    assert len(figure.axes) == 4 and len(curves(figure.axes[3])) == 1


def test_exact_zero_change_is_drawn_at_the_floor():
    truth = make_truth()
    still = torch.zeros_like(truth.z)  # nothing moves: every change is exactly zero
    figure = plots.plot_conservation([Trajectories(truth.t, still, truth.params, truth.meta)], ["still"])
    for ax in figure.axes:
        assert (curves(ax)[0].get_ydata() == plots.ZERO_FLOOR).all()


def test_error_figure(tmp_path, data):
    truth, coarse, leapfrog = data
    out = tmp_path / "error.png"
    figure = plots.plot_error([coarse, leapfrog], truth, out=out)
    assert_png(out, figure)
    assert len(figure.axes) == 2
    for ax in figure.axes:
        lines = curves(ax)
        assert len(lines) == 2 and all(len(line.get_xdata()) == truth.n_times - 1 for line in lines)
    relative = curves(figure.axes[1])[0].get_ydata()
    assert (relative <= 1).all() and relative[-1] > 1e-6  # the coarse rollout is measurably wrong


def test_rollout_error_is_bounded_and_zero_on_agreement():
    a = torch.randn(2, 5, 2, 3, 2, dtype=torch.float64)
    mse, relative = plots.rollout_error(a, a)
    assert (mse == 0).all() and (relative == 0).all()
    mse, relative = plots.rollout_error(a, -a)
    assert torch.allclose(relative, torch.ones_like(relative))
    assert torch.allclose(mse, (2 * a).square().flatten(2).mean(-1))


@pytest.mark.parametrize("dim", [2, 3])
def test_paths_figure(tmp_path, dim):
    truth = make_truth(dim)
    prediction = make_rollout(truth, "leapfrog")
    out = tmp_path / "paths.png"
    figure = plots.plot_paths(prediction, truth, out, system_index=1)
    assert_png(out, figure)
    assert len(figure.axes) == 2
    for ax in figure.axes:
        # truth and prediction: a path and a start marker per particle each
        assert len(ax.get_lines()) == 2 * 2 * truth.n_particles
        assert len([line for line in ax.get_lines() if len(line.get_xdata()) > 1]) == 2 * truth.n_particles
    assert ("principal axis" in figure.axes[0].get_xlabel()) == (dim == 3)


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_vector_formats(tmp_path, data, suffix, magic):
    out = tmp_path / f"figure{suffix}"
    plots.plot_error(data[1:], data[0], out=out)
    assert out.read_bytes().startswith(magic)


def test_principal_plane_finds_the_plane_of_motion():
    generator = torch.Generator().manual_seed(0)
    flat = torch.randn(50, 2, generator=generator, dtype=torch.float64) * torch.tensor([3.0, 1.0], dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    points = torch.cat([flat, torch.zeros(50, 1, dtype=torch.float64)], 1) @ rotation.T
    basis = plots.principal_plane(points)
    assert torch.allclose(basis.T @ basis, torch.eye(2, dtype=torch.float64))
    assert torch.allclose(rotation[:, 2] @ basis, torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_library_refuses_bad_input(tmp_path, data):
    truth, coarse, _ = data
    with pytest.raises(ValueError, match=r"unsupported figure format '\.jpg'; use one of \.png, \.pdf, \.svg"):
        plots.plot_conservation([coarse], out=tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="is empty"):
        plots.plot_conservation([truth.select(slice(0, 0))])
    with pytest.raises(ValueError, match="start from different states"):
        plots.plot_error([coarse], truth.select(torch.tensor([1, 0])))
    with pytest.raises(ValueError, match="1 labels for 2 rollouts"):
        plots.plot_conservation([coarse, truth], ["one"])
    assert list(tmp_path.iterdir()) == []


# -- the command line --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["conservation", "error", "paths"])
def test_cli_plot(tmp_path, files, capsys, kind):
    out = tmp_path / f"{kind}.png"
    rollouts = [files["rk4"]] if kind == "paths" else [files["rk4"], files["leapfrog"]]
    code, stdout, _ = run_cli(["plot", kind, *rollouts, "--truth", files["truth"], "--out", out], capsys)
    assert code == 0 and str(out) in stdout
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_cli_plot_accepts_rollouts_with_identical_meta(tmp_path, files, capsys):
    # their default labels would repeat, so the CLI falls back to file names
    copy = tmp_path / "again.npz"
    copy.write_bytes(files["rk4"].read_bytes())
    out = tmp_path / "c.png"
    assert run_cli(["plot", "conservation", files["rk4"], copy, "--out", out], capsys)[0] == 0


def test_cli_plot_bad_input(tmp_path, files, data, capsys):
    text = tmp_path / "notes.npz"
    text.write_text("not a trajectory")
    empty = tmp_path / "empty.npz"
    truth = data[0]
    save_trajectories(empty, Trajectories(truth.t[:1], truth.z[:, :1], truth.params, truth.meta))
    cases = [
        (["plot", "conservation", text, "--out", tmp_path / "a.png"], "not a .npz trajectory file"),
        (["plot", "conservation", files["rk4"], "--out", tmp_path / "a.gif"], "unsupported figure format '.gif'"),
        (["plot", "conservation", empty, "--out", tmp_path / "a.png"], "is empty"),
        (["plot", "error", files["rk4"], "--out", tmp_path / "a.png"], "plot error needs --truth"),
        (["plot", "paths", files["rk4"], files["leapfrog"], "--out", tmp_path / "a.png"], "draws one rollout"),
        (["plot", "error", files["rk4"], "--truth", empty, "--out", tmp_path / "a.png"], "truth is empty"),
        (["plot", "conservation", files["rk4"], "--labels", "a", "b", "--out", tmp_path / "a.png"], "2 labels for 1"),
        (["plot", "conservation", files["rk4"], "--out", tmp_path / "missing" / "a.png"], "does not exist"),
        (["plot", "conservation", files["rk4"], "--systems", "2", "--out", tmp_path / "a.png"],
         "--systems: system 2 is out of range: " + str(files["rk4"]) + " has 2 systems, indices 0 to 1"),
        (["plot", "conservation", files["rk4"], "--truth", files["truth"], "--systems", "0", "0", "--out",
          tmp_path / "a.png"], "--systems: system 0 is chosen more than once"),
        (["plot", "error", files["rk4"], "--truth", files["truth"], "--systems", "-1", "--out", tmp_path / "a.png"],
         "--systems must be at least 0, got -1"),
        (["plot", "paths", files["rk4"], "--systems", "0", "--out", tmp_path / "a.png"], "drop --systems"),
    ]
    before = set(tmp_path.iterdir())
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 1, args
        assert err.count("\n") == 1 and err.startswith("hamnet: error:") and message in err, err
    assert set(tmp_path.iterdir()) == before  # nothing written, no temporary files left behind


# -- the population: median, band and worst system, or chosen systems ----------------------------------
@pytest.fixture(scope="module")
def population():
    """Eight systems, truth and a coarse rk4 rollout whose errors and energy changes differ by system."""
    truth = make_truth(n_systems=8)
    return truth, make_rollout(truth, "rk4", dt=0.05)


def test_summary_is_numpy_percentiles_and_the_argmax():
    values = torch.tensor([[0.0, 1.0, 2.0], [0.0, 5.0, 1.0], [0.0, 0.5, 0.5], [0.0, 2.0, 3.0]])
    summary = summarize_population(values, (25, 75))
    expected = np.percentile(values.numpy(), [25, 50, 75], axis=0)
    assert np.allclose([summary.low, summary.median, summary.high], expected)
    assert summary.worst == 1  # reaches 5, though system 3 ends higher
    assert summarize_population(torch.ones(3, 2)).worst == 0  # a tie: the first


@pytest.mark.parametrize("band_percentiles", [plots.BAND, (25.0, 75.0)])
def test_conservation_band_is_the_percentiles_of_every_system(population, band_percentiles):
    truth, coarse = population
    figure = plots.plot_conservation([coarse], ["rk4"], band=band_percentiles)
    series = conservation_series(coarse.z, truth.system().hamiltonian, coarse.params)
    for ax, key in zip(figure.axes, ("linear_momentum", "angular_momentum", "energy")):
        per_system = series[key][:, 1:].numpy()  # (B, T - 1): the figure starts at the second time
        low, median, high = np.maximum(np.percentile(per_system, [band_percentiles[0], 50, band_percentiles[1]],
                                                     axis=0), plots.ZERO_FLOOR)
        [(xs, drawn_low, drawn_high)] = band(ax)
        assert np.allclose(xs, coarse.t[1:].numpy())
        assert np.allclose(drawn_low, low, rtol=1e-12) and np.allclose(drawn_high, high, rtol=1e-12)
        [line] = curves(ax)
        assert np.allclose(line.get_ydata(), median, rtol=1e-12)
        worst = int(per_system.max(axis=1).argmax())
        [worst_line] = curves(ax, "worst")
        assert np.allclose(worst_line.get_ydata(), np.maximum(per_system[worst], plots.ZERO_FLOOR), rtol=1e-12)
        assert worst_labels(ax) == [f"worst: system {worst}"]
    # the energy of this coarse rollout changes far more in some systems than others: a real band
    assert (high > 2 * low).any()


def test_error_band_and_worst_system(population):
    truth, coarse = population
    figure = plots.plot_error([coarse], truth, ["rk4"])
    mse, relative = plots.rollout_error(coarse.z[:, 1:], truth.z[:, 1:])
    for ax, per_system in zip(figure.axes, (mse.numpy(), relative.numpy())):
        [(_, low, high)] = band(ax)
        assert np.allclose(low, np.maximum(np.percentile(per_system, 10, axis=0), plots.ZERO_FLOOR), rtol=1e-12)
        assert np.allclose(high, np.percentile(per_system, 90, axis=0), rtol=1e-12)
        assert np.allclose(curves(ax)[0].get_ydata(), np.median(per_system, axis=0), rtol=1e-12)
        assert worst_labels(ax) == [f"worst: system {int(per_system.max(axis=1).argmax())}"]
    assert "percentile band" in suptitle(figure)


@pytest.mark.parametrize("plot", ["conservation", "error"])
def test_chosen_systems_are_drawn_one_by_one(population, plot):
    truth, coarse = population
    chosen = [0, 3, 7]
    if plot == "conservation":
        figure = plots.plot_conservation([coarse], ["rk4"], systems=chosen)
        per_system = conservation_series(coarse.z, truth.system().hamiltonian, coarse.params)["energy"][:, 1:]
        ax = figure.axes[2]
    else:
        figure = plots.plot_error([coarse], truth, ["rk4"], systems=chosen)
        per_system = plots.rollout_error(coarse.z[:, 1:], truth.z[:, 1:])[1]
        ax = figure.axes[1]
    lines = curves(ax, "system")
    assert [line.get_label() for line in lines] == [f"rk4, system {i}" for i in chosen]
    for line, index in zip(lines, chosen):
        assert np.allclose(line.get_ydata(), np.maximum(per_system[index].numpy(), plots.ZERO_FLOOR), rtol=1e-12)
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 3
    for ax in figure.axes:
        assert band(ax) == [] and curves(ax) == [] and worst_labels(ax) == []
    assert suptitle(figure).endswith("(systems 0, 3, 7)")


def test_one_system_is_its_own_curve(population):
    truth, coarse = population
    one = coarse.select(slice(2, 3))
    figure = plots.plot_error([one], truth.select(slice(2, 3)))
    per_system = plots.rollout_error(one.z[:, 1:], truth.z[2:3, 1:])[1]
    assert band(figure.axes[1]) == [] and worst_labels(figure.axes[1]) == []
    assert np.allclose(curves(figure.axes[1])[0].get_ydata(), per_system[0].numpy())
    assert "one system" in suptitle(figure)


@pytest.mark.parametrize("settings, message", [
    ({"systems": [8]}, r"system 8 is out of range: rollout 1 has 8 systems, indices 0 to 7"),
    ({"systems": [-1]}, "system -1 is out of range"),
    ({"systems": [2, 2]}, "system 2 is chosen more than once"),
    ({"systems": []}, "no systems chosen"),
    ({"systems": [1.5]}, "system indices must be integers"),
    ({"systems": list(range(MAX_SYSTEMS_SHOWN + 1))}, f"at most {MAX_SYSTEMS_SHOWN} are drawn one by one"),
    ({"band": (90, 10)}, "band must be two percentiles"),
    ({"band": (0, 101)}, "band must be two percentiles"),
])
def test_bad_population_settings(tmp_path, population, settings, message):
    truth, coarse = population
    with pytest.raises(ValueError, match=message):
        plots.plot_conservation([coarse], out=tmp_path / "c.png", **settings)
    with pytest.raises(ValueError, match=message):
        plots.plot_error([coarse], truth, out=tmp_path / "e.png", **settings)
    assert list(tmp_path.iterdir()) == []


def test_cli_plot_chosen_systems(tmp_path, files, capsys):
    out = tmp_path / "chosen.png"
    code, stdout, _ = run_cli(["plot", "error", files["rk4"], "--truth", files["truth"], "--systems", "1", "0",
                               "--out", out], capsys)
    assert code == 0 and str(out) in stdout and out.read_bytes().startswith(PNG_SIGNATURE)
