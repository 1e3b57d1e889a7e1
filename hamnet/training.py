"""Training a model on windows of trajectories: resumable, reproducible, optionally distributed.

Note to the reader: a batch holds windows ``z: (b, chunk, 2, N, D)`` (see :mod:`hamnet.data`);
the loss is :class:`hamnet.loss.WindowLoss`, the squared error of the model integrated over each
window against the window's other ``chunk - 1`` states.

Optimiser: Adam with a cosine learning-rate decay over all steps of all epochs. A run folder holds
``config.json``, ``metrics.jsonl`` (one line per epoch), ``last.pt`` (every epoch) and ``best.pt``
(lowest validation loss). Resuming restores model, optimiser, scheduler, epoch and random states,
so an interrupted run ends with bitwise the same weights as an uninterrupted one (on CPU).

Distributed: under ``torchrun --nproc_per_node=K`` each process takes a contiguous K-th of every
global batch, the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU), and the
loss is scaled so the averaged gradient is that of the global batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DEFAULT_CHUNK, Windows, split_systems
from .integrate import INTEGRATORS, get_integrator
from .io import Trajectories, atomic_path, load_trajectories
from .loss import WindowLoss, to_device, window_mse
from .models import ModelConfig, build_model, check_compatible, config_from_dict

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (and nothing that does not).

    ``max_windows``: train on a seeded subset of that many windows (None: all windows of the
    training systems). ``validation_windows``: how many windows of the validation systems are
    scored each epoch. ``validation``/``test``: fractions of systems held out, by seed.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 10
    batch_size: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    chunk: int = DEFAULT_CHUNK
    method: str = "rk4"
    dtype: str = "float32"
    seed: int = 0
    validation: float = 0.1
    test: float = 0.1
    max_windows: int | None = None
    validation_windows: int | None = 1000

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must be non-negative, got {self.weight_decay}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if not get_integrator(self.method).fixed_step:  # unknown names fail here, with the known ones listed
            fixed = [name for name in INTEGRATORS.names() if INTEGRATORS.get(name).fixed_step]
            raise ValueError(f"training integrates each window with a fixed step; {self.method!r} is adaptive. "
                             f"Choose one of {', '.join(fixed)}")
        if self.chunk < 2:
            raise ValueError(f"chunk must be at least 2 states, got {self.chunk}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, values, "training config")


# -- distributed ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """Where this process sits: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(device: str = "cpu") -> Context:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)  # before the group exists, so NCCL binds each rank to its own GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(rank=rank, world_size=world_size,
                   device=torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu"))


def close_distributed(context: Context, *, succeeded: bool) -> None:
    """Leave the process group. After success every rank meets at a barrier first, so teardown never
    races; after a failure the group is destroyed at once (a barrier could meet another rank's
    all-reduce and hang)."""
    if context.world_size > 1 and dist.is_initialized():
        if succeeded:
            dist.barrier()
        dist.destroy_process_group()


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class RunFiles:
    """The files of a run folder."""

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"


def train(config: TrainConfig, data_path: str | os.PathLike, run_dir: str | os.PathLike, *,
          resume: bool = False, device: str = "cpu", progress: bool = False,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train ``config.model`` on the trajectories in ``data_path``, writing the run to ``run_dir``.

    ``resume=True`` continues the run in ``run_dir`` from ``last.pt``; its stored configuration must
    equal ``config``. ``stop_after_epochs`` ends this call early (as an interruption would); a later
    resume finishes the run exactly as if it had not stopped. Returns the last epoch's metrics.
    Everything is validated before ``run_dir`` is created, so bad input leaves nothing behind.
    """
    context = distributed_context(device)
    succeeded = False
    try:
        metrics = _train(config, Path(data_path), RunFiles(Path(run_dir)), context, resume, progress,
                         stop_after_epochs)
        succeeded = True
        return metrics
    finally:
        close_distributed(context, succeeded=succeeded)


@dataclass
class _Run:
    """Everything one training run updates: model, optimiser, schedule, shuffling, progress."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    shuffle: torch.Generator
    epoch: int = 0
    best: float = math.inf

    def state(self, config: TrainConfig, data_info: dict) -> dict[str, Any]:
        """The checkpoint contents (see :mod:`hamnet.checkpoint`)."""
        return {"model_config": dataclasses.asdict(config.model), "train_config": config.as_dict(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "best_validation": self.best,
                "rng": {"shuffle": self.shuffle.get_state()}, "data": data_info}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        self.epoch, self.best = state["epoch"], state["best_validation"]


def _train(config, data_path, files, context, resume, progress, stop_after_epochs):
    data, train_windows, validation_windows = _prepare_data(config, data_path, context)
    dtype, dt = DTYPES[config.dtype], float(data.meta["dt"])
    model = build_model(config.model, torch.Generator().manual_seed(config.seed)).to(device=context.device, dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train_windows) / config.batch_size)
    run = _Run(model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps),
               torch.Generator().manual_seed(config.seed))
    loss_module = WindowLoss(model, dt, config.method)
    # one window through the model before anything is written: a model/integrator/neighbourhood
    # mismatch fails here, not after the run folder exists
    with torch.no_grad():
        loss_module(*to_device(train_windows[torch.arange(1)], dtype, context.device))
    data_info = {"path": str(data_path), "system": data.meta.get("system"), "n_particles": data.n_particles,
                 "dim": data.dim, "dt": data.meta["dt"], "n_train_windows": len(train_windows)}
    if resume:
        run.restore(_resume_state(files, config, data_info))
    elif files.folder.exists() and any(files.folder.iterdir()):
        raise ValueError(f"run folder {files.folder} already holds files; resume it with --resume or choose another --out")
    if context.world_size > 1:
        dist.barrier()  # every rank has checked the folder before the main rank writes to it
        # a Hamiltonian's constant offset (the output bias) never reaches the force, so it gets no
        # gradient; DDP must be told such parameters exist
        loss_module = nn.parallel.DistributedDataParallel(loss_module, find_unused_parameters=True)

    created = context.is_main and not files.folder.exists()
    try:
        if context.is_main:
            files.folder.mkdir(parents=True, exist_ok=True)
            _write_json(files.config, {"train_config": config.as_dict(), "data": data_info})
            _truncate_metrics(files.metrics, run.epoch)
        return _epochs(run, loss_module, train_windows, validation_windows, config, context, files, data_info,
                       progress, stop_after_epochs)
    except BaseException:
        if created and not files.last.exists():
            shutil.rmtree(files.folder, ignore_errors=True)  # nothing worth keeping: leave no half-made run
        raise


def _prepare_data(config: TrainConfig, data_path: Path, context: Context):
    """The data in the training dtype and its training and validation windows, all checked."""
    data = load_trajectories(data_path)
    check_compatible(config.model, data, str(data_path))
    if config.batch_size < context.world_size:
        raise ValueError(f"batch size {config.batch_size} is smaller than the {context.world_size} processes")
    dtype = DTYPES[config.dtype]
    split = split_systems(data.n_systems, config.validation, config.test, config.seed)
    data = Trajectories(data.t, data.z.to(dtype), {k: v.to(dtype) for k, v in data.params.items()}, data.meta)
    train_windows = Windows(data, config.chunk, split.train, config.max_windows, seed=config.seed)
    validation_windows = (Windows(data, config.chunk, split.validation, config.validation_windows, seed=config.seed)
                          if len(split.validation) else None)
    return data, train_windows, validation_windows


def _epochs(run, loss_module, train_windows, validation_windows, config, context, files, data_info, progress,
            stop_after_epochs) -> dict[str, Any]:
    dtype, dt = DTYPES[config.dtype], float(train_windows.data.meta["dt"])
    last_epoch = min(config.epochs, run.epoch + (stop_after_epochs or config.epochs))
    metrics: dict[str, Any] = {}
    while run.epoch < last_epoch:
        started = time.perf_counter()
        train_loss = _train_epoch(loss_module, run.optimizer, run.scheduler, train_windows, config, context, dtype,
                                  run.shuffle, progress and context.is_main, run.epoch)
        seconds = time.perf_counter() - started
        validation = (window_mse(run.model, validation_windows, dt, method=config.method, dtype=dtype)["mse"]
                      if validation_windows is not None else math.nan)
        run.epoch += 1
        improved = validation < run.best
        run.best = min(run.best, validation) if improved else run.best
        metrics = {"epoch": run.epoch, "train_loss": train_loss, "validation_mse": validation,
                   "lr": run.scheduler.get_last_lr()[0], "seconds": round(seconds, 3),
                   "windows_per_second": round(len(train_windows) / seconds, 1)}
        if context.is_main:
            # metrics first, then best, then last: a kill between any two leaves a state that resume
            # repairs (metrics of epochs past last.pt are dropped, and best is rewritten from last)
            _append_metrics(files.metrics, metrics)
            state = run.state(config, data_info)
            if improved or not files.best.exists():
                save_checkpoint(files.best, state)
            save_checkpoint(files.last, state)
            log.info("epoch %d/%d  train %.3g  validation %.3g  %.1f s", run.epoch, config.epochs,
                     train_loss, validation, seconds)
    return metrics


def _train_epoch(loss_module, optimizer, scheduler, windows, config, context, dtype, shuffle, progress, epoch):
    elements_per_window = (windows.chunk - 1) * math.prod(windows.data.z.shape[2:])
    total, count = 0.0, 0
    batches = windows.batches(config.batch_size, shuffle)
    for global_index in tqdm(batches, disable=not progress, desc=f"epoch {epoch + 1}", leave=False):
        local_index = global_index.tensor_split(context.world_size)[context.rank]
        z, params = to_device(windows[local_index], dtype, context.device)
        global_elements = global_index.numel() * elements_per_window
        # DDP averages gradients over processes; scaling by world_size / global count makes that
        # average the gradient of the global batch's mean, whatever the split sizes
        loss = loss_module(z, params) * (context.world_size / global_elements)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) / context.world_size * global_elements
        count += global_elements
    if context.world_size > 1:
        summed = torch.tensor([total], dtype=torch.float64, device=context.device)
        dist.all_reduce(summed)
        total = float(summed)  # every rank already counted all global elements
    return total / count


def _resume_state(files: RunFiles, config: TrainConfig, data_info: dict) -> dict[str, Any]:
    if not files.last.exists():
        raise ValueError(f"nothing to resume: {files.last} does not exist")
    state = load_checkpoint(files.last)
    saved = state.get("train_config")
    if saved != config.as_dict():
        changed = sorted(k for k in config.as_dict() if saved is None or saved.get(k) != config.as_dict()[k])
        raise CheckpointError(
            f"{files.last} was trained with different settings ({', '.join(changed)}); "
            "resume with the run's own settings or start a new run folder"
        )
    if state.get("data") != data_info:
        raise CheckpointError(f"{files.last} was trained on other data ({state.get('data', {}).get('path')}); "
                              "resume with the same --data file")
    return state


def _read_metrics(path: Path) -> list[dict]:
    """Metric lines of a run; a line cut short by a kill mid-write is dropped."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def _write_metrics(path: Path, lines: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep the metric lines of completed epochs only (a resumed run rewrites what it redoes)."""
    if path.exists():
        _write_metrics(path, [line for line in _read_metrics(path) if line.get("epoch", math.inf) <= epochs_done])


def _append_metrics(path: Path, metrics: dict) -> None:
    _write_metrics(path, _read_metrics(path) + [metrics])


def _write_json(path: Path, value: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")
