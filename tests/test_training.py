"""Training: windows, exact resume, interruption, checkpoint safety, distributed equivalence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hamnet.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from hamnet.cli import main
from hamnet.data import Windows, split_systems
from hamnet.io import save_trajectories
from hamnet.models import ModelConfig, build_model
from hamnet.simulation import generate
from hamnet.loss import window_mse
from hamnet.training import TrainConfig, train
from systems import Springs

TINY_MODEL = ModelConfig(name="hlieconv", group="T2", width=8, depth=1, kernel_width=8, kernel_channels=4,
                         n_particles=4, feature_keys=("m", "k"))


@pytest.fixture(scope="module")
def springs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "springs.npz"
    save_trajectories(path, generate(Springs(n_particles=4), n_systems=24, steps=12, dt=0.01, seed=0))
    return path


def tiny_config(**changes):
    settings = dict(model=TINY_MODEL, epochs=4, batch_size=16, max_windows=64, validation_windows=16)
    return TrainConfig(**{**settings, **changes})


def weights(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["model"]


# -- data ---------------------------------------------------------------------------------------------
def test_every_window_is_used_and_matches_the_trajectory(springs_file):
    from hamnet.io import load_trajectories

    data = load_trajectories(springs_file)
    windows = Windows(data, chunk=5, systems=torch.tensor([3, 7]))
    assert len(windows) == 2 * (13 - 5 + 1)
    z, params = windows[torch.tensor([0, 9, 17])]
    assert torch.equal(z[0], data.z[3, 0:5]) and torch.equal(z[1], data.z[7, 0:5]) and torch.equal(z[2], data.z[7, 8:13])
    assert torch.equal(params["m"][1], data.params["m"][7])
    seen = torch.cat(list(windows.batches(5, torch.Generator().manual_seed(0))))
    assert torch.equal(seen.sort().values, torch.arange(len(windows)))


def test_splits_are_disjoint_seeded_and_by_system():
    split = split_systems(50, 0.2, 0.1, seed=3)
    everything = torch.cat([split.train, split.validation, split.test])
    assert torch.equal(everything.sort().values, torch.arange(50))
    assert (len(split.validation), len(split.test)) == (10, 5)
    assert torch.equal(split_systems(50, 0.2, 0.1, seed=3).test, split.test)
    assert not torch.equal(split_systems(50, 0.2, 0.1, seed=4).test, split.test)
    with pytest.raises(ValueError, match="leave none for training"):
        split_systems(2, 0.5, 0.5, seed=0)


def test_window_mse_conventions_and_truth(springs_file):
    from hamnet.io import load_trajectories

    data = load_trajectories(springs_file)
    windows = Windows(data, chunk=5)
    truth = window_mse(Springs(n_particles=4), windows, 0.01, dtype=torch.float64)
    assert truth["mse"] < 1e-9  # rk4 at dt on the true H nearly reproduces the ground truth
    assert truth["mse_with_initial"] == pytest.approx(truth["mse"] * 4 / 5)


# -- training -----------------------------------------------------------------------------------------
def test_training_lowers_the_window_error(springs_file, tmp_path):
    config = tiny_config(epochs=5, lr=1e-2, max_windows=None, batch_size=16,
                         model=ModelConfig(**{**TINY_MODEL.__dict__, "width": 32, "depth": 2, "kernel_width": 16}))
    train(config, springs_file, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert lines[-1]["train_loss"] < 0.25 * lines[0]["train_loss"]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["best_validation"] == min(line["validation_mse"] for line in lines)


def test_resume_is_bitwise_exact(springs_file, tmp_path):
    config = tiny_config()
    train(config, springs_file, tmp_path / "straight")
    train(config, springs_file, tmp_path / "split", stop_after_epochs=2)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 2
    train(config, springs_file, tmp_path / "split", resume=True)
    straight, split = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(straight[name], split[name]) for name in straight)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_resume_refuses_changed_settings(springs_file, tmp_path):
    train(tiny_config(epochs=1), springs_file, tmp_path / "run")
    with pytest.raises(CheckpointError, match="different settings \\(model\\)"):
        train(tiny_config(epochs=1, model=ModelConfig(**{**TINY_MODEL.__dict__, "group": "SO2"})),
              springs_file, tmp_path / "run", resume=True)


def test_sigkill_mid_run_then_resume_completes(springs_file, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "hamnet.cli", "train", "--data", str(springs_file), "--out", str(run),
               "--width", "8", "--depth", "1", "--epochs", "6", "--batch-size", "4", "--max-windows", "64",
               "--quiet", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= done < 6, "the run should be killed mid-way"
    assert main(command[3:] + ["--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 6
    assert len(metrics.read_text().splitlines()) == 6


# -- checkpoints --------------------------------------------------------------------------------------
def test_truncated_and_foreign_checkpoints_are_refused(springs_file, tmp_path):
    train(tiny_config(epochs=1), springs_file, tmp_path / "run")
    good = (tmp_path / "run" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated|not a torch checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a hamnet checkpoint"):
        load_checkpoint(foreign)
    model, state = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 1 and model.config == TINY_MODEL


class _RunsCode:
    """Unpickling this would create a file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_whose_pickle_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hamnet-checkpoint", "payload": _RunsCode(str(marker))}, evil, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="arbitrary Python objects"):
        load_checkpoint(evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the control: without the refusal, loading runs the code
    assert marker.exists()


# -- distributed ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_gloo_matches_one_process(springs_file, tmp_path):
    flags = ["train", "--data", str(springs_file), "--width", "8", "--depth", "1", "--epochs", "2",
             "--batch-size", "16", "--max-windows", "64", "--quiet", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "hamnet.cli", *flags, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "hamnet.cli", *flags, "--out", str(tmp_path / "two")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-2000:]
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
    initial = build_model(ModelConfig.from_dict(load_checkpoint(tmp_path / "one" / "last.pt")["model_config"]),
                          torch.Generator().manual_seed(0)).state_dict()
    moved = max((one[name] - initial[name]).abs().max().item() for name in one)
    assert moved > 1e-4, "training must have changed the weights for the comparison to mean anything"
