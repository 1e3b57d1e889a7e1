"""Bringing other simulators' trajectories in: ``Trajectories.from_arrays``, ``hamnet.import_trajectories`` and
``hamnet import``. A foreign simulator's float32 arrays train in three commands; an extended-XYZ file written
by ASE comes back with the same numbers; bad input is one line naming every problem, and writes nothing
(the fault corpus at the end, in the style of tests/test_faults.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import hamnet
from hamnet.io import Trajectories, TrajectoryFileError, load_trajectories
from problems import run_cli, watchdog
from test_faults import assert_nothing_lost, assert_one_line, snapshot

ase_io = pytest.importorskip("ase.io")  # in the [dev] extra, so `make test` always runs these
from ase import Atoms  # noqa: E402

#: the foreign simulator's setting: systems, frames, particles, dimensions, step
B, T, N, D, DT = 6, 41, 4, 2, 0.01


def foreign_simulator(seed: int = 0) -> dict[str, np.ndarray]:
    """Someone else's code: particles joined by unit springs, velocity Verlet with 10 sub-steps in float64,
    written out in float32 as positions and velocities (B, T, N, D), masses (N,) and float32 time stamps
    from np.linspace (the spacing hamnet must recognise as 0.01)."""
    rng = np.random.default_rng(seed)
    masses = rng.uniform(1.0, 2.0, N)
    q, v = rng.normal(0.0, 0.5, (B, N, D)), rng.normal(0.0, 0.5, (B, N, D))
    v -= (masses[:, None] * v).sum(axis=1, keepdims=True) / masses.sum()

    def acceleration(x):
        return -(N * x - x.sum(axis=1, keepdims=True)) * 2 / masses[:, None]

    frames_q, frames_v, h = [q], [v], DT / 10
    for _ in range(T - 1):
        for _ in range(10):
            v = v + 0.5 * h * acceleration(q)
            q = q + h * v
            v = v + 0.5 * h * acceleration(q)
        frames_q.append(q)
        frames_v.append(v)
    return {"positions": np.stack(frames_q, axis=1).astype(np.float32),
            "velocities": np.stack(frames_v, axis=1).astype(np.float32),
            "masses": masses.astype(np.float32), "time": np.linspace(0, DT * (T - 1), T, dtype=np.float32)}


def test_a_foreign_simulators_float32_arrays_train_in_three_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arrays = foreign_simulator()
    np.savez("sim.npz", **arrays)
    code, out, err = run_cli(["import", "sim.npz", "--out", "data.npz"], capsys)
    assert code == 0, err
    assert "converted float32 -> float64, velocities x masses -> momenta, dt 0.01 inferred from t" in out
    data = load_trajectories("data.npz")
    assert data.meta["dt"] == 0.01 and torch.equal(data.t, torch.arange(T, dtype=torch.float64) * 0.01)
    q, v, m = (torch.from_numpy(arrays[key]).double() for key in ("positions", "velocities", "masses"))
    assert data.z.shape == (B, T, 2, N, D) and torch.equal(data.z[:, :, 0], q)
    assert torch.equal(data.z[:, :, 1], v * m[None, None, :, None])  # p = m v, in float64
    assert torch.equal(data.params["m"], m.expand(B, N))
    train = ("--model hlieconv --group SO2 --width 8 --depth 1 --chunk 3 --epochs 1 --batch-size 8 --max-windows 16 "
             "--validation 0.2 --test 0 --quiet").split()
    code, _, err = run_cli(["train", "--data", "data.npz", "--out", "run", *train], capsys)
    assert code == 0, err
    code, _, err = run_cli(["rollout", "--checkpoint", "run/best.pt", "--data", "data.npz", "--steps", "30",
                            "--out", "rollout.npz"], capsys)
    assert code == 0, err
    rolled = load_trajectories("rollout.npz")
    assert rolled.z.shape == (B, 31, 2, N, D) and torch.equal(rolled.z[:, 0], data.z[:, 0])
    assert torch.isfinite(rolled.z).all()


def test_from_arrays_takes_one_system_as_torch_tensors(generator):
    q = torch.randn(7, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    p = torch.randn(7, 3, 3, dtype=torch.float64, generator=generator)
    data = Trajectories.from_arrays(positions=q, momenta=p, masses=[1.0, 2.0, 3.0], dt=0.5,
                                    params={"charge": torch.tensor([1, -1, 1])})
    assert data.z.shape == (1, 7, 2, 3, 3) and data.z.dtype == torch.float64
    assert torch.equal(data.z[0, :, 0], q.detach()) and torch.equal(data.z[0, :, 1], p)
    assert torch.equal(data.params["m"], torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))
    assert list(data.params) == ["m", "charge"] and data.params["charge"].tolist() == [[1.0, -1.0, 1.0]]
    assert data.meta["converted"] == "charge int64 -> float64" and data.meta["dt"] == 0.5
    assert torch.equal(data.t, torch.arange(7, dtype=torch.float64) * 0.5)


def test_the_line_names_what_came_in_float32():
    q = np.zeros((5, 2, 2), dtype=np.float32)  # (T, N, D)
    data = Trajectories.from_arrays(positions=q, momenta=q, masses=np.ones(2), dt=0.1)
    assert data.meta["converted"] == "positions and momenta float32 -> float64"
    data = Trajectories.from_arrays(positions=q, momenta=q, masses=np.ones(2, dtype=np.float32), dt=0.1)
    assert data.meta["converted"] == "float32 -> float64"


@pytest.mark.parametrize("n_times, dt", [(10001, 0.01), (201, 0.001), (64, 0.25), (1000, 0.002), (50, 1e-5)])
def test_dt_from_float32_time_stamps_is_the_decimal_they_were_written_from(n_times, dt):
    t = np.linspace(0, dt * (n_times - 1), n_times, dtype=np.float32)
    zeros = np.zeros((n_times, 2, 2), dtype=np.float32)
    data = Trajectories.from_arrays(positions=zeros, momenta=zeros, masses=1, t=t + np.float32(3 * dt))
    assert data.meta["dt"] == dt
    converted = data.meta["converted"]
    assert f"dt {dt:g} inferred from t" in converted and "t shifted to start at 0" in converted


def test_times_uneven_beyond_float32_round_off_are_refused():
    t = np.arange(100) * 0.01
    t[40:] += 1e-5  # one step of 0.01001: a thousand times float32's round-off at t = 1
    zeros = np.zeros((100, 2, 2))
    with pytest.raises(TrajectoryFileError, match="t is not evenly spaced"):
        Trajectories.from_arrays(positions=zeros, momenta=zeros, masses=1, t=t)
    with pytest.raises(TrajectoryFileError, match=r"t is spaced by 0.01, not by dt = 0.02"):
        Trajectories.from_arrays(positions=zeros, momenta=zeros, masses=1, t=np.arange(100) * 0.01, dt=0.02)


def test_every_problem_is_named_at_once():
    q = np.zeros((2, 5, 3, 2), dtype=np.float32)
    q[1, 2, 0, 1] = np.nan
    with pytest.raises(TrajectoryFileError) as raised:
        Trajectories.from_arrays(positions=q, velocities=np.zeros((2, 5, 4, 2)), masses=np.array([1.0, -1.0, 2.0]),
                                 t=np.array([0.0, 0.1, 0.3, 0.2, 0.4]), params={"t": 1})
    message = str(raised.value)
    assert "\n" not in message and message.startswith("arrays: 5 problems: (1) ")
    for part in ("parameter name 't' is not allowed", "velocities have shape (2, 5, 4, 2) but positions (2, 5, 3, 2)",
                 "positions hold 1 NaN or infinite value (the first at index [1, 2, 0, 1])",
                 "masses must be positive (2 are not)", "t is not increasing: t[3] = 0.2 follows t[2] = 0.3"):
        assert part in message, message


# -- extended XYZ and the other formats through ASE -----------------------------------------------------------
def ase_frames(n_frames: int = 6, seed: int = 0, masses: bool = True, momenta: bool = True, time: bool = True):
    """A water molecule and a neon atom over ``n_frames`` frames, with the numbers extended XYZ prints (8
    decimals) so that the file holds them exactly."""
    rng = np.random.default_rng(seed)
    frames, mass = [], _printed(rng.uniform(1.0, 20.0, 4))
    for i in range(n_frames):
        atoms = Atoms("H2ONe", positions=_printed(rng.normal(size=(4, 3))))
        if masses:
            atoms.set_masses(mass)
        if momenta:
            atoms.set_momenta(_printed(rng.normal(size=(4, 3))))
        if time:
            atoms.info["time"] = 0.25 * i
        frames.append(atoms)
    return frames


def _printed(values: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda x: float(f"{x:.8f}"))(values)


def test_an_extended_xyz_file_written_by_ase_comes_back_with_the_same_numbers(tmp_path, capsys):
    frames = ase_frames()
    ase_io.write(tmp_path / "md.xyz", frames, format="extxyz")
    code, out, err = run_cli(["import", tmp_path / "md.xyz", "--out", tmp_path / "md.npz"], capsys)
    assert code == 0, err
    data = load_trajectories(tmp_path / "md.npz")
    assert torch.equal(data.z[0, :, 0], torch.from_numpy(np.stack([atoms.positions for atoms in frames])))
    assert torch.equal(data.z[0, :, 1], torch.from_numpy(np.stack([atoms.get_momenta() for atoms in frames])))
    assert torch.equal(data.params["m"][0], torch.from_numpy(frames[0].get_masses()))
    assert data.meta["dt"] == 0.25 and "dt 0.25 inferred from t" in out
    assert data.meta["imported_from"]["format"] == "ase" and data.meta["imported_from"]["files"][0]["sha256"]


def test_several_ase_trajectory_files_are_several_systems(tmp_path):
    paths = []
    for seed in range(2):
        frames = ase_frames(seed=seed, masses=False, time=False)
        paths.append(tmp_path / f"run{seed}.traj")
        ase_io.write(paths[-1], frames)
    data = hamnet.import_trajectories(paths, dt=0.5, element_masses=True)
    again = [ase_io.read(path, index=":") for path in paths]
    assert data.z.shape == (2, 6, 2, 4, 3)
    for system, frames in enumerate(again):
        assert torch.equal(data.z[system, :, 1], torch.from_numpy(np.stack([atoms.get_momenta() for atoms in frames])))
    assert torch.allclose(data.params["m"][0], torch.tensor([1.008, 1.008, 15.999, 20.180], dtype=torch.float64),
                          atol=1e-3)
    assert "masses of the elements from ASE's table" in data.meta["converted"]


def test_an_xyz_file_of_velocities_gives_momenta(tmp_path):
    """Codes that write velocities (the extended-XYZ column vel) and masses: p = m v, per atom."""
    frame = ("2\nProperties=species:S:1:pos:R:3:vel:R:3:masses:R:1 time={time}\n"
             "H {x} 0 0 1.5 0 0 1.0\nHe 1 0 0 -1 2 0 4.0\n")
    (tmp_path / "vel.xyz").write_text("".join(frame.format(time=0.5 * i, x=0.1 * i) for i in range(3)))
    data = hamnet.import_trajectories(tmp_path / "vel.xyz")
    momenta = torch.tensor([[1.5, 0.0, 0.0], [-4.0, 8.0, 0.0]], dtype=torch.float64)
    assert torch.equal(data.z[0, :, 1], momenta.expand(3, 2, 3)) and data.meta["dt"] == 0.5
    assert data.meta["converted"] == "velocities x masses -> momenta, dt 0.5 inferred from t"


def test_velocities_and_masses_given_by_name_and_flag(tmp_path, capsys):
    arrays = foreign_simulator()
    np.savez(tmp_path / "odd.npz", pos=arrays["positions"][0], vel=arrays["velocities"][0], other=np.ones(3))
    code, out, err = run_cli(["import", tmp_path / "odd.npz", "--positions", "pos", "--velocities", "vel",
                              "--masses", "2", "--dt", "0.01", "--out", tmp_path / "x.npz"], capsys)
    assert code == 0, err
    data = load_trajectories(tmp_path / "x.npz")
    assert torch.equal(data.z[0, :, 1], 2 * torch.from_numpy(arrays["velocities"][0]).double())
    assert "ignored arrays 'other'" in out and data.meta["dt"] == 0.01


def test_an_npz_of_float32_with_its_own_dt_keeps_the_decimal(tmp_path):
    arrays = foreign_simulator()
    np.savez(tmp_path / "a.npz", q=arrays["positions"], p=arrays["velocities"], m=arrays["masses"],
             dt=np.float32(DT))
    data = hamnet.import_trajectories(tmp_path / "a.npz")
    assert data.meta["dt"] == 0.01 and data.meta["converted"] == "float32 -> float64"
    assert torch.equal(data.z[:, :, 1], torch.from_numpy(arrays["velocities"]).double())  # momenta as they are


def test_a_file_dt_that_is_no_number_is_set_aside_when_t_gives_the_step(tmp_path):
    np.savez(tmp_path / "a.npz", **foreign_simulator(), dt=np.full(41, DT))
    assert hamnet.import_trajectories(tmp_path / "a.npz").meta["dt"] == 0.01


def test_dt_given_overrides_a_file_dt_that_contradicts_t(tmp_path):
    np.savez(tmp_path / "a.npz", **foreign_simulator(), dt=np.float64(DT / 10))
    assert hamnet.import_trajectories(tmp_path / "a.npz", dt=0.01).meta["dt"] == 0.01


def test_an_npz_with_t_and_a_dt_that_agree_imports(tmp_path):
    np.savez(tmp_path / "a.npz", **foreign_simulator(), dt=np.float32(DT))
    data = hamnet.import_trajectories(tmp_path / "a.npz")
    # the file's dt is used (and checked against t), not set aside while dt is inferred from t
    assert data.meta["dt"] == 0.01 and data.meta["converted"] == "float32 -> float64, velocities x masses -> momenta"


# -- the fault corpus: one line naming every problem, exit 1, nothing written ---------------------------------
def _npz(name: str, **changes):
    """Builder: the foreign simulator's .npz as NAME, each array of ``changes`` changed by its function (or
    left out, for None)."""
    def build(tmp: Path) -> None:
        arrays = foreign_simulator()
        for key, change in changes.items():
            arrays[key] = None if change is None else change(arrays[key])
        np.savez(tmp / name, **{key: value for key, value in arrays.items() if value is not None})
    return build


def _with_nan(q):
    q = q.copy()
    q[2, 5, 1, 0] = np.nan
    return q


def _xyz(name: str, text: str | None = None, **settings):
    """Builder: an extended XYZ file written by ASE (``ase_frames(**settings)``), or ``text`` as it is."""
    def build(tmp: Path) -> None:
        if text is not None:
            (tmp / name).write_text(text)
        else:
            ase_io.write(tmp / name, ase_frames(**settings), format="extxyz")
    return build


def _hamnet_file(tmp: Path) -> None:
    np.savez(tmp / "sim.npz", **foreign_simulator())
    hamnet.save_trajectories(tmp / "mine.npz", hamnet.import_trajectories(tmp / "sim.npz"))


@dataclass(frozen=True)
class Case:
    """One bad input: the builder of the case folder, the arguments after ``import``, what stderr must say."""

    name: str
    build: object
    argv: str
    mentions: tuple[str, ...]


CASES = [
    Case("shapes-mismatched", _npz("a.npz", velocities=lambda v: v[:, :, :3]), "a.npz",
         ("velocities have shape (6, 41, 3, 2) but positions (6, 41, 4, 2)",)),
    Case("nan", _npz("a.npz", positions=_with_nan), "a.npz", ("positions hold 1 NaN", "[2, 5, 1, 0]")),
    Case("t-unsorted", _npz("a.npz", time=lambda t: t[::-1].copy()), "a.npz", ("t is not increasing",)),
    Case("t-uneven", _npz("a.npz", time=lambda t: t ** 1.5), "a.npz", ("t is not evenly spaced",)),
    Case("every-problem-at-once", _npz("a.npz", velocities=lambda v: v[:, :, :3], positions=_with_nan,
                                       time=lambda t: t[::-1].copy(), masses=lambda m: -m),
         "a.npz", ("4 problems", "(1) velocities have shape", "(2) positions hold 1 NaN", "(3) masses must be positive",
                   "(4) t is not increasing")),
    Case("names-not-found", _npz("a.npz", positions=None, masses=None), "a.npz --t stamps",
         ("3 problems", "no positions: none of the file's arrays", "--positions KEY", "no masses",
          "no array 'stamps'")),
    Case("npy-positions-alone", lambda tmp: np.save(tmp / "q.npy", foreign_simulator()["positions"]), "q.npy",
         ("3 problems", "--momenta FILE.npy", "--masses", "--dt")),
    Case("xyz-not-a-trajectory", _xyz("a.xyz", text="this is not\nan xyz file\n"), "a.xyz",
         ("not a trajectory ASE can read",)),
    Case("xyz-one-frame", _xyz("a.xyz", n_frames=1), "a.xyz", ("1 frame, a structure, not a trajectory",)),
    Case("xyz-without-masses", _xyz("a.xyz", masses=False), "a.xyz",
         ("no masses: the file stores none", "--element-masses")),
    Case("xyz-without-masses-momenta-or-times", _xyz("a.xyz", masses=False, momenta=False, time=False), "a.xyz",
         ("3 problems", "no momenta or velocities", "no masses", "no t or dt")),
    Case("xyz-with-npz-flags", _xyz("a.xyz"), "a.xyz --positions q", ("--positions names an array of a .npz",)),
    Case("npz-with-ase-flags", _npz("a.npz"), "a.npz --element-masses", ("--element-masses applies to files read",)),
    Case("out-is-the-input", _npz("a.npz"), "a.npz --out a.npz", ("is the input",)),
    Case("already-a-hamnet-file", _hamnet_file, "mine.npz", ("a hamnet trajectory file already",)),
    Case("param-given-twice", _npz("a.npz"), "a.npz --param k --param k", ("give each parameter once",)),
    Case("t-and-dt-disagree", lambda tmp: np.savez(tmp / "a.npz", **foreign_simulator(), dt=np.float64(DT / 10)),
         "a.npz", ("the file's dt 0.001 does not match its t (spaced by 0.01): give --dt 0.01",)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case: Case, tmp_path, capsys, monkeypatch):
    case.build(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HAMNET_DEBUG", raising=False)
    argv = ["import", *case.argv.split()]
    if "--out" not in argv:
        argv += ["--out", "out.npz"]
    before = snapshot(tmp_path)
    with watchdog(20):
        code, out, err = run_cli(argv, capsys)
    assert code == 1 and "Traceback" not in err
    assert_one_line(err)
    for text in case.mentions:
        assert text in err, err
    assert_nothing_lost(before, snapshot(tmp_path), ())


def test_an_existing_output_is_replaced_whole_as_by_generate(tmp_path, capsys):
    """hamnet's convention for --out (hamnet generate's): an existing file is replaced atomically, never an input."""
    np.savez(tmp_path / "sim.npz", **foreign_simulator())
    (tmp_path / "out.npz").write_text("an older file")
    code, _, err = run_cli(["import", tmp_path / "sim.npz", "--out", tmp_path / "out.npz"], capsys)
    assert code == 0, err
    assert load_trajectories(tmp_path / "out.npz").n_systems == B
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.npz", "sim.npz"]
    with np.load(tmp_path / "out.npz") as archive:
        assert json.loads(str(archive["meta"]))["imported_from"]["files"][0]["path"] == str(tmp_path / "sim.npz")
