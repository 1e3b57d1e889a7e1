"""TensorBoard: event files that TensorBoard's own reader loads, holding every epoch's metrics, written
without changing what the run computes or what a resume compares."""

import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hamnet.checkpoint import load_checkpoint
from hamnet.io import save_trajectories
from hamnet.models import ModelConfig
from hamnet.monitor import EVENT_FILE_PREFIX
from hamnet.simulation import generate
from hamnet.systems import Springs
from hamnet.training import TrainConfig, train

from problems import run_cli

MODEL = ModelConfig(name="hlieconv", group="SO2", width=8, depth=1, kernel_width=8, kernel_channels=4)
CONFIG = TrainConfig(model=MODEL, epochs=3, batch_size=8, max_windows=24, validation_windows=8)
#: what every epoch logs, as metrics.jsonl names it
SCALARS = {"train_loss", "validation_mse", "lr", "seconds", "windows_per_second"}


@pytest.fixture(scope="module")
def springs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("board") / "springs.npz"
    save_trajectories(path, generate(Springs(n_particles=4), n_systems=12, steps=8, dt=0.01, seed=0))
    return path


def board(run) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run folder's event files, read by TensorBoard's own reader: tag -> (step, value)."""
    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_event_files_hold_every_epoch_metric(springs_file, tmp_path):
    train(CONFIG, springs_file, tmp_path / "run", tensorboard=True)
    scalars, lines = board(tmp_path / "run"), metrics(tmp_path / "run")
    assert set(scalars) == SCALARS and len(list((tmp_path / "run").glob(EVENT_FILE_PREFIX + "*"))) == 1
    for tag in SCALARS:  # TensorBoard keeps a scalar in float32
        assert scalars[tag] == [(line["epoch"], float(np.float32(line[tag]))) for line in lines]


def test_tensorboard_changes_nothing_the_run_computes(springs_file, tmp_path):
    train(CONFIG, springs_file, tmp_path / "plain")
    train(CONFIG, springs_file, tmp_path / "watched", tensorboard=True, stop_after_epochs=1)
    train(CONFIG, springs_file, tmp_path / "watched", resume=True)  # without it: the same run, resumed
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("plain", "watched"))
    assert all(torch.equal(a[name], b[name]) for name in a)
    kept = ("epoch", "train_loss", "validation_mse", "lr")
    assert [[line[k] for k in kept] for line in metrics(tmp_path / "plain")] == \
           [[line[k] for k in kept] for line in metrics(tmp_path / "watched")]


def test_a_resumed_run_logs_each_epoch_once(springs_file, tmp_path):
    run = tmp_path / "run"
    train(CONFIG, springs_file, run, tensorboard=True, stop_after_epochs=2)
    train(CONFIG, springs_file, run, tensorboard=True, resume=True)
    assert [step for step, _ in board(run)["train_loss"]] == [1, 2, 3]
    assert board(run)["train_loss"][-1][1] == float(np.float32(metrics(run)[-1]["train_loss"]))


def test_the_command_line_writes_them_and_records_the_choice(springs_file, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", springs_file, "--out", run, "--width", "8", "--depth", "1", "--epochs",
                            "1", "--batch-size", "8", "--max-windows", "16", "--tensorboard", "--quiet"], capsys)
    assert code == 0, err
    assert set(board(run)) == SCALARS and "tensorboard = true" in (run / "config.toml").read_text()


def test_without_the_package_the_run_is_refused_before_anything_is_written(springs_file, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "tensorboard"
                        else find_spec(name, *args))
    with pytest.raises(ValueError, match=r"pip install 'hamnet\[tensorboard\]'"):
        train(CONFIG, springs_file, tmp_path / "run", tensorboard=True)
    assert not (tmp_path / "run").exists()
