"""The training objective: how far a model integrated over windows lands from the data.

Note to the reader: a batch holds windows ``z: (b, chunk, 2, N, D)`` (see :mod:`hamnet.data`). The
model is integrated with torchdiffeq from each window's first state over the window's times, and
the error is taken over the other ``chunk - 1`` states; the first state, where the error is zero by
construction, is left out (the paper's code averaged it in, which scales its reported figures by
``(chunk - 1) / chunk``; :func:`window_mse` gives both). Training minimises it
(:mod:`hamnet.training`) and evaluation reports it (:mod:`hamnet.evaluation`). With ``substeps`` K the
integrator takes K equal steps between consecutive states of a window (data whose states are far apart
in time, such as frames stored every 100 simulation steps) and only the states at the data's times are
compared. With ``weight_floor`` f each particle's error in a window is weighed by the inverse of its own
squared momentum change per step there (the force it feels), floored at ``f**2`` times the window's mean:
a weakly held particle's force is then fitted as closely, relative to its size, as a strongly held one's
(up to ``1 / f**2`` times the weight). On springs, whose failing long rollouts have a nearly free particle
(``k`` close to 0), it barely changed their number (``benchmarks/results/springs_long.md``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from .data import Windows
from .dynamics import HamiltonianField
from .integrate import solver_key
from .stepping import integrate_every

__all__ = ["WindowLoss", "particle_weights", "window_mse", "to_device"]


class WindowLoss(nn.Module):
    """Sum of squared errors of the integrated model over windows, as a module (so DDP can wrap it).

    ``forward(z, params)`` with ``z: (b, chunk, 2, N, D)`` returns the sum over the ``chunk - 1``
    predicted states of every window; the caller divides by the element count it wants. ``substeps``:
    integration steps per interval ``dt`` between the window's states.
    """

    def __init__(self, model: nn.Module, dt: float, method: str, substeps: int = 1, *,
                 positions_only: bool = False, weight_floor: float | None = None) -> None:
        super().__init__()
        if isinstance(substeps, bool) or int(substeps) != substeps or substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
        self.model, self.dt, self.method, self.substeps = model, dt, method, int(substeps)
        self.positions_only, self.weight_floor = positions_only, check_weight_floor(weight_floor)

    def forward(self, z: Tensor, params: dict[str, Tensor], groups: int | None = None) -> Tensor:
        """The sum, or with ``groups`` one sum per equal contiguous group of windows, ``(groups,)``."""
        k = self.substeps
        t = torch.arange((z.shape[1] - 1) * k + 1, dtype=z.dtype, device=z.device) * (self.dt / k)
        # odeint's states, bitwise, without its host reads per step (so torch.compile traces the loop)
        predicted = integrate_every(HamiltonianField(self.model, params), z[:, 0], t, solver_key(self.method), every=k)
        error = predicted[1:].transpose(0, 1) - z[:, 1:]  # (b, chunk - 1, 2, N, D)
        squares = (error[:, :, 0] if self.positions_only else error).square()
        if self.weight_floor is not None:
            weights = particle_weights(z, self.weight_floor)  # (b, N)
            squares = squares * weights.reshape(weights.shape[0], *[1] * (squares.ndim - 3), weights.shape[1], 1)
        return squares.sum() if groups is None else squares.reshape(groups, -1).sum(1)


def particle_weights(z: Tensor, floor: float) -> Tensor:
    """The :class:`WindowLoss` weight of each particle of each window ``z: (b, chunk, 2, N, D)`` -> ``(b, N)``:
    the window's mean squared momentum change per step over the particle's own, floored at ``floor**2``
    times the mean (so at most ``1 / floor**2``); 1 for every particle of a window where nothing moves."""
    own = (z[:, 1:, 1] - z[:, :-1, 1]).square().sum(-1).mean(1)  # (b, N)
    mean = own.mean(-1, keepdim=True)
    still = mean == 0
    weights = mean / (own + floor ** 2 * mean).masked_fill(still, 1.0)
    return weights.masked_fill(still, 1.0)


def check_weight_floor(floor: float | None) -> float | None:
    """``floor`` if it is None or a number in (0, 1]; a one-line ValueError otherwise."""
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, numbers.Real)
                              or not 0 < floor <= 1):
        raise ValueError(f"the particle weight floor must be a number in (0, 1] or None (every particle alike), "
                         f"got {floor!r} (--weight-floor)")
    return None if floor is None else float(floor)


def window_mse(model: Any, windows: Windows, dt: float, *, method: str = "rk4", substeps: int = 1,
               dtype: torch.dtype = torch.float32, batch_size: int = 500,
               positions_only: bool = False) -> dict[str, float]:
    """Mean squared error of the model over ``windows``: ``mse`` excludes each window's initial
    state, ``mse_with_initial`` includes it (the reference implementation's convention).
    ``positions_only``: the error of the positions alone (the N-body benchmarks' metric).

    Runs under ``torch.no_grad()``: the field still differentiates ``H`` locally for its forces,
    but no graph through the weights is built.
    """
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive number, got {dt!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    loss = WindowLoss(model, dt, method, substeps, positions_only=positions_only)
    total, count = 0.0, 0
    with torch.no_grad():
        for index in windows.batches(batch_size):
            z, params = to_device(windows[index], dtype, _device_of(model))
            total += float(loss(z, params))
            count += z[:, 1:].numel() // (2 if positions_only else 1)
    chunk = windows.chunk
    return {"mse": total / count, "mse_with_initial": total / count * (chunk - 1) / chunk}


def _device_of(model: Any) -> torch.device:
    weights = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return weights.device if weights is not None else torch.device("cpu")


def to_device(batch: tuple[Tensor, dict[str, Tensor]], dtype: torch.dtype,
              device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    """A batch ``(z, params)`` of windows in ``dtype`` on ``device``."""
    z, params = batch
    return z.to(device=device, dtype=dtype), {k: v.to(device=device, dtype=dtype) for k, v in params.items()}
