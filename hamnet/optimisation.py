"""The optimiser step of training: Adam, a learning-rate schedule with optional warm-up, gradient clipping.

Note to the reader: :class:`TrainingStep` is what :func:`hamnet.training.train` applies to every batch of
windows, public so that benchmarks time exactly it; :class:`RunState` is it with the rest of what a run
checkpoints. The schedule is a cosine decay of the learning rate
to 0 over all steps; with ``warmup`` the first fraction of those steps instead rises linearly from
``lr / warmup_steps`` to ``lr`` and the cosine runs over the rest. Warm-up and clipping are for
training that integrates many steps per window (``substeps``), where early gradients through the
learned flow are large and a full-size first step can throw the weights where the loss is not finite.

Compiled step (``compile``): the window loss goes through ``torch.compile`` (forces by ``torch.func.grad``
there, :func:`systems.base.autograd_gradient`; on CUDA with CUDA graphs, ``mode="reduce-overhead"``), for
batches of the run's batch size only; any other batch (an epoch's last, shorter one) takes the eager
loss, so one compilation of static shapes serves the whole run. Both are the same function: loss and
gradients agree to float32 round-off, not bitwise. :func:`compile_choice` resolves ``"auto"``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError
from .loss import WindowLoss
from .models import build_model
from .runs import checkpoint_epoch

__all__ = ["DTYPES", "COMPILE_CHOICES", "COMPILE_MEASURED_STEPS", "COMPILE_PAYS_STEPS", "NonFiniteLoss",
           "RunState", "TrainingDiverged", "TrainingStep", "checked_step", "compile_choice", "diverged_error", "learning_rate_factor"]

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
COMPILE_CHOICES = ("auto", "on", "off")
#: optimiser steps from which ``compile="auto"`` compiles on a CPU: on one thread the compiled step was 1.4
#: to 1.9 times as fast and its first compilation paid for itself after 300 to 1,800 steps
#: (``benchmarks/results/compile_speed.md``), so a run this long gains about three times what it spends
COMPILE_PAYS_STEPS = 5000
#: the most integration steps per window (``(chunk - 1) * substeps``) ``compile="auto"`` compiles: the loop is
#: unrolled into the compiled graph, and compilation times were measured up to 16 steps
COMPILE_MEASURED_STEPS = 16


def compile_choice(choice: str, device: str | torch.device, total_steps: int, world_size: int = 1,
                   window_steps: int = 4) -> str:
    """``"on"`` or ``"off"`` for ``TrainConfig.compile``. ``"auto"`` compiles where
    ``benchmarks/results/compile_speed.md`` measured it faster: on a CPU, runs of at least
    :data:`COMPILE_PAYS_STEPS` optimiser steps with at most :data:`COMPILE_MEASURED_STEPS` integration steps
    per window (``window_steps``); not on CUDA until ``benchmarks/gpu_speed.py`` has measured it there.
    Never under ``torchrun`` (the compiled step is one process's), where ``"on"`` is refused in one line."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {choice!r} (--compile)")
    if world_size > 1:
        if choice == "on":
            raise ValueError(f"--compile on compiles the step of one process; this run has {world_size} (torchrun): "
                             "train with --compile off or auto")
        return "off"
    if choice != "auto":
        return choice
    measured = torch.device(device).type == "cpu" and window_steps <= COMPILE_MEASURED_STEPS
    return "on" if measured and total_steps >= COMPILE_PAYS_STEPS else "off"


class TrainingDiverged(ValueError):
    """A training or validation loss, or the weights, stopped being finite; the run folder keeps the
    checkpoints of the last finite epoch."""


class NonFiniteLoss(ValueError):
    """A batch's loss was not finite (here or, under DistributedDataParallel, in another process); the
    step that raised it changed nothing. ``loss`` is this process's value."""

    def __init__(self, loss: float) -> None:
        super().__init__(f"the training loss is {loss}")
        self.loss = loss


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The multiple of the base learning rate at optimiser step ``step`` (0-based): a linear rise over
    ``warmup_steps`` steps, then a cosine from 1 to 0 over the remaining steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, decay) / decay))


class TrainingStep:
    """The optimiser step :func:`hamnet.training.train` takes on every batch.

    Built from a :class:`hamnet.training.TrainConfig`: the model (``build_model`` from ``config.seed``,
    unless one is given), Adam with ``config.lr`` and ``config.weight_decay``, the schedule (a cosine
    decay to 0 over ``total_steps``, after a linear warm-up over ``config.warmup`` of them), and the window
    loss (:class:`hamnet.loss.WindowLoss`) with ``config.method`` and ``config.substeps`` at the data's
    ``dt``, in ``config.dtype`` on ``device``. ``step(z, params, scale=...)`` on a batch of windows
    ``z: (b, chunk, 2, N, D)``: the summed squared error times ``scale`` (``1 / elements`` for the
    batch's mean), its gradient, one host synchronisation to read the loss, then, if ``finite(loss)``,
    the gradient clipped to norm ``config.clip_grad`` (if set), Adam's step and the schedule's; otherwise
    it raises :class:`NonFiniteLoss` with nothing changed. Returns the scaled loss. ``config.compile``
    ``"on"`` compiles the loss of batches of ``config.batch_size`` windows (see the module's note; ``"auto"``
    must be resolved first, :func:`compile_choice`).
    """

    def __init__(self, config: Any, dt: float, total_steps: int, *, device: str | torch.device = "cpu",
                 model: nn.Module | None = None) -> None:
        choice = getattr(config, "compile", "off")
        if choice not in ("on", "off"):
            raise ValueError(f"the training step needs compile 'on' or 'off', got {choice!r}; resolve 'auto' with "
                             "hamnet.optimisation.compile_choice")
        model = model if model is not None else build_model(config.model, torch.Generator().manual_seed(config.seed))
        self.model = model.to(device=device, dtype=DTYPES[config.dtype])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        warmup_steps = math.ceil(config.warmup * total_steps)
        if warmup_steps:
            self.scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: learning_rate_factor(step, total_steps, warmup_steps))
        else:  # the schedule of runs before warm-up existed, so that they resume and repeat bitwise
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(total_steps, 1))
        self.clip_grad = config.clip_grad
        #: the module whose output is the loss: DistributedDataParallel wraps it under torchrun
        self.loss_module: nn.Module = WindowLoss(self.model, dt, config.method, config.substeps,
                                                  weight_floor=getattr(config, "weight_floor", None))
        #: the batch size whose loss is compiled (None: every batch is eager)
        self.compiled_batch = config.batch_size if choice == "on" else None
        if self.compiled_batch is not None:
            cuda = torch.device(device).type == "cuda"
            self._compiled = torch.compile(self.loss_module, dynamic=False, mode="reduce-overhead" if cuda else None)

    def loss(self, z: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed squared error of the batch (:class:`hamnet.loss.WindowLoss`), compiled for batches
        of the compiled size."""
        if self.compiled_batch is not None and z.shape[0] == self.compiled_batch:
            return self._compiled(z, params)
        return self.loss_module(z, params)

    def __call__(self, z: torch.Tensor, params: dict[str, torch.Tensor], *, scale: float,
                 finite: Callable[[float], bool] = math.isfinite) -> float:
        loss = self.loss(z, params) * scale
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the batch's one host synchronisation, after the backward pass is queued (on a GPU the check
        # then waits for work already running instead of stalling the queue before the backward)
        value = float(loss.detach())
        self.update(value, finite)
        return value

    def update(self, value: float, finite: Callable[[float], bool] = math.isfinite) -> None:
        """The step after the backward pass of a batch whose scaled loss was ``value``: clip, Adam, schedule;
        :class:`NonFiniteLoss` (nothing changed) where ``finite(value)`` is false."""
        if not finite(value):
            raise NonFiniteLoss(value)
        if self.clip_grad is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        self.scheduler.step()

    def roll_back(self, state: dict[str, Any], factor: float = 0.5) -> None:
        """Go back to the weights and Adam state of a checkpoint's ``state``, the schedule staying where it is
        and every learning rate, now and for the rest of the run, times ``factor``."""
        rates = [group["lr"] * factor for group in self.optimizer.param_groups]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        self.scheduler.base_lrs = [rate * factor for rate in self.scheduler.base_lrs]


@dataclass
class RunState:
    """Everything one training run updates: its step (model, optimiser, schedule), shuffling, progress;
    and ``init_from``, what it records of the checkpoint it started from (None: fresh weights)."""

    step: TrainingStep
    shuffle: torch.Generator
    epoch: int = 0
    best: float = math.inf
    init_from: dict | None = None
    lowest: float = math.inf  # the lowest validation window MSE, what config.rollback compares with
    lowest_train: float = math.inf  # the lowest epoch training loss, for config.rollback_train

    @property
    def model(self) -> nn.Module:
        return self.step.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step.optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return self.step.scheduler

    def state(self, config: Any, data_info: dict) -> dict[str, Any]:
        """The checkpoint contents (see :mod:`hamnet.checkpoint`)."""
        return {"model_config": dataclasses.asdict(config.model), "train_config": config.as_dict(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "best_validation": self.best,
                "lowest_validation": self.lowest, "lowest_train_loss": self.lowest_train,
                "rng": {"shuffle": self.shuffle.get_state()}, "data": data_info,
                **({"init_from": self.init_from} if self.init_from is not None else {})}

    def restore(self, state: dict[str, Any], path: Path) -> None:
        """Continue from a checkpoint read from ``path``; a malformed one is a CheckpointError naming it."""
        epoch = checkpoint_epoch(state, path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.shuffle.set_state(state["rng"]["shuffle"])
            self.best = float(state["best_validation"])
            self.lowest = float(state.get("lowest_validation", math.inf))  # absent before rollback existed
            self.lowest_train = float(state.get("lowest_train_loss", math.inf))
            self.init_from = state.get("init_from")
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path}: malformed checkpoint, cannot continue from it "
                                  f"({type(error).__name__}: {str(error).splitlines()[0]})") from error
        self.epoch = epoch


def checked_step(config: Any, dt: float, total_steps: int, batch: tuple, *, device: str | torch.device,
                 model: nn.Module, processes: int = 1) -> tuple[Any, TrainingStep]:
    """The :class:`TrainingStep` of ``config``, its ``compile`` resolved (:func:`compile_choice`), tried on ``batch``
    ``(z, params)`` (the run's first windows, up to a full batch) without changing a weight: eagerly (a model
    that does not fit the data fails here, as it would at the first step) and, for a compiled step and a
    full batch, compiled, loss and gradient, which compiles them (minutes on a CPU the first time, seconds
    from the compiler's cache after). A compiler that fails is one line where ``compile`` was ``"on"``;
    where it was ``"auto"``, the config and step come back eager. Returns ``(config, step)``."""
    chosen = config.compile
    window_steps = (config.chunk - 1) * (config.substeps if isinstance(config.substeps, int) else 1)
    config = dataclasses.replace(config, compile=compile_choice(chosen, device, total_steps, processes, window_steps))
    step = TrainingStep(config, dt, total_steps, device=device, model=model)
    z, params = batch
    if step.compiled_batch is None or z.shape[0] != step.compiled_batch:
        with torch.no_grad():
            step.loss_module(z[:1], {key: value[:1] for key, value in params.items()})
        return config, step
    weights = [w for w in step.model.parameters() if w.requires_grad]
    torch.autograd.grad(step.loss_module(z, params), weights, allow_unused=True)  # what fails eagerly is no compiler's
    try:
        torch.autograd.grad(step.loss(z, params), weights, allow_unused=True)
    except Exception as error:  # the compiler's failures have many types (no C++ compiler, an unsupported op)
        cause = getattr(error, "inner_exception", None) or error  # BackendCompilerFailed wraps the compiler's
        lines = str(cause).strip().splitlines()
        failure = (f"torch.compile could not compile the training step on {z.device} "
                   f"({type(cause).__name__}: {lines[0][:200] if lines else 'no message'})")
        if chosen == "on":
            raise ValueError(f"--compile on: {failure}; train with --compile off") from None
        log.warning("compile auto: %s; training eagerly", failure)
        config = dataclasses.replace(config, compile="off")
        return config, TrainingStep(config, dt, total_steps, device=device, model=model)
    return config, step


def finite_weights(model: nn.Module) -> bool:
    """Whether every floating-point tensor of ``model``'s state is finite."""
    return all(bool(torch.isfinite(value).all()) for value in model.state_dict().values()
               if value.is_floating_point())


def diverged_error(step: TrainingStep, epoch: int, config: Any, files: Any, largest: float, data_path: str,
                   what: str) -> TrainingDiverged:
    """The one-line error for a run (its ``step``, the ``epoch`` its ``files.last`` holds, the largest |value|
    of its data file) that stopped being finite, naming the likely cause (:func:`_likely_cause`)."""
    kept = (f"kept {files.last} (epoch {epoch}) and {files.best.name}, the last finite checkpoints" if epoch
            else f"kept {files.last} (epoch 0, the initial weights: no epoch completed)")
    return TrainingDiverged(f"training diverged: {what}; {_likely_cause(step, config, largest, data_path)}; {kept}")


def _likely_cause(step: TrainingStep, config: Any, largest: float, data_path: str) -> str:
    """What to change, from what was measured. Data whose squares overflow the training dtype make the
    loss infinite whatever the settings, and so does a kernel bound beyond the dtype's range (``c tanh(x
    / c)`` is then inf times 0): those are named first. A loss that is not finite before the optimiser
    took any step comes from the initial model on this data, not from the step size; after steps, the
    step size (``--lr``) is the likely cause."""
    dtype = DTYPES[config.dtype]
    bound = config.model.kernel_bound
    if largest > math.sqrt(torch.finfo(dtype).max):
        wider = config.dtype == "float32" and largest <= math.sqrt(torch.finfo(torch.float64).max)
        return (f"{data_path} holds values up to {largest:.3g}, whose squares overflow {config.dtype}; "
                + ("train with --dtype float64 or rescale the data" if wider else "rescale the data"))
    if bound is not None and bound > torch.finfo(dtype).max:
        return (f"the kernel bound {bound:g} is beyond {config.dtype}'s range ({torch.finfo(dtype).max:.3g}), so the "
                "kernel inputs become inf times 0; use --kernel-bound auto or a smaller number")
    if not step.optimizer.state:  # Adam never stepped: the initial weights (or every epoch since was undone)
        return ("the initial weights already give it, before any optimiser step (or with every step since undone), "
                "so the learning rate is not the "
                f"cause; check the data's scale (values up to {largest:.3g}) and the model's settings")
    # many sub-steps per window make early gradients large: warm-up and clipping are what steadied them
    unsteady = config.substeps != 1 and not (config.warmup and config.clip_grad)
    steadier = ", or warm up and clip (--warmup 0.05 --clip-grad 1)" if unsteady else ""
    return f"lower --lr (now {config.lr:g}){steadier}"
