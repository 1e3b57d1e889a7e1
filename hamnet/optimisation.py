"""The optimiser step of training: Adam, a learning-rate schedule with optional warm-up, gradient clipping.

Note to the reader: :class:`TrainingStep` is what :func:`hamnet.training.train` applies to every batch of
windows, public so that benchmarks time exactly it. The schedule is a cosine decay of the learning rate
to 0 over all steps; with ``warmup`` the first fraction of those steps instead rises linearly from
``lr / warmup_steps`` to ``lr`` and the cosine runs over the rest. Warm-up and clipping are for
training that integrates many steps per window (``substeps``), where early gradients through the
learned flow are large and a full-size first step can throw the weights where the loss is not finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .loss import WindowLoss
from .models import build_model

__all__ = ["DTYPES", "NonFiniteLoss", "TrainingStep", "learning_rate_factor"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
    it raises :class:`NonFiniteLoss` with nothing changed. Returns the scaled loss.
    """

    def __init__(self, config: Any, dt: float, total_steps: int, *, device: str | torch.device = "cpu",
                 model: nn.Module | None = None) -> None:
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
        self.loss_module: nn.Module = WindowLoss(self.model, dt, config.method, config.substeps)

    def __call__(self, z: torch.Tensor, params: dict[str, torch.Tensor], *, scale: float,
                 finite: Callable[[float], bool] = math.isfinite) -> float:
        loss = self.loss_module(z, params) * scale
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the batch's one host synchronisation, after the backward pass is queued (on a GPU the check
        # then waits for work already running instead of stalling the queue before the backward)
        value = float(loss.detach())
        if not finite(value):
            raise NonFiniteLoss(value)
        if self.clip_grad is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        return value
