"""Leaving the training region: what training records, where a rollout leaves it, who reports it."""

import json
import math

import pytest
import torch

from hamnet.checkpoint import load_checkpoint
from hamnet.data import split_systems
from hamnet.cli import main
from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.models import ModelConfig
from hamnet.region import REGION_MARGIN, check_region, data_region, region_exits
from hamnet.simulation import generate
from hamnet.systems import HamiltonianSystem
from hamnet.training import TrainConfig, train


class SoftCoreCluster(HamiltonianSystem):
    """A Lennard-Jones cluster with a soft core: ``V = sum_{i<j} 4 (s^6 - s^3)``, ``s = 1 / (r^2 + 0.1)``
    (unit depth and size), particles started near a jittered grid at the potential's minimum."""

    name = "soft-core-cluster"
    feature_keys = ("m",)
    symmetry = "SE2"
    default_n_particles = 4

    def sample_params(self, n_systems, generator):
        return {"m": torch.ones(n_systems, self.n_particles, dtype=torch.float64)}

    def sample_state(self, params, generator):
        b, n = params["m"].shape
        side = math.ceil(math.sqrt(n))
        grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
        q = grid[:n].double() * 1.1 + 0.05 * torch.randn(b, n, 2, generator=generator, dtype=torch.float64)
        p = 0.3 * torch.randn(b, n, 2, generator=generator, dtype=torch.float64)
        return torch.stack([q, p - p.mean(1, keepdim=True)], dim=1)

    def potential(self, q, params):
        i, j = torch.triu_indices(q.shape[1], q.shape[1], offset=1)
        s = 1 / ((q[:, i] - q[:, j]).square().sum(-1) + 0.1)
        return (4 * (s**6 - s**3)).sum(-1)


def naive_exits(z: torch.Tensor, region: dict) -> list[int]:
    """The first step outside ``region`` of each system of ``z: (B, T, 2, N, D)``, by a plain loop."""
    low, high = region["pair_distance"]
    exits = []
    for system in z:
        step = -1
        for t, state in enumerate(system):
            distances = torch.cdist(state[0], state[0])[~torch.eye(state.shape[1], dtype=torch.bool)]
            if (distances.min() < low / REGION_MARGIN or distances.max() > high * REGION_MARGIN
                    or state[1].norm(dim=-1).max() > region["momentum"] * REGION_MARGIN):
                step = t
                break
        exits.append(step)
    return exits


def test_the_region_is_the_extremes_of_the_training_states():
    z = torch.zeros(2, 3, 2, 3, 2, dtype=torch.float64)  # (B, T, 2, N, D)
    z[..., 0, 1, 0], z[..., 0, 2, 1] = 1.0, 2.0  # pairs 1, 2 and sqrt(5) apart
    z[1, 2, 0, 2, 1] = 4.0  # one state with pairs 1, 4 and sqrt(17)
    z[0, 1, 1, 0, 0] = -3.0  # one particle with momentum 3
    region = data_region(z)
    assert region["pair_distance"] == pytest.approx([1.0, math.sqrt(17)]) and region["momentum"] == 3.0
    assert check_region(region) == region and check_region({"momentum": 1}) is None


def test_the_region_of_some_systems_is_that_of_their_copy(monkeypatch):
    z = torch.randn(7, 5, 2, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    systems = torch.tensor([5, 0, 3, 6])
    monkeypatch.setattr("hamnet.region._BLOCK_PAIRS", 2 * 5 * 9)  # two systems' states a block: several blocks
    region = data_region(z, systems)
    assert region == data_region(z[systems]) and region != data_region(z)


def test_a_system_leaves_when_it_passes_the_extremes_by_the_margin():
    # two particles separating at unit speed from distance 1: a training region of distances [1, 2]
    region = {"pair_distance": [1.0, 2.0], "momentum": 10.0, "margin": REGION_MARGIN}
    t = torch.arange(40, dtype=torch.float64) * 0.1
    z = torch.zeros(3, 40, 2, 2, 2, dtype=torch.float64)
    z[:, :, 0, 1, 0] = 1 + t
    z[1, :, 0, 1, 0] = 1 - 0.02 * t  # slowly closer: 1 / 1.25 = 0.8 is passed after t = 10 (beyond the end)
    z[2, 25:, 1, 0, 1] = 12.6  # a kick past 10 * 1.25 at step 25, while still 3.5 apart
    first, reasons = region_exits(z, region)
    # 1 + t > 2.5 first at t = 1.6 (step 16)
    assert first.tolist() == [16, -1, 16] and reasons[1] == ""
    assert "apart (training: at most 2)" in reasons[0]
    z[2, :, 0, 1, 0] = 1.5  # now the kick is the first thing outside
    first, reasons = region_exits(z, region)
    assert first[2] == 25 and reasons[2].startswith("a momentum of 12.6")


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """A soft-core cluster, a model trained briefly on it, and a hotter test set that evaporates."""
    folder = tmp_path_factory.mktemp("cluster")
    system = SoftCoreCluster(n_particles=4)
    save_trajectories(folder / "train.npz", generate(system, n_systems=16, steps=20, dt=0.01, seed=0, substeps=4))
    hot = generate(system, n_systems=6, steps=60, dt=0.01, seed=1, substeps=4)
    hot = Trajectories(hot.t, torch.cat([hot.z[:, :, :1], 2.5 * hot.z[:, :, 1:]], dim=2), hot.params, hot.meta)
    save_trajectories(folder / "hot.npz", hot)  # not this system's motion any more: only initial states are used
    config = TrainConfig(model=ModelConfig(name="hlieconv", group="SE2", n_particles=4, width=8, depth=1,
                                           kernel_width=8, kernel_channels=4, feature_keys=("m",)), epochs=1, batch_size=16,
                         max_windows=32, validation_windows=8)
    train(config, folder / "train.npz", folder / "run")
    return folder


def test_training_records_its_region(cluster_run):
    recorded = load_checkpoint(cluster_run / "run" / "best.pt")["data"]["region"]
    assert recorded == json.loads((cluster_run / "run" / "config.json").read_text())["data"]["region"]
    data = load_trajectories(cluster_run / "train.npz")
    training = split_systems(data.n_systems, 0.1, 0.1, 0).train  # TrainConfig's default split
    assert recorded == data_region(data.z[training])  # in float64, from the training systems alone


def test_rollout_evaluate_and_plot_report_the_systems_that_left(cluster_run, capsys):
    from hamnet.plots import plot_error

    folder = cluster_run
    assert main(["rollout", "--checkpoint", str(folder / "run" / "best.pt"), "--data", str(folder / "hot.npz"),
                 "--out", str(folder / "roll.npz"), "--keep-diverged", "--threads", "1"]) == 0
    warning = capsys.readouterr().err
    rolled = load_trajectories(folder / "roll.npz")
    region = load_checkpoint(folder / "run" / "best.pt")["data"]["region"]
    expected = naive_exits(rolled.z, region)
    assert [e for e in expected if e >= 0], "the hot cluster must leave the region"
    recorded = {entry["system"]: entry["step"] for entry in rolled.meta["left_region"]}
    assert recorded == {b: step for b, step in enumerate(expected) if step >= 0}
    first = rolled.meta["left_region"][0]
    assert f"{len(recorded)} of 6 systems left the model's training region" in warning
    assert f"system {first['system']}, at step {first['step']}" in warning
    assert main(["evaluate", "--rollout", str(folder / "roll.npz"), "--data", str(folder / "hot.npz"),
                 "--out", str(folder / "m.json"), "--allow-rollout", "--threads", "1"]) in (0,)
    left = json.loads((folder / "m.json").read_text())["left_region"]
    assert dict(zip(left["systems"], left["steps"])) == recorded and left["count"] == len(recorded)
    figure = plot_error([rolled], load_trajectories(folder / "hot.npz"), ["model"])
    marks = [line for line in figure.axes[0].get_lines() if "left the training region" in str(line.get_label())]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(float(rolled.t[first["step"]]))
    # with --systems, only the systems drawn count: the line moves to the first exit among them
    latest = sorted(recorded, key=recorded.get)[-2:]  # the two systems that left last
    assert recorded[latest[0]] > first["step"]
    for chosen in (latest[1:], latest):
        figure = plot_error([rolled], load_trajectories(folder / "hot.npz"), ["model"], systems=chosen)
        marks = [str(line.get_label()) for line in figure.axes[0].get_lines() if "left the training" in str(line.get_label())]
        step = min(recorded[b] for b in chosen)
        assert marks == [f"model: {len(chosen)} of {len(chosen)} drawn left the training region (first at t = "
                         f"{float(rolled.t[step]):.3g})"]


def test_a_checkpoint_without_a_region_reports_nothing_and_says_so(cluster_run):
    from hamnet.evaluation import score_rollout
    from hamnet.rollouts import Rollout

    data = load_trajectories(cluster_run / "hot.npz")
    scores = score_rollout(Rollout(data.z, torch.full((6,), -1)), data, region=None)
    assert "left_region" not in scores and any("no training region" in note for note in scores["notes"])


def test_a_truth_with_systems_left_out_keeps_the_files_numbering(cluster_run):
    """``evaluate --rollout`` against a truth that is itself a rollout file, whose system 0 diverged and is
    left out: the systems it lists are numbered as in the files, not by their place among those kept."""
    folder = cluster_run
    assert main(["rollout", "--checkpoint", str(folder / "run" / "best.pt"), "--data", str(folder / "hot.npz"),
                 "--out", str(folder / "roll-again.npz"), "--keep-diverged", "--threads", "1"]) == 0
    rolled = load_trajectories(folder / "roll-again.npz")
    hot = load_trajectories(folder / "hot.npz")
    truth = Trajectories(hot.t, hot.z.clone(), hot.params, {**hot.meta, "model": "elsewhere", "checkpoint": "x.pt",
                                                            "method": "leapfrog", "diverged": [{"system": 0, "step": 3}]})
    truth.z[0, 3:] = truth.z[0, 2]
    save_trajectories(folder / "truth-rolled.npz", truth)
    assert main(["evaluate", "--rollout", str(folder / "roll-again.npz"), "--data", str(folder / "truth-rolled.npz"),
                 "--out", str(folder / "kept.json"), "--allow-rollout", "--threads", "1"]) == 0
    left = json.loads((folder / "kept.json").read_text())["left_region"]
    expected = {entry["system"]: entry["step"] for entry in rolled.meta["left_region"] if entry["system"] != 0}
    assert expected and dict(zip(left["systems"], left["steps"])) == expected and 0 not in left["systems"]
