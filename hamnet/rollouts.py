"""Long rollouts of a true system or a learned model, batched and memory-bounded.

Note to the reader: states are ``z: (B, 2, N, D)`` (positions, momenta) and a rollout returns the
trajectory ``(B, steps + 1, 2, N, D)`` on the exact grid ``t_j = j * dt``. A true system from
``systems`` and a learned model from ``hamnet.models`` go through the same call.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .dynamics import CompiledDynamics, HamiltonianField
from .integrate import solver_key
from .io import Trajectories
from .provenance import protocol_name
from .region import check_region, region_exits
from .models import MODELS
from .resources import check_memory
from .stepping import integrate_every, steps_on_the_grid
from .version import __version__

Params = dict[str, Tensor]

__all__ = ["Rollout", "RolloutError", "rollout", "rollout_systems", "default_method", "predicted_trajectories", "model_label", "trained_substeps",
           "DEFAULT_CHUNK_STEPS",
           "DIVERGENCE_FACTOR"]

#: a system whose largest coordinate grows past this multiple of its initial largest coordinate has
#: diverged. Bounded motion (the systems here conserve energy) never comes near it, and even a body
#: escaping at unit speed from unit distance needs a million time units to reach it, while an
#: unstable learned model that has left its data grows exponentially and passes it within steps.
DIVERGENCE_FACTOR = 1e6

#: steps integrated per odeint call; bounds work lost to a late non-finite check and keeps the
#: per-call grid small, while the extra force evaluation per chunk (splitting methods) stays negligible
DEFAULT_CHUNK_STEPS = 1000


class RolloutError(ValueError):
    """A rollout became non-finite or diverged. ``step`` is the first bad step, ``systems`` the batch
    indices bad there, and ``trajectory`` the states up to and including that step."""

    def __init__(self, message: str, step: int, systems: list[int], trajectory: Tensor) -> None:
        super().__init__(message)
        self.step = step
        self.systems = systems
        self.trajectory = trajectory


def _as_dtype(model_or_system: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """The model in ``dtype`` on ``device``: the caller's own object when nothing changes, else a copy."""
    if not isinstance(model_or_system, nn.Module):
        return model_or_system  # systems compute in the dtype of their inputs
    tensors = list(model_or_system.parameters()) + list(model_or_system.buffers())
    if all(t.dtype == dtype and t.device == device for t in tensors if t.is_floating_point()):
        return model_or_system
    return copy.deepcopy(model_or_system).to(dtype=dtype, device=device)


@dataclass(frozen=True)
class Rollout:
    """A batch rollout in which some systems may have diverged.

    ``z: (B, steps + 1, 2, N, D)``, finite everywhere; ``diverged_at: (B,)`` int64, the first step at
    which a system stopped being finite or grew past ``DIVERGENCE_FACTOR`` times its initial size, and
    -1 for a system that stayed healthy. A diverged system's states from that step on are its last
    healthy state, held (look at ``diverged_at`` before using them).
    """

    z: Tensor
    diverged_at: Tensor

    @property
    def diverged(self) -> list[int]:
        """Indices of the systems that diverged, in the order they did."""
        steps = self.diverged_at.tolist()
        return sorted((b for b, step in enumerate(steps) if step >= 0), key=lambda b: (steps[b], b))


def rollout(
    model_or_system: Any,
    z0: Tensor,
    params: Params,
    steps: int,
    dt: float,
    method: str = "leapfrog",
    dtype: torch.dtype = torch.float64,
    *,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    options: dict | None = None,
    keep_diverged: bool = False,
    substeps: int | None = None,
    compile: bool = False,
) -> Tensor:
    """Integrate ``steps`` steps of size ``dt`` from ``z0``: the states of torchdiffeq's ``odeint`` (a
    fixed-step method steps in :func:`hamnet.stepping.integrate_fixed_grid`'s loop, bit for bit the same).

    ``model_or_system`` follows the protocol of :mod:`hamnet.dynamics`; ``z0: (B, 2, N, D)``;
    ``params``: tensors with leading axis ``B``; ``method``: a name in
    :data:`hamnet.integrate.INTEGRATORS` (leapfrog, yoshida4/6/8, implicit_midpoint, gauss4, rk4,
    dopri5, ... or one you registered); ``options`` go to ``odeint`` (e.g. ``{"max_iters": 200}`` for
    an implicit method). Returns ``(B, steps + 1, 2, N, D)`` in ``dtype`` on ``z0``'s device, detached.

    The state, the parameters and the model are cast to ``dtype``; a model whose weights have
    another dtype is copied first, never changed in place. Nothing keeps an autograd graph: the
    rollout runs under ``torch.no_grad()`` and the vector field enables autograd locally only to
    differentiate ``H``. Steps are integrated in chunks of ``chunk_steps`` (an adaptive method with
    ``substeps`` K: ``chunk_steps // K``); memory is the output plus one chunk. Raises
    :class:`RolloutError` naming the first step and the systems whose state is no longer finite or
    has grown past ``DIVERGENCE_FACTOR`` times its initial largest coordinate (diverged);
    ``keep_diverged=True`` keeps integrating such a system, for studies of divergence (a non-finite
    state still raises). :func:`rollout_systems` instead delivers the
    systems that stay healthy and says which diverged. ``substeps`` K: each step of ``dt`` is taken as
    K steps of ``dt / K`` (the output is still every ``dt``); None: the model's ``trained_substeps``
    (:func:`trained_substeps`: those of its training run, for a model read from a checkpoint), else 1.
    ``compile=True``: the model's forces (or vector field) run compiled (:class:`hamnet.dynamics.CompiledDynamics`):
    each step the eager step to round-off (over a long rollout of a chaotic system round-off grows, as between
    any two machines), faster once compiled; the first compilation takes tens of seconds.
    """
    return _integrate(model_or_system, z0, params, steps, dt, method, dtype, chunk_steps, options, keep_diverged,
                      stop_at_divergence=True, substeps=substeps, compile=compile).z


def rollout_systems(
    model_or_system: Any,
    z0: Tensor,
    params: Params,
    steps: int,
    dt: float,
    method: str = "leapfrog",
    dtype: torch.dtype = torch.float64,
    *,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    options: dict | None = None,
    keep_diverged: bool = False,
    substeps: int | None = None,
    compile: bool = False,
) -> Rollout:
    """:func:`rollout` for a batch in which some systems may diverge: each diverging system is taken out
    of the batch (at the end of the chunk in which it diverged; a diverging system's non-finite values
    never reach the others, whose trajectories are those they would have alone, with every fixed-step
    method; an adaptive one shares its step size across the batch) and held at its last
    healthy state, and the rest are integrated to the end. Returns a :class:`Rollout`; arguments as
    :func:`rollout` (``keep_diverged=True``: only a non-finite state counts as diverged)."""
    return _integrate(model_or_system, z0, params, steps, dt, method, dtype, chunk_steps, options, keep_diverged,
                      stop_at_divergence=False, substeps=substeps, compile=compile)


def check_batch(z0: Any, params: Any) -> None:
    """Refuse, naming the argument, a start state that is not a ``(B, 2, N, D)`` tensor or parameters that
    are not a dict of tensors with ``B`` first: before any work, in one line."""
    if not isinstance(z0, Tensor):
        raise TypeError(f"z0 must be a torch.Tensor of shape (B, 2, N, D), got {type(z0).__name__} "
                        "(torch.as_tensor(array) converts a NumPy array)")
    if z0.dim() != 4 or z0.shape[1] != 2:
        raise ValueError(f"z0 must have shape (B, 2, N, D), got {tuple(z0.shape)}")
    if not isinstance(params, Mapping) or not all(isinstance(v, Tensor) for v in params.values()):
        raise TypeError("params must be a dict of torch.Tensors (per system (B,) or per particle (B, N)), got "
                        f"{type(params).__name__}")
    wrong = sorted(name for name, v in params.items() if v.dim() == 0 or v.shape[0] != z0.shape[0]
                   or (v.dim() == 2 and v.shape[1] != z0.shape[2]) or v.dim() > 2)
    if wrong:
        raise ValueError(f"params {wrong} do not fit z0 of {z0.shape[0]} systems of {z0.shape[2]} particles: each must "
                         f"have shape ({z0.shape[0]},) or ({z0.shape[0]}, {z0.shape[2]})")


def _integrate(model_or_system, z0, params, steps, dt, method, dtype, chunk_steps, options, keep_diverged,
               stop_at_divergence: bool, substeps: int | None = None, compile: bool = False) -> Rollout:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real):
        raise TypeError(f"dt must be a number, got {dt!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype!r}")
    if not isinstance(method, str):
        raise TypeError(f"method must be an integrator's name such as 'leapfrog', got {method!r}")
    check_batch(z0, params)
    substeps = trained_substeps(model_or_system) if substeps is None else substeps
    if isinstance(substeps, bool) or not isinstance(substeps, numbers.Integral) or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    k = int(substeps)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive finite number, got {dt}")
    if chunk_steps < 1:
        raise ValueError(f"chunk_steps must be at least 1, got {chunk_steps}")
    if z0.device.type == "cpu":  # before allocating the trajectory: a size that cannot fit is refused in one line
        itemsize = torch.finfo(dtype).bits // 8
        check_memory(z0.shape[0] * (int(steps) + 1) * z0[0].numel() * itemsize, f"a rollout of {int(steps)} steps",
                     "use fewer steps or systems")
    device = z0.device
    z0 = z0.detach().to(dtype)
    params = {name: (v.detach().to(device=device, dtype=dtype) if v.is_floating_point() else v.detach().to(device))
              for name, v in params.items()}
    key = solver_key(method)  # an unknown method fails before any work
    model = _as_dtype(model_or_system, dtype, device)
    if compile:
        model = CompiledDynamics(model)

    trajectory = torch.empty(z0.shape[0], int(steps) + 1, *z0.shape[1:], dtype=dtype, device=device)
    trajectory[:, 0] = z0
    _raise_if_unhealthy(trajectory, 0, 0, None)
    initial_size = z0.flatten(1).abs().amax(-1).clamp_min(torch.finfo(dtype).tiny)
    limit = None if keep_diverged else DIVERGENCE_FACTOR * initial_size
    diverged_at = torch.full((z0.shape[0],), -1, dtype=torch.int64, device=device)
    active = torch.arange(z0.shape[0], device=device)
    done = 0
    # odeint (adaptive methods, grid-changing options) holds every fine state of a chunk: with k sub-steps a
    # chunk is cut to chunk_steps // k output steps (at least one), so it holds about chunk_steps fine states
    per_chunk = chunk_steps if steps_on_the_grid(key, options) else max(1, chunk_steps // k)
    with torch.no_grad():
        while done < steps and active.numel():
            n = min(per_chunk, int(steps) - done)
            # fields are autonomous, so each chunk runs on its own grid from 0: steps t1 - t0 then
            # differ from dt by round-off of times up to chunk_steps * dt, not of the whole horizon
            t = torch.arange(n * k + 1, dtype=dtype, device=device) * (dt / k)
            field = HamiltonianField(model, {name: v[active] for name, v in params.items()})
            try:  # (n + 1, b, 2, N, D): every k-th state of the fine grid
                states = integrate_every(field, trajectory[active, done], t, key, options, every=k)
            except AssertionError as error:  # torchdiffeq's adaptive solvers assert when the step size underflows
                raise RolloutError(f"the {method} rollout failed between steps {done} and {done + n}: {error}; a "
                                   "system is likely diverging: a fixed-step method (leapfrog, rk4) reports which",
                                   step=done, systems=[], trajectory=trajectory[:, : done + 1].clone()) from error
            trajectory[active, done + 1: done + n + 1] = states[1:].transpose(0, 1)
            if stop_at_divergence:
                _raise_if_unhealthy(trajectory, done + 1, done + n, limit)
            else:
                first_bad = _first_unhealthy(trajectory[active, done + 1: done + n + 1],
                                             None if limit is None else limit[active])
                bad = first_bad >= 0
                diverged_at[active[bad]] = done + 1 + first_bad[bad]
                active = active[~bad]
            done += n
    for b in (diverged_at >= 0).nonzero().flatten().tolist():  # held at the last healthy state
        step = int(diverged_at[b])
        trajectory[b, step:] = trajectory[b, step - 1]
    return Rollout(trajectory, diverged_at)


def _first_unhealthy(states: Tensor, limit: Tensor | None) -> Tensor:
    """Per system, the index of the first state in ``states: (b, steps, 2, N, D)`` that is not finite or
    (``limit: (b,)`` given) whose largest coordinate has passed ``limit``; -1 where all are healthy."""
    flat = states.flatten(2)
    unhealthy = ~torch.isfinite(flat).all(-1)
    if limit is not None:
        unhealthy |= flat.abs().amax(-1) > limit.unsqueeze(-1)  # NaN compares False: counted above
    first = unhealthy.int().argmax(-1)
    return torch.where(unhealthy.any(-1), first, torch.full_like(first, -1))


def _raise_if_unhealthy(trajectory: Tensor, first: int, last: int, limit: Tensor | None) -> None:
    """Raise :class:`RolloutError` at the first step in ``first..last`` where a system's state is not
    finite or (``limit: (B,)`` given) its largest coordinate has passed ``limit``."""
    first_bad = _first_unhealthy(trajectory[:, first: last + 1], limit)
    if bool((first_bad < 0).all()):
        return
    step = first + int(first_bad[first_bad >= 0].min())
    systems = (first_bad == step - first).nonzero().flatten().tolist()
    finite = bool(torch.isfinite(trajectory[systems, step]).all())
    what = (f"grew past {DIVERGENCE_FACTOR:.0e} times its initial size (diverged)" if finite
            else "became non-finite")
    shown = ", ".join(map(str, systems[:10])) + (", ..." if len(systems) > 10 else "")
    raise RolloutError(
        f"the rollout {what} at step {step} in system {systems[0]} ({len(systems)} of {trajectory.shape[0]} "
        f"systems: {shown}); try a smaller dt, float64, or check the model",
        step=step,
        systems=systems,
        trajectory=trajectory[:, : step + 1].clone(),
    )


def trained_substeps(model: Any) -> int:
    """The integration steps per stored interval ``model`` was trained with: ``model.trained_substeps``
    (set by :func:`hamnet.checkpoint.model_from_checkpoint`), else 1 (a true system, a fresh model)."""
    return getattr(model, "trained_substeps", 1)


def default_method(model: Any) -> str:
    """Leapfrog for separable Hamiltonians; rk4 for the rest."""
    return "leapfrog" if getattr(model, "separable", False) else "rk4"


def predicted_trajectories(model: Any, data: Trajectories, *, model_config: dict, steps: int | None = None,
                           dt: float | None = None, method: str | None = None,
                           dtype: torch.dtype = torch.float64, options: dict | None = None, keep_diverged: bool = False,
                           sources: Mapping[str, Any] | None = None, substeps: int | None = None,
                           region: Mapping[str, Any] | None = None, compile: bool = False) -> Trajectories:
    """Roll ``model`` out from every initial state of ``data`` and package the result as a
    trajectory file's contents (schema 1): the system of ``data`` in ``meta`` (so true energy can
    be measured; the name of its benchmark protocol too, if any, as ``data_protocol``), plus the model
    (``model_config``, a label), integrator and dtype, and ``sources``: what the rollout came from
    (:func:`hamnet.checkpoint.made_from`: the checkpoint with its sha256, the data with its sha256;
    without them ``meta["checkpoint"]`` is None, a model that no file holds).
    ``steps`` and ``dt`` default to the data's own (``meta["compiled"]`` records ``compile=True``); ``options``,
    ``keep_diverged``, ``substeps`` and ``compile`` go to
    :func:`rollout_systems` (``meta["substeps"]`` records the last). ``region``: the model's training
    region (:func:`hamnet.region.data_region`, recorded in its checkpoint); with it, ``meta["left_region"]``
    lists the systems that left it (``{"system", "step", "what"}`` each, by step) and ``meta["region"]``
    keeps it. Systems that diverge are listed in ``meta["diverged"]`` (``{"system",
    "step"}`` each, in the order they diverged; their states from that step on are held at the last
    healthy one) and the others delivered; :class:`RolloutError` only when every system diverged."""
    steps = data.n_times - 1 if steps is None else steps
    dt = float(data.meta["dt"]) if dt is None else dt
    method = method or default_method(model)
    substeps = trained_substeps(model) if substeps is None else substeps
    result = rollout_systems(model, data.z[:, 0], data.params, steps, dt, method=method, dtype=dtype,
                             options=options, keep_diverged=keep_diverged, substeps=substeps, compile=compile)
    diverged = [{"system": b, "step": int(result.diverged_at[b])} for b in result.diverged]
    if diverged and len(diverged) == data.n_systems:
        first = diverged[0]
        raise RolloutError(f"every one of the {data.n_systems} systems diverged, the first ({first['system']}) at "
                           f"step {first['step']}; try a smaller dt, float64, or check the model",
                           step=first["step"], systems=[d["system"] for d in diverged], trajectory=result.z)
    meta = {"system": data.meta["system"], "system_settings": data.meta["system_settings"], "dt": dt,
            "hamnet_version": __version__,
            **({"data_protocol": protocol} if (protocol := protocol_name(data)) else {}),
            "steps": steps, "model": model_label(model_config), "model_config": model_config, "method": method,
            "substeps": int(substeps), "dtype": str(dtype).removeprefix("torch."), "checkpoint": None,
            **({"compiled": True} if compile else {}),
            "diverged": diverged, "divergence_factor": None if keep_diverged else DIVERGENCE_FACTOR,
            **(sources or {})}
    region = check_region(region) if region is not None else None
    if region is not None:
        first, reasons = region_exits(result.z, region)
        left = sorted((b for b in range(data.n_systems) if first[b] >= 0), key=lambda b: (int(first[b]), b))
        meta |= {"region": region, "left_region": [{"system": b, "step": int(first[b]), "what": reasons[b]}
                                                   for b in left]}
    t = torch.arange(steps + 1, dtype=torch.float64) * dt
    return Trajectories(t, result.z.double().cpu(), data.params, meta)


def model_label(config: dict) -> str:
    """A short name for a model config as stored in checkpoints, e.g. ``hlieconv SO2``."""
    return MODELS.get(config["name"]).label(config)
