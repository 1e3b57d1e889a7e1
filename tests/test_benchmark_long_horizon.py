"""benchmarks/long_horizon.py without the peers' code: the ground truth continued past the protocol's last
step is the cached split's systems, the scoring of any row (held divergence, conservation, velocity error),
which hamnet checkpoint is taken and the one line when a required one is missing, a cached score of other
settings refused, and peers_adapter.py's chain (file layout and loop) driven by a stand-in peer."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hamnet.protocols import PROTOCOLS, generate_protocol

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import long_horizon as horizon  # noqa: E402  (benchmarks are scripts, not a package)
import peers_adapter as adapter  # noqa: E402
import pieces  # noqa: E402

SMOKE = horizon.SCALES["smoke"]


@pytest.fixture(scope="module")
def charged_truth(tmp_path_factory):
    """The smoke scale's charged test split (100 systems), continued 2000 steps past the start."""
    folder = tmp_path_factory.mktemp("long")
    path = horizon.truth_file(folder / "work", folder / "data", PROTOCOLS["egnn-charged5"], SMOKE)
    return path, pieces.load_split(path, PROTOCOLS["egnn-charged5"], "test")


def test_the_continued_truth_is_the_cached_split_then_goes_on(charged_truth):
    path, truth = charged_truth
    protocol = PROTOCOLS["egnn-charged5"]
    assert path.name == "egnn-charged5_test_n100_seed45_to5100.npz"
    assert truth.n_times == 5100 // 100 + 1 and truth.meta["protocol"]["horizons"][-1] == 2000
    cached = pieces.load_split(path.parents[2] / "data" / "egnn-charged5_test_n100_seed45.npz", protocol, "test")
    torch.testing.assert_close(truth.z[:, : cached.n_times], cached.z, rtol=0, atol=0)
    other = generate_protocol("egnn-charged5", "test", 100, seed=46)
    with pytest.raises(ValueError, match="does not reproduce the cached test split bit for bit"):
        horizon.check_continuation(cached, other)


def test_a_protocol_file_of_another_split_is_refused_in_one_line(tmp_path, charged_truth):
    _, truth = charged_truth
    from hamnet.io import save_trajectories

    data = tmp_path / "data"
    data.mkdir()
    truth.meta["protocol"]["split"] = "train"
    save_trajectories(data / "egnn-charged5_test_n100_seed45.npz", truth)
    truth.meta["protocol"]["split"] = "test"
    with pytest.raises(ValueError, match="holds the 'train' split of egnn-charged5, not 'test'"):
        horizon.truth_file(tmp_path / "work", data, PROTOCOLS["egnn-charged5"], SMOKE)


def test_the_truth_scores_zero_error_and_a_diverged_system_is_held_and_counted(charged_truth):
    _, truth = charged_truth
    protocol = PROTOCOLS["egnn-charged5"]
    z = truth.z[:, horizon.link_frames(protocol, SMOKE)].clone()
    exact = horizon.score(z.clone(), truth, protocol, SMOKE)
    assert exact["mse"] == {"1000": 0.0, "2000": 0.0} and exact["diverged"] == 0
    assert exact["velocity_error_first_link"] == 0.0
    assert set(exact) >= {"energy", "linear_momentum", "angular_momentum"}
    z[3, 2, 0, 1, 2] = float("nan")  # system 3 breaks at the second link
    z[5, 1, 1] *= 1e9  # system 5 leaves at the first
    scored = horizon.score(z, truth, protocol, SMOKE)
    assert scored["diverged"] == 2
    torch.testing.assert_close(z[3, 2], z[3, 1])  # held at the last healthy state
    torch.testing.assert_close(z[5, 2], z[5, 0])
    assert np.isfinite(scored["mse"]["2000"]) and scored["mse"]["2000"] > 0


def _finished_run(folder: Path, epochs: int, done: int, validation: float = 1.0) -> None:
    folder.mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"train_config": {"epochs": epochs}}))
    (folder / "metrics.jsonl").write_text((json.dumps({"validation_rollout_mse": validation}) + "\n") * done)


def test_hamnets_checkpoints_the_last_finished_phase_and_a_missing_one_named(tmp_path):
    small = horizon.SCALES["small"]
    required, steady, recipe = horizon.HAMNET[0], horizon.HAMNET[2], horizon.HAMNET[3]
    with pytest.raises(ValueError, match=r"hlieconv-se3_seed1/best.pt is missing .* run `python "
                                         r"benchmarks/nbody_peers.py --scale small --models hlieconv-se3 egnn-h`"):
        horizon.hamnet_checkpoint(tmp_path, required, small, "egnn-charged5", 1)
    assert horizon.hamnet_checkpoint(tmp_path, recipe, small, "egnn-charged5", 0) is None  # optional
    runs = tmp_path / "frame_recipe" / "runs" / "egnn-charged5_auto_seed0"
    _finished_run(runs / "auto", epochs=20, done=20)
    _finished_run(runs / "auto+long+f64", epochs=1, done=0)  # still training
    assert horizon.hamnet_checkpoint(tmp_path, recipe, small, "egnn-charged5", 0) == (runs / "auto" / "best.pt", "auto")
    (runs / "auto+long+f64" / "metrics.jsonl").write_text("{}\n")
    assert horizon.hamnet_checkpoint(tmp_path, recipe, small, "egnn-charged5", 0)[1] == "auto+long+f64"
    # the substeps4-steady recipe: of its two last phases, the lower validation rollout error, once both are done
    runs = tmp_path / "frame_recipe" / "runs" / "segno-gravity5_substeps4-steady_seed2"
    _finished_run(runs / "substeps4-steady", epochs=1, done=1)
    _finished_run(runs / "steady4+long", epochs=1, done=1, validation=0.2)
    assert horizon.hamnet_checkpoint(tmp_path, steady, small, "segno-gravity5", 2)[1] == "substeps4-steady"
    _finished_run(runs / "steady4+long+longer", epochs=1, done=1, validation=0.1)
    assert horizon.hamnet_checkpoint(tmp_path, steady, small, "segno-gravity5", 2)[1] == "steady4+long+longer"
    # the coupled model chooses across two recipes' folders, once all four phases are done
    coupled4, coupled = (next(m for m in horizon.HAMNET if m.key == key) for key in ("coupled4", "coupled"))
    runs = tmp_path / "frame_recipe" / "runs"
    for phase, error in (("coupled4", 0.3), ("coupled4+long", 0.2), ("coupled4+long+longer", 0.4)):
        _finished_run(runs / "egnn-charged5_coupled4_seed1" / phase, epochs=1, done=1, validation=error)
    assert horizon.hamnet_checkpoint(tmp_path, coupled4, small, "egnn-charged5", 1)[1] == "coupled4+long"
    assert horizon.hamnet_checkpoint(tmp_path, coupled, small, "egnn-charged5", 1) is None
    _finished_run(runs / "egnn-charged5_coupled10_seed1" / "coupled10", epochs=1, done=1, validation=0.1)
    assert horizon.hamnet_checkpoint(tmp_path, coupled, small, "egnn-charged5", 1) == (
        runs / "egnn-charged5_coupled10_seed1" / "coupled10" / "best.pt", "coupled10")


def test_a_cached_score_of_other_settings_is_refused(tmp_path):
    path = tmp_path / "score.json"
    made = horizon.cached_score(path, {"steps": 10}, lambda: {"mse": 1.0})
    assert made["mse"] == 1.0 and horizon.cached_score(path, {"steps": 10}, lambda: {"mse": 2.0})["mse"] == 1.0
    with pytest.raises(ValueError, match="holds a score of other settings .* delete it to score again"):
        horizon.cached_score(path, {"steps": 20}, lambda: {})


def test_the_chain_writes_states_in_the_layout_the_peers_were_trained_on(charged_truth):
    """A state laid out by the adapter is, at the start frame, what pieces.segno_arrays gave the peer in training."""
    _, truth = charged_truth
    protocol = PROTOCOLS["egnn-charged5"]
    trained = pieces.segno_arrays(truth, protocol)
    spec = {"interval": pieces.segno_interval(protocol, 1000), "dataset": "charged"}
    frame = protocol.start_step // protocol.frame_steps
    x, v = truth.z[:, frame, 0].numpy(), truth.z[:, frame, 1].numpy()
    arrays = adapter.state_arrays(spec, x, v, truth.params["charge"].numpy())
    start = spec["interval"][0]
    for key in ("loc", "vel"):
        np.testing.assert_array_equal(arrays[key][:, start], trained[key][:, start])
    for key in ("charges", "edges"):
        np.testing.assert_array_equal(arrays[key], trained[key])
    gravity = adapter.state_arrays({"interval": [0, 10], "dataset": "gravity"}, x, v, None)
    assert gravity["loc"].shape == (100, 11, 5, 3) and set(gravity) == {"loc", "vel"}


class _Files:
    """A stand-in peer dataset: reads the chain's files of one partition as the peers' loaders name them."""

    def __init__(self, folder: Path, suffix: str, partition: str) -> None:
        self.loc = np.load(folder / f"loc_{partition}_{suffix}.npy")[:, 0]  # (B, T, N, 3) -> the start frame
        self.vel = np.load(folder / f"vel_{partition}_{suffix}.npy")[:, 0]

    def __len__(self) -> int:
        return len(self.loc)

    def __getitem__(self, i):
        return torch.from_numpy(self.loc[i]), torch.from_numpy(self.vel[i])


def test_the_chain_hands_each_link_the_state_the_last_reached(tmp_path):
    """A stand-in peer moving every particle in a straight line for one time unit: chained with the finite
    difference it stays on the line (the difference is then the true velocity)."""
    def run(model, optimizer, loader, epoch, backprop, into):
        for loc, vel in loader:
            into.append(loc + vel)
        return 0.0

    code = adapter.PeerCode(build=lambda: nn.Linear(1, 1), dataset=lambda partition: _Files(tmp_path, "s", partition),
                            run=run)
    weights = tmp_path / "weights.pt"
    torch.save(nn.Linear(1, 1).state_dict(), weights)
    x, v = np.random.default_rng(0).normal(size=(2, 6, 5, 3))
    np.savez(tmp_path / "start.npz", x=x, v=v)
    spec = {"weights": str(weights), "start": str(tmp_path / "start.npz"), "links": 3, "velocity": "difference",
            "link_time": 1.0, "interval": [0, 1], "dataset": "gravity", "files_folder": str(tmp_path),
            "files_suffix": "s", "batch_size": 4, "layers": 1}
    states = adapter.chain("egnn", code, spec)
    assert states["x"].shape == (4, 6, 5, 3)
    for k in range(4):
        np.testing.assert_allclose(states["x"][k], x + k * v, atol=1e-12)
    np.testing.assert_allclose(states["v"][3], v, atol=1e-12)
    assert not list(tmp_path.glob("*_chain*_s.npy"))  # the chain's files are removed
    with pytest.raises(SystemExit, match="egnn: its model carries no velocity state"):
        adapter.chain("egnn", code, spec | {"velocity": "model"})


def test_the_smoke_scale_runs_end_to_end_on_hamnets_side(tmp_path, monkeypatch):
    """Without the peers' checkouts: one-epoch models where nbody_peers.py keeps its runs, the continued truth,
    their rollouts and the results files (written to a temporary folder)."""
    from hamnet.io import save_trajectories
    from hamnet.models import ModelConfig
    from hamnet.training import TrainConfig, train

    for protocol in horizon.PROTOCOL_NAMES:
        data = tmp_path / "data" / f"{protocol}_train.npz"
        data.parent.mkdir(exist_ok=True)
        save_trajectories(data, generate_protocol(protocol, "train", 4, seed=43))
        features = ("m", "charge") if protocol == "egnn-charged5" else ("m",)
        for key, extra in (("hlieconv-se3", {"name": "hlieconv", "group": "SE3"}), ("egnn-h", {"name": "egnn-h"})):
            model = ModelConfig(n_particles=5, dim=3, feature_keys=features, width=8, depth=1, **extra)
            train(TrainConfig(model=model, epochs=1, batch_size=10, chunk=2, max_windows=20, validation=0.25,
                              test=0.0, method="leapfrog"),
                  data, tmp_path / "runs" / "nbody_peers_smoke" / "runs" / f"{protocol}_{key}_seed0")
    monkeypatch.setattr(horizon, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sys, "argv", ["long_horizon.py", "--scale", "smoke", "--runs", str(tmp_path / "runs"),
                                      "--work", str(tmp_path / "work")])
    threads = torch.get_num_threads()
    try:
        horizon.main()
    finally:
        torch.set_num_threads(threads)  # main sets the benchmark's one thread
    results = json.loads((tmp_path / "results" / "long_horizon_smoke.json").read_text())
    assert set(results["table"]) == set(horizon.PROTOCOL_NAMES)
    for protocol, rows in results["table"].items():
        assert set(rows) == {"HLieConv SE(3)", "EGNN-H"}
        for row in rows.values():  # exactly invariant Hamiltonians rolled out with leapfrog in float64
            assert row["linear_momentum_max"]["mean"] < 1e-12 and row["angular_momentum_max"]["mean"] < 1e-12
        coupled = [f"HLieConv SE(3), frame recipe {name}, seed 0" for name in (
            "coupled4", "coupled10", "coupled4 or coupled10")] if protocol == "egnn-charged5" else []
        assert [line.split(" (")[0] for line in results["absent"][protocol]] == [
            "HLieConv SE(3), frame recipe substeps4-steady, seed 0", "HLieConv SE(3), frame recipe auto, seed 0",
            *coupled]  # the coupling by charge is of the charged set only
    assert "## segno-gravity5" in (tmp_path / "results" / "long_horizon_smoke.md").read_text()
    # --models rolls out only the models named; the report keeps the other scores present
    (tmp_path / "work" / "scores" / "segno-gravity5_egnn-h_seed0.json").unlink()
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--models", "hlieconv-se3"])
    try:
        horizon.main()
    finally:
        torch.set_num_threads(threads)
    again = json.loads((tmp_path / "results" / "long_horizon_smoke.json").read_text())
    assert set(again["table"]["segno-gravity5"]) == {"HLieConv SE(3)"}
    assert again["table"]["egnn-charged5"] == results["table"]["egnn-charged5"]
