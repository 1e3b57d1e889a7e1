"""Training a model on windows of trajectories: resumable, reproducible, optionally distributed.

Note to the reader: a batch holds windows ``z: (b, chunk, 2, N, D)`` (see :mod:`hamnet.data`);
the loss is :class:`hamnet.loss.WindowLoss`, the squared error of the model integrated over each
window against the window's other ``chunk - 1`` states.

Optimiser: Adam with a cosine learning-rate decay over all steps of all epochs. The run folder
(``config.json``, ``config.toml``, ``metrics.jsonl``, ``last.pt``, ``best.pt``, ``.lock``) and its rules,
locking, resuming and fingerprinting, are :mod:`hamnet.runs`'s; what a run shows while it trains
(progress, TensorBoard) is :mod:`hamnet.monitor`'s, and changes nothing it computes. ``last.pt`` is
written at epoch 0, before training, then every epoch; ``best.pt`` holds the lowest validation loss.
Resuming restores model, optimiser, scheduler, epoch and random states, so an interrupted run ends
with bitwise the same weights as an uninterrupted one (on CPU). A loss or weights that stop being
finite end the run at once (:class:`TrainingDiverged`) with ``last.pt`` and ``best.pt`` as the last
finite epoch left them: no checkpoint ever holds non-finite weights. With ``TrainConfig.rollback`` such
an epoch, or one whose validation MSE jumps, is undone instead (:meth:`TrainingStep.roll_back`).

Distributed: under ``torchrun --nproc_per_node=K`` each process takes a contiguous K-th of every
global batch and the loss is scaled so the averaged gradient is that of the global batch; how the
processes agree is :mod:`hamnet.distributed`. :class:`TrainingStep` is the step taken on each batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import (checkpoint_provenance, load_checkpoint, locate_checkpoint,
                         model_from_checkpoint, save_checkpoint)
from .data import DEFAULT_CHUNK, Windows, split_systems
from .distributed import (Context, close_distributed, distributed_context, finite_everywhere, on_any_rank,
                          on_main)
from .integrate import INTEGRATORS, get_integrator
from .io import Trajectories, load_trajectories
from .loss import check_weight_floor, to_device, window_mse
from .config import check_field_types, config_from_dict
from .models import MODELS, ModelConfig, build_model, check_compatible
from .monitor import Monitor, MonitorSettings, check_tensorboard
from .optimisation import (COMPILE_CHOICES, DTYPES, NonFiniteLoss, RunState, TrainingDiverged,
                           checked_step, diverged_error, finite_weights)
from .run_settings import DEFAULT_KERNEL_BOUND_FACTOR, with_kernel_bound, with_substeps
from .provenance import data_kind, file_sha256, ground_truth, rollout_model
from .region import data_region
from .rollouts import default_method
from .runs import (RunFiles, append_metrics, claim, locked,
                   make_run_folder, truncate_metrics, write_json, write_text)
from .settings_file import RunSettings, settings_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (and nothing that does not).

    ``max_windows``: train on a seeded subset of that many windows (None: all windows of the
    training systems); ``epoch_windows``: each epoch takes that many of them, a fresh draw every epoch
    from the shuffling's generator (None: every one each epoch). ``validation_windows``: how many windows
    of the validation systems are scored each epoch. ``validation``/``test``: fractions of systems held out, by seed.
    ``lr``: Adam's learning rate, decayed to 0 by a cosine over the run. ``batch_size``: windows per
    optimiser step (the global batch under DistributedDataParallel). The defaults, lr 1e-2 and batch
    50 with the default leapfrog windows, did best at equal training time on one CPU thread
    (``benchmarks/results/reference_side_by_side.md``, ``ablation_batch_size_T2.md``); on a GPU a larger
    batch is faster per window (``benchmarks/results/gpu/gpu_speed.md``), at an accuracy not measured yet.
    ``method``: the fixed-step integrator over each window; ``"auto"`` (the default) is the one a
    rollout of the model uses, leapfrog for a separable Hamiltonian and rk4 otherwise
    (``hamnet.rollouts.default_method``), so training fits the map the rollout will apply; it is
    resolved when the config is made, so a saved config names the integrator.
    ``init_from``: start from the weights of this checkpoint (a path or a pretrained name) instead of
    fresh ones, for a second phase of training with other settings (longer windows, float64, ...);
    its model configuration must equal ``model``. The optimiser and schedule start afresh.
    ``kernel_bound_factor``: for a model with a LieConv kernel (HLieConv) whose ``kernel_bound`` is
    None, the run sets that bound to this multiple of the largest kernel input over the training
    windows (so the learned potential is bounded beyond the data, and a rollout that leaves the data
    cannot gain unbounded momenta; see ``benchmarks/results/divergence_escape.md``); None leaves the
    kernel unbounded. With ``init_from`` the starting checkpoint's bound is kept. The checkpoint
    records the bound that was used.
    ``allow_rollout``: accept a rollout file (a model's output, :func:`hamnet.provenance.rollout_model`)
    as training data, without the systems it lists as diverged (counted in the checkpoint's ``data``
    record); otherwise such a file is refused, since a model's output is not ground truth.
    ``substeps``: integration steps per interval between stored states, in training and in every rollout
    of the model (recorded in its checkpoint); ``"auto"`` chooses it from the training systems when the
    run starts (:func:`hamnet.data.suggest_substeps`), and the saved config holds the number chosen.
    ``warmup``: the fraction of all optimiser steps over which the learning rate rises linearly to
    ``lr`` before the cosine decay; ``clip_grad``: the largest gradient norm (None: unclipped); see
    :mod:`hamnet.optimisation`. ``select``: what picks ``best.pt``, the validation ``"window"`` MSE or
    ``"rollout"``, the position MSE of the validation systems rolled out ``select_steps`` stored steps
    (None: their whole length) from their states at ``validation_windows`` seeded starts.
    ``weight_floor``: None, or f in (0, 1]: each particle's error weighed by the inverse of its own force in a
    window, floored at f**2 times the window's mean (:class:`hamnet.loss.WindowLoss`); validation is unweighted.
    ``rollback``: None, or r > 1: an epoch whose validation window MSE is more than r times the lowest so far,
    or not finite, or whose training loss or weights stop being finite, is undone (weights and Adam's state as
    ``last.pt`` held them, every learning rate halved for the rest of the run; the epoch still counts, its
    metrics say ``rolled_back``) instead of ending the run; in an ensemble a non-finite batch or weights still
    end the member. An r near 1 undoes every epoch whose validation MSE merely drifts up, halving each time.
    ``rollback_train``: None, or t > 1: the same for an epoch whose mean training loss is more than t times the
    lowest so far (a damaged epoch the validation MSE may barely show); either factor turns undoing on.
    ``compile``: the step through ``torch.compile`` (``"on"``; the eager numbers to float32 round-off), eagerly
    (``"off"``) or ``"auto"``, resolved when the run starts (:func:`hamnet.optimisation.checked_step`).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 10
    batch_size: int = 50
    lr: float = 1e-2
    weight_decay: float = 0.0
    chunk: int = DEFAULT_CHUNK
    method: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    validation: float = 0.1
    test: float = 0.1
    max_windows: int | None = None
    epoch_windows: int | None = None
    validation_windows: int | None = 1000
    init_from: str | None = None
    kernel_bound_factor: float | None = DEFAULT_KERNEL_BOUND_FACTOR
    allow_rollout: bool = False
    substeps: int | str = 1
    warmup: float = 0.0
    clip_grad: float | None = None
    select: str = "window"
    select_steps: int | None = None
    compile: str = "off"
    weight_floor: float | None = None
    rollback: float | None = None
    rollback_train: float | None = None

    def __post_init__(self) -> None:
        check_field_types(self, "train config")  # a dict for the model becomes a ModelConfig
        for name in ("max_windows", "epoch_windows", "validation_windows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number or None, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight decay must be a finite non-negative number, got {self.weight_decay} "
                             "(--weight-decay)")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.method == "auto":
            object.__setattr__(self, "method", default_method(MODELS.get(self.model.name)))
        if not get_integrator(self.method).fixed_step:  # unknown names fail here, with the known ones listed
            fixed = [name for name in INTEGRATORS.names() if INTEGRATORS.get(name).fixed_step]
            raise ValueError(f"training integrates each window with a fixed step; {self.method!r} is adaptive. "
                             f"Choose one of {', '.join(fixed)}")
        if self.chunk < 2:
            raise ValueError(f"chunk must be at least 2 states, got {self.chunk}")
        if self.substeps != "auto" and (isinstance(self.substeps, (bool, str)) or self.substeps < 1):
            raise ValueError(f"substeps must be a positive integer or 'auto', got {self.substeps!r} (--substeps)")
        if not (0 <= self.warmup < 1):
            raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got {self.warmup} (--warmup)")
        if self.clip_grad is not None and not (self.clip_grad > 0 and math.isfinite(self.clip_grad)):
            raise ValueError(f"clip_grad must be a positive finite norm or None, got {self.clip_grad} (--clip-grad)")
        if self.select not in ("window", "rollout"):
            raise ValueError(f"select must be 'window' or 'rollout', got {self.select!r} (--select)")
        if self.select_steps is not None and (self.select != "rollout" or self.select_steps < 1):
            raise ValueError(f"select_steps must be a positive number of steps, with select='rollout'; got "
                             f"{self.select_steps} with select={self.select!r} (--select-steps)")
        check_weight_floor(self.weight_floor)
        if self.rollback is not None and not (self.rollback > 1 and math.isfinite(self.rollback)
                                              and self.validation > 0):
            raise ValueError(f"rollback must be a finite factor > 1, with validation systems (--validation > 0), or "
                             f"None; got {self.rollback} with validation {self.validation} (--rollback)")
        if self.rollback_train is not None and not (self.rollback_train > 1 and math.isfinite(self.rollback_train)):
            raise ValueError(f"rollback_train must be a finite factor > 1 or None, got {self.rollback_train} "
                             "(--rollback-train)")
        if self.compile not in COMPILE_CHOICES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {self.compile!r} (--compile)")
        if self.kernel_bound_factor is not None and not (math.isfinite(self.kernel_bound_factor)
                                                         and self.kernel_bound_factor >= 1):
            raise ValueError(f"kernel bound factor must be a finite number >= 1 (a bound inside the data would bend "
                             f"what the model learns from), or None, got {self.kernel_bound_factor}")

    @property
    def undoes(self) -> bool:
        """Whether a damaged epoch is undone (``rollback`` or ``rollback_train`` set) rather than kept or fatal."""
        return self.rollback is not None or self.rollback_train is not None

    def epoch_size(self, windows: int) -> int:
        """How many of ``windows`` training windows one epoch takes."""
        return windows if self.epoch_windows is None else min(windows, self.epoch_windows)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Rebuild from :meth:`as_dict` (e.g. read from a checkpoint); unknown keys and values of the
        wrong type are refused in one line. A config saved before the kernel bound existed has no
        ``kernel_bound_factor``: its run was unbounded, which is what it gets back."""
        if isinstance(values, dict) and "kernel_bound_factor" not in values:
            values = {**values, "kernel_bound_factor": None}
        return config_from_dict(cls, values, "train config")


def _open_run(files: RunFiles, run: RunState, config: TrainConfig, data_info: dict, resume: bool,
              held: contextlib.ExitStack, settings: RunSettings) -> tuple[bool, bool]:
    """Main rank: create and lock the run folder (the lock joins ``held``), decide where the run
    starts and write its first files. Returns whether the run resumes a checkpoint and whether this
    call created the folder."""
    created = make_run_folder(files, resume)
    held.enter_context(locked(files))  # if another process holds it, the folder is theirs: left alone
    try:
        state = claim(files, config, data_info, resume)
        if state is not None:
            run.restore(state, files.last)
        _write_start(files, run, config, data_info, settings, fresh=state is None)
        return state is not None, created
    except BaseException:
        if created and not files.last.exists():
            shutil.rmtree(files.folder, ignore_errors=True)  # nothing worth keeping: leave no half-made run
        raise


def _write_start(files: RunFiles, run: RunState, config: TrainConfig, data_info: dict, settings: RunSettings, *,
                 fresh: bool) -> None:
    """The run's first writes.

    Order of writes, each one atomic: ``config.json``; ``config.toml`` (the settings, resolved, as
    ``hamnet train --config`` reads them: :mod:`hamnet.settings_file`); ``metrics.jsonl`` cut to the
    epochs ``last.pt`` holds; for a run starting at epoch 0, ``last.pt`` of epoch 0 (initial weights, optimiser,
    scheduler, random state). Each epoch then appends its metrics line and writes ``best.pt`` and
    ``last.pt`` (:func:`end_epoch`). A kill between any two writes leaves a folder that ``--resume``
    continues and that, until an epoch completes, a new run may start over in.
    """
    write_json(files.config, {"train_config": config.as_dict(), "data": data_info})
    write_text(files.settings, settings_text(config, settings, f"the settings of the run in {files.folder}, as it "
                                             "resolved them; repeat it with\n  hamnet train --config "
                                             f"{files.settings} --out NEW_RUN_FOLDER\n(a flag given overrides "
                                             "the value here; \"none\" stands for None)"))
    truncate_metrics(files.metrics, run.epoch)
    if fresh:
        _save(files.last, run, config, data_info)


# -- the run ----------------------------------------------------------------------------------------
def train(config: TrainConfig, data_path: str | os.PathLike, run_dir: str | os.PathLike, *,
          resume: bool = False, device: str = "cpu", progress: bool | None = None,
          stop_after_epochs: int | None = None, tensorboard: bool = False) -> dict[str, Any]:
    """Train ``config.model`` on the trajectories in ``data_path``, writing the run to ``run_dir``.

    What ``config.model`` leaves to the data (``dim``, ``n_particles``, ``feature_keys``: None by default)
    is taken from the file (:meth:`hamnet.models.ModelConfig.for_data`), so ``TrainConfig()`` trains on
    any file. ``progress``: progress bars (``tqdm.auto``: text in a terminal, a widget in a notebook);
    None shows them where someone is likely watching, a terminal or a notebook, not in logs.
    ``tensorboard``: write each epoch's metrics as TensorBoard scalars into ``run_dir`` too (needs
    ``hamnet[tensorboard]``). Neither changes the result (:mod:`hamnet.monitor`).

    ``resume=True`` continues the run in ``run_dir`` from ``last.pt``; its stored configuration must
    equal ``config`` and the data file must be the one it was trained on (same sha256).
    ``stop_after_epochs`` ends this call early (as an interruption would); a later resume finishes
    the run exactly as if it had not stopped. Returns the last epoch's metrics.

    Everything is validated before ``run_dir`` is created, so bad input leaves nothing behind. The
    folder is locked for the whole call: a second ``train`` on it raises :class:`hamnet.runs.RunFolderInUse` at
    once. A loss or weights that stop being finite raise :class:`TrainingDiverged`, with ``last.pt``
    and ``best.pt`` as the last finite epoch wrote them.
    """
    if tensorboard:
        check_tensorboard()
    context = distributed_context(device)
    watching = MonitorSettings(progress if context.is_main else False, tensorboard and context.is_main)
    settings = RunSettings(data=str(data_path), out=str(run_dir), device=device, tensorboard=tensorboard)
    succeeded = False
    try:
        metrics = _train(config, Path(data_path), RunFiles(Path(run_dir)), context, resume, (watching, settings),
                         stop_after_epochs)
        succeeded = True
        return metrics
    finally:
        close_distributed(context, succeeded=succeeded)


def _train(config, data_path, files, context, resume, run_settings, stop_after_epochs):
    with contextlib.ExitStack() as held:  # the folder's lock (main rank), held until the run ends
        started = prepare_run(config, data_path, files, context, resume)
        open_run(started, context, resume, run_settings, stop_after_epochs, held)
        metrics: dict[str, Any] = {}
        while started.run.epoch < started.last_epoch:
            begun = time.perf_counter()
            train_loss = _train_epoch(started.run, started.train_windows, started.config, context, started.monitor,
                                      started.diverged)
            metrics = end_epoch(started, train_loss, time.perf_counter() - begun, context)
        return metrics


@dataclass
class StartedRun:
    """A run prepared (:func:`prepare_run`: its step and state, settings as resolved, folder, windows, data
    record) and, once :func:`open_run` has opened its folder, ready for its next epoch (its monitor, the
    epoch this call ends at, and whether this call created the folder); ``diverged(what)``, the error for
    a run that stops being finite. What :func:`hamnet.ensemble.train_ensemble` drives for each member."""

    run: RunState
    config: TrainConfig
    files: RunFiles
    train_windows: Windows
    validation: tuple
    data_info: dict
    monitor: Monitor | None = None
    last_epoch: int = 0
    created: bool = False
    largest: float = math.nan  # the data file's largest |value|, for the divergence message

    def diverged(self, what: str) -> TrainingDiverged:
        return diverged_error(self.run.step, self.run.epoch, self.config, self.files, self.largest,
                              self.data_info["path"], what)


def prepare_run(config, data_path, files, context, resume) -> StartedRun:
    """Everything before the run folder is touched (nothing is written): the data, the settings the data
    (or, resuming, the checkpoint) resolves, the checked step."""
    data, train_windows, validation_windows, left_out, region, largest = _prepare_data(config, data_path, context)
    config = dataclasses.replace(config, model=config.model.for_data(data))  # what it leaves to the data
    start = None  # the model of init_from, and its record; a resumed run continues from its own checkpoint
    if config.init_from is not None and not resume:
        start = model_from_checkpoint(config.init_from)[0], checkpoint_provenance(locate_checkpoint(config.init_from))
    origin = files.last if resume and files.last.exists() else (config.init_from if start else None)
    config = with_substeps(config, train_windows,
                           load_checkpoint(origin) if origin is not None and config.substeps == "auto" else None)
    config = with_kernel_bound(config, train_windows, files.last if resume and files.last.exists() else None,
                               start=start[0] if start else None)
    dtype, dt = DTYPES[config.dtype], float(data.meta["dt"])
    model = build_model(config.model, torch.Generator().manual_seed(config.seed))
    if start is not None:
        _load_initial_weights(model, config, start[0])
    steps = config.epochs * math.ceil(config.epoch_size(len(train_windows)) / config.batch_size)
    # checked on the first full batch (or window) before anything is written: a model/integrator/neighbourhood
    # mismatch, or a compiler that fails, ends the run here, not after the run folder exists
    first = to_device(train_windows[torch.arange(min(config.batch_size, len(train_windows)))], dtype, context.device)
    config, step = checked_step(config, dt, steps, first, device=context.device, model=model,
                                processes=context.world_size)
    run = RunState(step, torch.Generator().manual_seed(config.seed), init_from=start[1] if start else None)
    data_info = {"path": str(data_path), **data_kind(data), "dt": data.meta["dt"],
                 "n_train_windows": len(train_windows), "sha256": file_sha256(data_path), "region": region}
    if rollout_model(data) is not None:
        data_info["rollout"] = {"model": rollout_model(data), "diverged_left_out": len(left_out)}
    windows = train_windows.compact(), tuple(w and w.compact() for w in validation_windows)  # the file is freed
    return StartedRun(run, config, files, *windows, data_info, largest=largest)


def open_run(started: StartedRun, context, resume, run_settings, stop_after_epochs, held: contextlib.ExitStack) -> None:
    """Create or resume ``started``'s run folder, locked (the lock joins ``held``): the run is then ready
    for its next epoch."""
    run, config, files, data_info = started.run, started.config, started.files, started.data_info
    watching, settings = run_settings
    resumed, started.created = on_main(context, lambda: _open_run(files, run, config, data_info, resume, held,
                                                                  settings))
    if resumed and not context.is_main:
        run.restore(load_checkpoint(files.last), files.last)  # checked by the main rank
    if context.world_size > 1:
        # a Hamiltonian's constant offset (the output bias) never reaches the force, so it gets no
        # gradient; DDP must be told such parameters exist
        run.step.loss_module = nn.parallel.DistributedDataParallel(run.step.loss_module, find_unused_parameters=True)
    started.monitor = held.enter_context(watching.open(files.folder, config.epochs, run.epoch))
    started.last_epoch = min(config.epochs, run.epoch + (stop_after_epochs or config.epochs))


def _load_initial_weights(model: nn.Module, config: TrainConfig, start: nn.Module) -> None:
    """Copy the weights of ``start`` (the model of ``config.init_from``) into ``model``; a checkpoint of
    another model is refused in one line before anything is written."""
    if start.config != config.model:
        theirs = dataclasses.asdict(start.config)
        differing = sorted(key for key, value in dataclasses.asdict(config.model).items() if theirs.get(key) != value)
        raise ValueError(f"--init-from {config.init_from}: its model differs from this run's in {', '.join(differing)}; "
                         "train with the same model settings to start from it")
    model.load_state_dict(start.state_dict())


def _prepare_data(config: TrainConfig, data_path: Path, context: Context):
    """The data in the training dtype, its training and validation windows, all checked, how many
    diverged systems of a rollout file (``config.allow_rollout``) were left out, the training
    systems' region (:func:`hamnet.region.data_region`) and the file's largest |value|."""
    data, left_out = ground_truth(load_trajectories(data_path), allow_rollout=config.allow_rollout,
                                  flag="--allow-rollout (allow_rollout=True in TrainConfig)", use="training data")
    check_compatible(config.model, data, str(data_path))
    if config.batch_size < context.world_size:
        raise ValueError(f"batch size {config.batch_size} is smaller than the {context.world_size} processes")
    dtype = DTYPES[config.dtype]
    # the largest |value| from the extremes, without a copy of the file's largest array as abs() would make
    largest = max(max(-float(low), float(high)) for low, high in map(torch.aminmax, (data.z, *data.params.values())))
    if largest > torch.finfo(dtype).max:
        raise ValueError(f"{data_path} holds values up to {largest:.3g}, beyond {config.dtype}'s range; "
                         "train with --dtype float64")
    split = split_systems(data.n_systems, config.validation, config.test, config.seed)
    region = data_region(data.z, split.train)  # in the file's float64, before the training dtype
    # the whole file moves to the training device once, so batches are cut there without host copies
    device = context.device
    data = Trajectories(data.t, data.z.to(device=device, dtype=dtype),
                        {k: v.to(device=device, dtype=dtype) for k, v in data.params.items()}, data.meta)
    train_windows = Windows(data, config.chunk, split.train, config.max_windows, seed=config.seed)
    validation_windows = (Windows(data, config.chunk, split.validation, config.validation_windows, seed=config.seed)
                          if len(split.validation) else None)
    selection = None  # long windows of the validation systems, whose rollout picks best.pt
    if config.select == "rollout":
        steps = config.select_steps or data.n_times - 1
        if not len(split.validation) or steps >= data.n_times:
            raise ValueError(f"select='rollout' rolls the validation systems out {steps} steps: it needs validation "
                             f"systems (--validation > 0) and select_steps below the data's {data.n_times} states")
        selection = Windows(data, steps + 1, split.validation, config.validation_windows, seed=config.seed)
    return data, train_windows, (validation_windows, selection), left_out, region, largest


def end_epoch(started: StartedRun, train_loss: float, seconds: float, context: Context) -> dict[str, Any]:
    """After an epoch's steps: validation, metrics, checkpoints. ``best.pt`` holds the epoch of the lowest
    window MSE, or of the lowest rollout position MSE with ``select="rollout"``. Returns the metrics."""
    run, config, files, train_windows = started.run, started.config, started.files, started.train_windows
    validation_windows, selection = started.validation
    scored = functools.partial(window_mse, run.model, dt=float(train_windows.data.meta["dt"]), method=config.method,
                               substeps=config.substeps, dtype=DTYPES[config.dtype])
    finite = math.isfinite(train_loss)  # with rollback, _train_epoch returns NaN for non-finite weights too
    validation = scored(validation_windows)["mse"] if validation_windows is not None and finite else math.nan
    undone = False
    if config.undoes:
        jumped = validation_windows is not None and not (math.isfinite(validation) and (
            config.rollback is None or validation <= config.rollback * run.lowest))
        spiked = config.rollback_train is not None and train_loss > config.rollback_train * run.lowest_train
        undone = on_any_rank(not finite or jumped or spiked, context)
    if validation_windows is not None and not math.isfinite(validation) and not undone:
        raise started.diverged(f"the validation MSE is {validation} after epoch {run.epoch + 1}")
    if undone:
        run.step.roll_back(load_checkpoint(files.last))
        if context.world_size > 1:
            dist.barrier()  # every rank has read last.pt before the main rank rewrites it
        log.warning("epoch %d undone (training loss %.3g, validation MSE %.3g); the learning rate is halved",
                    run.epoch + 1, train_loss, validation)
    # a rollout that leaves the data may not stay finite: that epoch is simply not the best
    rolled = None if selection is None else math.nan if undone else scored(selection, positions_only=True)["mse"]
    score = math.inf if undone else validation if rolled is None else (rolled if math.isfinite(rolled) else math.inf)
    run.epoch += 1
    improved = score < run.best
    run.best = min(run.best, score) if improved else run.best
    if not undone:
        run.lowest, run.lowest_train = min(run.lowest, validation), min(run.lowest_train, train_loss)
    metrics = {"epoch": run.epoch, "train_loss": train_loss, "validation_mse": validation,
               **({"validation_rollout_mse": rolled} if rolled is not None else {}),
               **({"rolled_back": True} if undone else {}),
               "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
               "windows_per_second": round(config.epoch_size(len(train_windows)) / seconds, 1)}
    if context.is_main:
        # metrics first, then best, then last: a kill between any two leaves a state that resume
        # repairs (metrics of epochs past last.pt are dropped, and the redone epoch, bitwise the
        # same, rewrites a best.pt that is ahead of last.pt)
        append_metrics(files.metrics, metrics)
        if improved or not files.best.exists():
            _save(files.best, run, config, started.data_info)
        _save(files.last, run, config, started.data_info)
        started.monitor.epoch_done(metrics)
        log.info("epoch %d/%d  train %.3g  validation %.3g  %.1f s", run.epoch, config.epochs,
                 train_loss, validation, seconds)
    return metrics


def _train_epoch(run, windows, config, context, monitor: Monitor,
                 diverged: Callable[[str], TrainingDiverged]) -> float:
    """One pass over the training windows; returns the mean loss. A batch whose loss is not finite
    (on any rank) raises ``diverged(what)`` before any step is taken with it, and so do weights that
    are not finite after the last step."""
    dtype = DTYPES[config.dtype]
    elements_per_window = (windows.chunk - 1) * math.prod(windows.data.z.shape[2:])
    total, count = 0.0, 0
    undo = config.undoes  # then end_epoch undoes an epoch that stopped being finite
    batches = windows.batches(config.batch_size, run.shuffle, config.epoch_size(len(windows)))
    for number, global_index in enumerate(monitor.batches(batches, run.epoch + 1), start=1):
        local_index = global_index.tensor_split(context.world_size)[context.rank]
        z, params = to_device(windows[local_index], dtype, context.device)
        global_elements = global_index.numel() * elements_per_window
        # DDP averages gradients over processes; scaling by world_size / global count makes that
        # average the gradient of the global batch's mean, whatever the split sizes
        try:
            batch_loss = run.step(z, params, scale=context.world_size / global_elements,
                                  finite=functools.partial(finite_everywhere, context=context))
        except NonFiniteLoss as error:
            # undoing helps only once Adam has stepped: the initial weights' own non-finite loss would recur
            if undo and run.optimizer.state:  # the schedule still takes the epoch's steps, to end where it would
                for _ in range(math.ceil(config.epoch_size(len(windows)) / config.batch_size) - number + 1):
                    run.scheduler.step()
                return math.nan
            value = error.loss if not math.isfinite(error.loss) else "not finite (in another process)"
            raise diverged(f"the training loss is {value} in epoch {run.epoch + 1}, batch {number}") from None
        total += batch_loss / context.world_size * global_elements
        count += global_elements
    if not finite_weights(run.model):  # an overflowing gradient at the last step
        if undo:
            return math.nan
        raise diverged(f"the weights are not finite after epoch {run.epoch + 1}")
    if context.world_size > 1:
        summed = torch.tensor([total], dtype=torch.float64, device=context.device)
        dist.all_reduce(summed)
        total = float(summed)  # every rank already counted all global elements
    return total / count


def _save(path: Path, run: RunState, config: TrainConfig, data_info: dict) -> None:
    """Write ``run``'s checkpoint to ``path`` atomically; never one whose weights are not finite."""
    if not finite_weights(run.model):
        raise TrainingDiverged(f"refusing to write {path}: the weights are not finite; {path} is left as it was")
    save_checkpoint(path, run.state(config, data_info))
