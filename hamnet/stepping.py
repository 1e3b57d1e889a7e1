"""Fixed-grid integration for long rollouts, without ``odeint``'s per-step bookkeeping.

Note to the reader: the state is ``y0: (B, 2, N, D)`` and ``func`` a vector field ``func(t, y)``
(:class:`hamnet.dynamics.HamiltonianField`); ``t: (T,)`` is the grid, one step per interval.

torchdiffeq's fixed-grid loop (and hamnet's :class:`hamnet.integrate._CarryingSolver`, which follows
it) asks after every step whether the step has reached the next output time (``t1 >= t[j]``,
``t == t1``): comparisons of tensors whose answer Python must read, so a host round trip per step on a
GPU, and the whole fine grid is kept when only every K-th state is wanted (a rollout with
``substeps`` K). When the output times are the grid itself, the answer is known in advance: the
state after step ``j`` is the output at ``t[j]``. :func:`integrate_fixed_grid` runs that loop
directly, with the solver ``odeint`` would build (the same wrapped field, the same options) and its
own step function, on the same step sizes ``t[j + 1] - t[j]``, so the states are bitwise those of
``odeint(func, y0, t, method=key)[::every]``; no tensor is read on the host inside the loop.
Options that change the grid or put outputs between grid points (``GRID_OPTIONS``) are ``odeint``'s
business: :func:`steps_on_the_grid` says when this loop applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint
from torchdiffeq._impl.misc import _PerturbFunc, _all_callback_names, _check_inputs, _null_callback
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from .integrate import _CarryingSolver

__all__ = ["GRID_OPTIONS", "steps_on_the_grid", "integrate_fixed_grid", "integrate_every"]

#: ``odeint`` options of fixed-grid solvers that change the grid or interpolate between its points
GRID_OPTIONS = frozenset({"step_size", "grid_constructor", "interp", "perturb"})


def steps_on_the_grid(key: str, options: Mapping[str, Any] | None) -> bool:
    """Whether the solver ``key`` of torchdiffeq's table steps on a fixed grid that ``options`` leave
    as the output times, so that :func:`integrate_fixed_grid` gives ``odeint``'s states exactly."""
    solver = SOLVERS.get(key)
    return (isinstance(solver, type) and issubclass(solver, FixedGridODESolver)
            and not GRID_OPTIONS & set(options or {}))


def integrate_fixed_grid(func: Any, y0: Tensor, t: Tensor, key: str, options: Mapping[str, Any] | None = None,
                         *, every: int = 1) -> Tensor:
    """The states at ``t[0], t[every], t[2 every], ...`` of the fixed-grid solver ``key``, one step per
    interval of ``t``: ``(len(t) - 1) // every + 1`` states, stacked on a new leading axis.

    ``y0: (B, 2, N, D)``; ``t: (T,)`` increasing, with ``T - 1`` a multiple of ``every``. Bitwise
    ``odeint(func, y0, t, method=key, options=options)[::every]`` (which needs
    :func:`steps_on_the_grid`), keeping only the states returned.
    """
    if not steps_on_the_grid(key, options):
        raise ValueError(f"{key!r} with options {sorted(options or {})} does not step on the output grid; "
                         "use odeint")
    if every < 1 or (len(t) - 1) % every:
        raise ValueError(f"the grid's {len(t) - 1} steps are not a whole number of {every}-step outputs")
    if torch.compiler.is_compiling():
        solver = _traced_solver(func, y0, key, options)
    else:  # odeint's own preparation, with its default tolerances (which fixed-grid solvers ignore)
        _, func, y0, t, rtol, atol, key, options, _, reversed_ = _check_inputs(func, y0, t, 1e-7, 1e-9, key, options,
                                                                               None, SOLVERS)
        if reversed_:
            raise ValueError("integrate_fixed_grid integrates forward in time: t must increase")
        solver = SOLVERS[key](func=func, y0=y0, rtol=rtol, atol=atol, **options)
    states = torch.empty((len(t) - 1) // every + 1, *y0.shape, dtype=y0.dtype, device=y0.device)
    states[0] = y0
    step = _carrying_step(solver) if isinstance(solver, _CarryingSolver) else _plain_step(solver)
    sizes = t[1:] - t[:-1]  # elementwise, so each is the t1 - t0 odeint forms at that step
    y = y0
    for j in range(len(t) - 1):
        solver.func.callback_step(t[j], y, sizes[j])
        y = step(t[j], sizes[j], t[j + 1], y)
        if (j + 1) % every == 0:
            states[(j + 1) // every] = y
    return states


def _traced_solver(func: Any, y0: Tensor, key: str, options: Mapping[str, Any] | None) -> FixedGridODESolver:
    """The solver ``_check_inputs`` would build for a tensor state and increasing times, without its checks,
    which read ``t`` on the host (a graph break per check inside ``torch.compile``): ``func`` wrapped to take
    ``perturb`` as odeint wraps it, with no callbacks but what ``func`` has."""
    wrapped = _PerturbFunc(func)
    for name in _all_callback_names:
        setattr(wrapped, name, getattr(func, name, _null_callback))
    return SOLVERS[key](func=wrapped, y0=y0, rtol=1e-7, atol=1e-9, **dict(options or {}))


def _carrying_step(solver: _CarryingSolver):
    carry = solver._initial_carry(solver.y0)

    def step(t0: Tensor, dt: Tensor, t1: Tensor, y: Tensor) -> Tensor:
        nonlocal carry
        y, carry = solver._step(t0, dt, y, carry)
        return y

    return step


def _plain_step(solver: FixedGridODESolver):
    def step(t0: Tensor, dt: Tensor, t1: Tensor, y: Tensor) -> Tensor:
        dy, _ = solver._step_func(solver.func, t0, dt, t1, y)
        return y + dy

    return step


def integrate_every(func: Any, y0: Tensor, t: Tensor, key: str, options: Mapping[str, Any] | None = None,
                    *, every: int = 1) -> Tensor:
    """The states at ``t[0], t[every], ...``: :func:`integrate_fixed_grid` where it applies, else
    ``odeint`` over the whole grid, thinned."""
    if steps_on_the_grid(key, options):
        return integrate_fixed_grid(func, y0, t, key, options, every=every)
    return odeint(func, y0, t, method=key, options=options)[::every]
