"""Training: windows, exact resume, interruption, locking, divergence, checkpoint safety, distributed
equivalence."""

import errno
import hashlib
import json
import math
import os
import re
import shutil
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
from hamnet.io import load_trajectories, save_trajectories
from hamnet.models import ModelConfig, build_model
from hamnet.simulation import generate
from hamnet.loss import WindowLoss, window_mse
from hamnet.runs import RunFolderInUse
from hamnet.optimisation import NonFiniteLoss, TrainingDiverged, TrainingStep
from hamnet.training import TrainConfig, train, with_kernel_bound
from hamnet.systems import Springs

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


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def epoch_on_disk(checkpoint: Path) -> int | None:
    """The epoch of a checkpoint another process may be writing: None while there is none. Atomic
    renames make a complete file appear at once, so a read fails only if it races the rename."""
    try:
        return load_checkpoint(checkpoint)["epoch"]
    except CheckpointError:
        return None


def cli_train(data: Path, run: Path, epochs: int) -> list[str]:
    """A ``hamnet train`` command line of a tiny model; ``[3:]`` are the flags for ``main``."""
    return [sys.executable, "-m", "hamnet.cli", "train", "--data", str(data), "--out", str(run), "--width", "8",
            "--depth", "1", "--epochs", str(epochs), "--batch-size", "4", "--max-windows", "64", "--quiet",
            "--threads", "1"]


def regenerate(path: Path, seed: int, scale: float | None = None) -> Path:
    """Springs data at ``path``; with ``scale``, states rescaled so the largest |z| is exactly ``scale``."""
    data = generate(Springs(n_particles=4), n_systems=24, steps=12, dt=0.01, seed=seed)
    if scale is not None:
        data.z.copy_(data.z / data.z.abs().max() * scale)
    save_trajectories(path, data)
    return path


@pytest.fixture(scope="module")
def one_epoch_run(springs_file, tmp_path_factory):
    """A run of ``tiny_config(epochs=2)`` stopped after its first epoch (copy it before changing it)."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    train(tiny_config(epochs=2), springs_file, run, stop_after_epochs=1)
    return run


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


def test_each_epoch_draws_its_own_windows_and_a_resumed_run_draws_the_same(springs_file, tmp_path, monkeypatch):
    """``epoch_windows``: every epoch trains on that many distinct windows, drawn afresh (together more of the
    set than one epoch sees), the schedule counting those steps (its rate reaches 0 at the last); a run
    resumed after two epochs draws what the whole run drew and ends with its weights, bitwise."""
    drawn, batches = [], Windows.batches

    def recording(self, batch_size, generator=None, count=None):
        order = batches(self, batch_size, generator, count)
        if generator is not None:
            drawn.append(torch.cat(order))
        return order

    monkeypatch.setattr(Windows, "batches", recording)
    config = tiny_config(epoch_windows=24)  # of 64 training windows; batch 16: two steps an epoch
    train(config, springs_file, tmp_path / "whole")
    whole, drawn[:] = list(drawn), []
    assert len(whole) == 4 and all(d.numel() == 24 and d.unique().numel() == 24 for d in whole)
    assert torch.cat(whole).unique().numel() > 2 * 24
    state = load_checkpoint(tmp_path / "whole" / "last.pt")
    assert state["scheduler"]["last_epoch"] == 4 * 2
    lines = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["lr"] < 1e-12 * config.lr
    train(config, springs_file, tmp_path / "split", stop_after_epochs=2)
    train(config, springs_file, tmp_path / "split", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(whole, drawn, strict=True))
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "split"))


def test_compact_windows_are_the_same_windows_without_the_file(springs_file):
    data = load_trajectories(springs_file)
    windows = Windows(data, chunk=5, systems=torch.tensor([1, 3, 7]), max_windows=4, seed=2)
    compact = windows.compact()
    assert (compact.data.n_systems, compact.data.n_times, len(compact)) == (4, 5, 4)  # a system per window
    everything = torch.arange(4)
    (z, params), (their_z, their_params) = compact[everything], windows[everything]
    assert torch.equal(z, their_z) and params.keys() == their_params.keys()
    assert all(torch.equal(params[key], their_params[key]) for key in params)
    assert compact.data.meta == data.meta
    every = Windows(data, chunk=5, systems=torch.tensor([1, 3]))  # all 18 windows: 90 states, more than 26...
    kept, everything = every.compact(), torch.arange(18)
    assert kept.data.n_systems == 2 and kept.data.n_times == data.n_times  # ...so their 2 systems' trajectories
    (z, params), (their_z, their_params) = kept[everything], every[everything]
    assert torch.equal(z, their_z) and all(torch.equal(params[key], their_params[key]) for key in params)
    whole = Windows(data, chunk=5)
    assert whole.compact() is whole  # every system of the file: nothing to drop


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


@pytest.mark.parametrize("max_windows", [64, 16])
def test_the_public_training_step_is_the_one_train_takes(springs_file, tmp_path, max_windows):
    """Benchmarks time ``TrainingStep``: driven over the same batches, it ends on ``train``'s weights bit for bit
    (16 windows hold fewer states than the file, so ``train`` trains on their compact copy)."""
    config = tiny_config(epochs=2, validation=0.0, test=0.0, max_windows=max_windows)
    train(config, springs_file, tmp_path / "run")
    data = load_trajectories(springs_file)
    data.z, data.params = data.z.float(), {key: value.float() for key, value in data.params.items()}
    split = split_systems(data.n_systems, config.validation, config.test, config.seed)
    windows = Windows(data, config.chunk, split.train, config.max_windows, seed=config.seed)
    assert (windows.compact() is windows) == (max_windows == 64)
    config = with_kernel_bound(config, windows)  # what train decides from the data
    batches_per_epoch = math.ceil(len(windows) / config.batch_size)
    step = TrainingStep(config, float(data.meta["dt"]), config.epochs * batches_per_epoch)
    shuffle = torch.Generator().manual_seed(config.seed)
    elements_per_window = (config.chunk - 1) * math.prod(data.z.shape[2:])
    for _ in range(config.epochs):
        for index in windows.batches(config.batch_size, shuffle):
            step(*windows[index], scale=1 / (index.numel() * elements_per_window))
    assert same_weights(step.model.state_dict(), weights(tmp_path / "run"))


def test_a_step_whose_loss_is_not_finite_changes_nothing(springs_file):
    data = load_trajectories(springs_file)
    z, params = Windows(data, 5)[torch.arange(4)]
    step = TrainingStep(tiny_config(dtype="float64"), 0.01, 10)
    before = {name: value.clone() for name, value in step.model.state_dict().items()}
    with pytest.raises(NonFiniteLoss) as refused:
        step(z, params, scale=math.inf)
    assert refused.value.loss == math.inf and step.scheduler.last_epoch == 0
    assert same_weights(step.model.state_dict(), before) and not step.optimizer.state
    assert math.isfinite(step(z, params, scale=1.0)) and step.scheduler.last_epoch == 1


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
    command = cli_train(springs_file, run, epochs=6)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # wait for the state the test is about (a completed epoch on disk), not for a proxy of it
    while time.monotonic() < deadline and process.poll() is None and (epoch_on_disk(run / "last.pt") or 0) < 1:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= done < 6, "the run should be killed mid-way"
    assert main(command[3:] + ["--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 6
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow  # seconds of subprocesses or 10,000 steps: `make test-slow` (and CI) run it
def test_a_run_killed_as_its_folder_appears_is_accepted_by_a_new_run_and_by_resume(springs_file, tmp_path):
    run, copy = tmp_path / "run", tmp_path / "copy"
    command = cli_train(springs_file, run, epochs=1)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not run.exists():
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert run.exists() and epoch_on_disk(run / "last.pt") in (None, 0), "the kill should land before epoch 1 ends"
    shutil.copytree(run, copy)
    assert main(command[3:]) == 0  # a new run starts the unstarted one over
    assert main(cli_train(springs_file, copy, epochs=1)[3:] + ["--resume"]) == 0  # --resume starts it at epoch 0
    assert load_checkpoint(run / "last.pt")["epoch"] == load_checkpoint(copy / "last.pt")["epoch"] == 1
    assert same_weights(weights(run), weights(copy))


@pytest.fixture(scope="module")
def kill_states(springs_file, tmp_path_factory):
    """The files a kill can leave, from a real run of ``tiny_config(epochs=2)``: ``unstarted`` holds
    config.json and last.pt of epoch 0 (the run is interrupted as its first epoch begins),
    ``first_epoch`` a run stopped after epoch 1, ``straight`` the uninterrupted run."""
    root = tmp_path_factory.mktemp("kill_states")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("hamnet.training._train_epoch", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(epochs=2), springs_file, root / "unstarted")
    train(tiny_config(epochs=2), springs_file, root / "first_epoch", stop_after_epochs=1)
    train(tiny_config(epochs=2), springs_file, root / "straight")
    return root


@pytest.mark.parametrize("files, new_run_accepts", [
    ((), True),  # the folder exists, empty
    ((".lock", "config.json", ".last.pt.4194302.x1y2.tmp"), True),  # config.json written, last.pt being written
    ((".lock", "config.json", "last.pt"), True),  # the checkpoint of epoch 0
    (("config.json", "last.pt", "first_epoch/metrics.jsonl"), True),  # epoch 1's metrics line, not its checkpoints
    (("config.json", "last.pt", "first_epoch/metrics.jsonl", "first_epoch/best.pt"), False),  # best.pt, not last.pt
])
def test_every_state_a_kill_can_leave_is_accepted(springs_file, kill_states, tmp_path, files, new_run_accepts):
    state = tmp_path / "state"
    state.mkdir()
    for name in files:
        source = kill_states / (name if "/" in name else f"unstarted/{name}")
        if source.exists():
            shutil.copy(source, state / Path(name).name)
        else:  # a lock file that the lock package removed on release, or a temporary cut short by the kill
            (state / Path(name).name).write_bytes(b"PK\x03\x04 cut short")
    straight = weights(kill_states / "straight")
    shutil.copytree(state, tmp_path / "resumed")
    train(tiny_config(epochs=2), springs_file, tmp_path / "resumed", resume=True)
    assert same_weights(weights(tmp_path / "resumed"), straight)
    if new_run_accepts:
        train(tiny_config(epochs=2), springs_file, state)
        assert same_weights(weights(state), straight)
        assert [json.loads(line)["epoch"] for line in (state / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    else:  # an epoch's results are on disk: a new run would lose them
        with pytest.raises(ValueError, match="already holds files of a started run; resume it with --resume"):
            train(tiny_config(epochs=2), springs_file, state)


# -- one run per folder -----------------------------------------------------------------------------
HOLD_LOCK = ("import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
             "print('locked', flush=True); time.sleep(120)")


def test_a_second_run_on_a_folder_in_use_fails_at_once(springs_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(RunFolderInUse, match="is in use by another hamnet train process") as refused:
            train(tiny_config(epochs=1), springs_file, run)
        assert time.monotonic() - started < 5, "the second run must not wait for the lock"
        if Path("/proc/locks").exists():  # Linux tells who holds a lock
            assert f"(pid {holder.pid})" in str(refused.value)
        assert [path.name for path in run.iterdir()] == [".lock"], "the second run must write nothing"
    finally:
        holder.kill()
        holder.wait()
    train(tiny_config(epochs=1), springs_file, run)  # the kernel dropped the lock with its holder
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


# -- divergence ----------------------------------------------------------------------------------------
def test_a_huge_learning_rate_stops_training_and_keeps_the_initial_checkpoint(springs_file, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(lr=1e6, model=ModelConfig(**{**TINY_MODEL.__dict__, "name": "hogn"}))
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the training loss is (nan|inf) in epoch 1, "
                       r"batch \d+; lower --lr \(now 1e\+06\); kept .*last\.pt \(epoch 0, the initial weights: "
                       r"no epoch completed\)$"):
        train(config, springs_file, run)
    initial = build_model(config.model, torch.Generator().manual_seed(config.seed)).state_dict()
    assert same_weights(weights(run), initial) and load_checkpoint(run / "last.pt")["epoch"] == 0
    assert not (run / "best.pt").exists()
    train(tiny_config(epochs=1, model=config.model), springs_file, run)  # no epoch completed: a new run may start over
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def _nan_loss(forward):
    return lambda self, z, params: forward(self, z, params) * math.nan


def _nan_weights(step):
    def nan_step(self, *args, **kwargs):
        step(self, *args, **kwargs)
        for group in self.param_groups:
            for weight in group["params"]:
                weight.data.fill_(math.nan)
    return nan_step


@pytest.mark.parametrize("target, name, make_bad, what", [
    (WindowLoss, "forward", _nan_loss, "the training loss is nan in epoch 2, batch 1"),
    (torch.optim.Adam, "step", _nan_weights, "the weights are not finite after epoch 2"),
    ("hamnet.training", "window_mse", lambda _: lambda *a, **k: {"mse": math.inf}, "the validation MSE is inf after epoch 2"),
])
def test_non_finite_values_leave_the_last_finite_checkpoints(springs_file, tmp_path, monkeypatch, target, name,
                                                             make_bad, what):
    run = tmp_path / "run"
    config = tiny_config(epochs=3, batch_size=64)  # one batch per epoch: a bad step is the epoch's last
    train(config, springs_file, run, stop_after_epochs=1)
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl")}
    module = __import__(target, fromlist=["_"]) if isinstance(target, str) else target
    monkeypatch.setattr(module, name, make_bad(getattr(module, name)))
    with pytest.raises(TrainingDiverged, match=rf"^training diverged: {what}; lower --lr \(now 0\.01\); kept "
                       rf".*last\.pt \(epoch 1\) and best\.pt, the last finite checkpoints$"):
        train(config, springs_file, run, resume=True)
    assert {name: (run / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("scale, error, message", [
    (1e30, TrainingDiverged, r"the training loss is (nan|inf) in epoch 1, batch 1; \S+ holds values up to "
     r"1e\+30, whose squares overflow float32; train with --dtype float64 or rescale the data; kept .*last\.pt "
     r"\(epoch 0, the initial weights: no epoch completed\)$"),
    (1e300, ValueError, r"holds values up to 1e\+300, beyond float32's range; train with --dtype float64$"),
])
def test_data_beyond_the_training_dtype_is_named(tmp_path, scale, error, message):
    data = regenerate(tmp_path / "huge.npz", seed=0, scale=scale)
    with pytest.raises(error, match=message):
        train(tiny_config(epochs=1), data, tmp_path / "run")
    if error is TrainingDiverged:
        assert all(bool(value.isfinite().all()) for value in weights(tmp_path / "run").values())
    else:  # refused before anything was written
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("weight_decay", [math.inf, math.nan, -1.0])
def test_a_weight_decay_that_is_not_finite_and_non_negative_is_refused(weight_decay):
    with pytest.raises(ValueError, match=r"weight decay must be a finite non-negative number, got .* \(--weight-decay\)"):
        tiny_config(weight_decay=weight_decay)


# -- data fingerprint ----------------------------------------------------------------------------------
def test_resume_refuses_data_regenerated_at_the_same_path(tmp_path):
    data, run = regenerate(tmp_path / "springs.npz", seed=0), tmp_path / "run"
    train(tiny_config(epochs=2), data, run, stop_after_epochs=1)
    fingerprint = hashlib.sha256(data.read_bytes()).hexdigest()
    assert json.loads((run / "config.json").read_text())["data"]["sha256"] == fingerprint
    assert load_checkpoint(run / "last.pt")["data"]["sha256"] == fingerprint
    before = (run / "last.pt").read_bytes()
    regenerate(data, seed=1)  # same systems, sizes and path: only the numbers differ
    with pytest.raises(CheckpointError, match=rf"last\.pt was trained on other data: {re.escape(str(data))} changed "
                       rf"since the run started \(sha256 {fingerprint[:12]}\.\.\. then, [0-9a-f]{{12}}\.\.\. now\); "
                       "resume with the original file or start a new run with another --out"):
        train(tiny_config(epochs=2), data, run, resume=True)
    assert (run / "last.pt").read_bytes() == before


# -- checkpoints --------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed"), "PytorchStreamWriter failed writing file data/0: file write failed"),
])
def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one(one_epoch_run, springs_file, tmp_path,
                                                                             monkeypatch, failure, reason):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt")}

    def full_disk(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=rf"^cannot write {re.escape(str(run))}/(best|last)\.pt: {re.escape(reason)}$"):
        train(tiny_config(epochs=2), springs_file, run, resume=True)
    monkeypatch.undo()
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(path.name for path in run.iterdir() if path.name != ".lock") == [
        "best.pt", "config.json", "config.toml", "last.pt", "metrics.jsonl"], "no temporary file is left behind"
    train(tiny_config(epochs=2), springs_file, run, resume=True)  # once there is room, the run goes on
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("section, key, value, message", [
    ("train_config", "epochs", "ten", "train config field 'epochs' must be int, got 'ten'"),
    ("train_config", "lr", [0.1, 0.2], "train config field 'lr' must be float, got [0.1, 0.2]"),
    ("train_config", "model", {**TINY_MODEL.__dict__, "width": 8.5}, "model config field 'width' must be int, got 8.5"),
    ("model_config", "width", "eight", "model config field 'width' must be int, got 'eight'"),
])
def test_a_checkpoint_config_field_of_the_wrong_type_is_refused(one_epoch_run, springs_file, tmp_path, section, key,
                                                                value, message):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    state = load_checkpoint(run / "last.pt")
    state[section] = {**state[section], key: value}
    torch.save(state, run / "last.pt")
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(run / 'last.pt'))}: {re.escape(message)}"):
        if section == "train_config":
            train(tiny_config(epochs=2), springs_file, run, resume=True)
        else:
            model_from_checkpoint(run / "last.pt")


def test_configs_read_back_from_json_are_rebuilt():
    config = tiny_config(lr=1e-2, max_windows=None)
    values = json.loads(json.dumps(config.as_dict()))  # tuples come back as lists, and 1.0 may come back as 1
    assert TrainConfig.from_dict(values) == config
    assert TrainConfig.from_dict({**values, "weight_decay": 1}).weight_decay == 1.0
    with pytest.raises(ValueError, match="train config field 'max_windows' must be int or None, got True"):
        TrainConfig.from_dict({**values, "max_windows": True})


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
    assert state["epoch"] == 1 and model.config == ModelConfig(**{**TINY_MODEL.__dict__, "dim": 2,  # from the data
                                                                   "kernel_bound": model.config.kernel_bound})


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


ONE_RANK_JUMPS = """
import math, os, sys
import hamnet.training as training
real, calls = training.window_mse, [0]
def window_mse(*args, **kwargs):  # rank 1 alone sees epoch 2's validation MSE as infinite
    calls[0] += 1
    return {"mse": math.inf} if os.environ["RANK"] == "1" and calls[0] == 2 else real(*args, **kwargs)
training.window_mse = window_mse
from hamnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_under_torchrun_one_ranks_rollback_is_every_ranks(springs_file, tmp_path):
    """``--rollback``: the decision to undo an epoch is every rank's, even where one rank alone saw the jump."""
    script = tmp_path / "one_rank_jumps.py"
    script.write_text(ONE_RANK_JUMPS)
    out = tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), "train", "--data", str(springs_file), "--width", "8", "--depth", "1",
                           "--epochs", "3", "--batch-size", "16", "--max-windows", "64", "--quiet", "--threads", "1",
                           "--rollback", "10", "--out", str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row.get("rolled_back", False) for row in rows] == [False, True, False]
    assert load_checkpoint(out / "last.pt")["scheduler"]["base_lrs"] == [pytest.approx(0.005)]  # --lr 0.01, halved
    assert load_checkpoint(out / "best.pt")["epoch"] in (1, 3)


def test_a_run_can_start_from_another_runs_weights(springs_file, tmp_path):
    """``init_from``: the second phase starts exactly where the first ended (its epoch-0 checkpoint holds the
    first run's weights, not fresh ones of its seed), and a checkpoint of another model is refused in one
    line before the run folder exists."""
    first = tmp_path / "first"
    train(tiny_config(epochs=2), springs_file, first)
    second = tmp_path / "second"
    # a learning rate so small that Adam's steps vanish in float32: the weights are those the run started from
    train(tiny_config(epochs=1, chunk=3, seed=5, lr=1e-30, init_from=str(first / "last.pt")), springs_file, second)
    assert same_weights(weights(second), weights(first))
    fresh = tmp_path / "fresh"
    train(tiny_config(epochs=1, chunk=3, seed=5, lr=1e-30), springs_file, fresh)
    assert not same_weights(weights(fresh), weights(first))
    other = tmp_path / "other"
    wider = ModelConfig(**{**TINY_MODEL.__dict__, "width": 12})
    with pytest.raises(ValueError, match=r"--init-from .*differs from this run's in width"):
        train(tiny_config(model=wider, init_from=str(first / "last.pt")), springs_file, other)
    assert not other.exists()


def test_a_run_started_from_another_resumes_from_its_own_checkpoint(springs_file, tmp_path):
    """Resuming does not read ``init_from`` again: the first run's files may be gone by then."""
    first, second = tmp_path / "first", tmp_path / "second"
    train(tiny_config(epochs=1), springs_file, first)
    config = tiny_config(epochs=2, chunk=3, init_from=str(first / "last.pt"))
    train(config, springs_file, second, stop_after_epochs=1)
    shutil.rmtree(first)
    train(config, springs_file, second, resume=True)
    assert load_checkpoint(second / "last.pt")["epoch"] == 2


def test_a_run_bounds_its_kernel_at_twice_the_training_data_reach(springs_file, tmp_path):
    """The default ``kernel_bound_factor`` sets HLieConv's kernel bound from the training windows: for
    T(2) the kernel inputs are the pair differences ``x_v - x_u``, so the bound is twice the largest
    coordinate difference in the windows' states (computed here from the data, independently)."""
    config = tiny_config(epochs=2)
    train(config, springs_file, tmp_path / "run", stop_after_epochs=1)
    saved = ModelConfig.from_dict(load_checkpoint(tmp_path / "run" / "last.pt")["model_config"])
    data = load_trajectories(springs_file)
    split = split_systems(data.n_systems, config.validation, config.test, config.seed)
    windows = Windows(data, config.chunk, split.train, config.max_windows, seed=config.seed)
    q = windows[torch.arange(len(windows))][0][:, :, 0].double()  # (windows, chunk, N, D)
    reach = (q.unsqueeze(-2) - q.unsqueeze(-3)).abs().max().item()
    assert saved.kernel_bound == pytest.approx(2 * reach, rel=1e-3)
    # and a resumed run decides the same bound (else it would refuse its own checkpoint)
    train(config, springs_file, tmp_path / "run", resume=True)
    assert ModelConfig.from_dict(load_checkpoint(tmp_path / "run" / "last.pt")["model_config"]) == saved


def test_without_a_factor_the_kernel_stays_unbounded_and_a_given_bound_is_kept(springs_file, tmp_path):
    train(tiny_config(epochs=1, kernel_bound_factor=None), springs_file, tmp_path / "none")
    assert load_checkpoint(tmp_path / "none" / "last.pt")["model_config"]["kernel_bound"] is None
    given = ModelConfig(**{**TINY_MODEL.__dict__, "kernel_bound": 0.5})
    train(tiny_config(epochs=1, model=given), springs_file, tmp_path / "given")
    assert load_checkpoint(tmp_path / "given" / "last.pt")["model_config"]["kernel_bound"] == 0.5


def test_a_run_started_from_another_keeps_its_bound_and_old_unbounded_runs_still_resume(springs_file, tmp_path):
    first = tmp_path / "first"
    train(tiny_config(epochs=1, model=ModelConfig(**{**TINY_MODEL.__dict__, "kernel_bound": 0.5})), springs_file, first)
    second = tmp_path / "second"
    train(tiny_config(epochs=1, chunk=3, init_from=str(first / "last.pt")), springs_file, second)
    assert load_checkpoint(second / "last.pt")["model_config"]["kernel_bound"] == 0.5
    # a checkpoint written before the bound existed has no kernel_bound_factor: it was unbounded
    old = tmp_path / "old"
    train(tiny_config(epochs=2, kernel_bound_factor=None), springs_file, old, stop_after_epochs=1)
    state = load_checkpoint(old / "last.pt")
    del state["train_config"]["kernel_bound_factor"], state["model_config"]["kernel_bound"]
    del state["train_config"]["model"]["kernel_bound"]
    torch.save(state, old / "last.pt")
    assert TrainConfig.from_dict(state["train_config"]).kernel_bound_factor is None
    train(tiny_config(epochs=2, kernel_bound_factor=None), springs_file, old, resume=True)
    with pytest.raises(CheckpointError, match="it was trained with --kernel-bound none"):
        train(tiny_config(epochs=3), springs_file, old, resume=True)


@pytest.mark.parametrize("name, method", [("hlieconv", "leapfrog"), ("egnn-h", "leapfrog"), ("fc-hnn", "rk4"),
                                          ("fc-node", "rk4")])
def test_the_default_window_integrator_is_the_one_the_rollout_uses(name, method):
    """``method="auto"`` trains each model with the integrator its rollouts use (leapfrog needs a separable
    Hamiltonian), and is resolved in the config, so what is saved names the integrator; a given one is kept."""
    config = TrainConfig(model=ModelConfig(name=name, n_particles=4))
    assert config.method == method
    assert TrainConfig.from_dict(config.as_dict()) == config
    assert TrainConfig(model=ModelConfig(name=name, n_particles=4), method="euler").method == "euler"
