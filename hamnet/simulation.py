"""Accurate ground-truth trajectories of a system's true Hamiltonian.

Note to the reader: states are ``z: (B, 2, N, D)`` (positions, momenta) and trajectories
``(B, T, 2, N, D)`` with ``T = steps + 1`` points on the exact grid ``t_j = j * dt``.

Method: every output step ``dt`` is split into ``substeps`` equal sub-steps ``h``, and each
sub-step is Yoshida's eighth-order symmetric composition of 15 Stoermer-Verlet (kick-drift-kick)
steps (H. Yoshida, Phys. Lett. A 150, 262 (1990), solution D). The method is symplectic and
time-reversible, so energy errors stay bounded instead of drifting; compositions of kicks and
drifts conserve total linear momentum and, for central pair forces, angular momentum, to round-off.
Each stage costs one force evaluation (the force after a drift is reused by the next kick).
The coefficients and the step are :mod:`hamnet.composition`'s, shared with the torchdiffeq
solvers of :mod:`hamnet.integrate`; here the step runs in place on plain tensors, for speed.

The sub-step is chosen from the system's shortest dynamical time ``tau`` (``system.timescale``):
``h <= STEP_FRACTION * tau``, which bounds the per-step phase error of the fastest motion; the
energy errors this gives are measured on every generated file and written to its ``meta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from systems import HamiltonianSystem, Params

from .composition import COMPOSITIONS, Composition
from .diagnostics import conservation_report
from .io import Trajectories
from .version import __version__

#: the composition (a name in :data:`hamnet.composition.COMPOSITIONS`) ground truth uses by default
METHOD = "yoshida8"
#: sub-step as a fraction of the system's shortest dynamical time; chosen so that springs and
#: nbody meet the accuracy targets in tests/test_simulation.py with a margin.
STEP_FRACTION = 0.1
#: systems integrated together; bounds memory for large batches without changing the results
SYSTEMS_PER_BATCH = 2048


@dataclass(frozen=True)
class SimulationSettings:
    """How a ground-truth trajectory was integrated (recorded in the file's ``meta``)."""

    method: str
    order: int
    step_fraction: float
    substeps_min: int
    substeps_max: int

    def as_meta(self) -> dict:
        return {
            "integrator": self.method,
            "order": self.order,
            "step_fraction": self.step_fraction,
            "substeps_min": self.substeps_min,
            "substeps_max": self.substeps_max,
        }


def choose_substeps(system: HamiltonianSystem, params: Params, dt: float,
                    step_fraction: float = STEP_FRACTION) -> Tensor:
    """Sub-steps per output step for each system, ``(B,)`` int64: the fewest with
    ``dt / substeps <= step_fraction * timescale``. Each system's count depends on its own
    parameters alone, so a trajectory does not depend on which other systems share the batch."""
    if not hasattr(system, "timescale"):
        raise ValueError(f"{type(system).__name__} has no timescale(params); give substeps explicitly")
    tau = system.timescale(params)
    return torch.ceil(dt / (step_fraction * tau)).clamp_min(1).to(torch.int64)


def simulate(
    system: HamiltonianSystem,
    z0: Tensor,
    params: Params,
    *,
    steps: int,
    dt: float,
    substeps: int | None = None,
    method: str = METHOD,
    systems_per_batch: int = SYSTEMS_PER_BATCH,
    progress: bool = False,
) -> tuple[Tensor, Tensor, SimulationSettings]:
    """Integrate the true Hamiltonian of ``system`` from ``z0: (B, 2, N, D)`` in float64.

    Returns ``t: (steps + 1,)``, ``z: (B, steps + 1, 2, N, D)`` and the settings used.
    ``substeps=None`` chooses them per system (:func:`choose_substeps`). Results do not depend on
    ``systems_per_batch`` or on the other systems in the batch, only memory and speed do.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive finite number, got {dt}")
    if method not in COMPOSITIONS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(COMPOSITIONS)}")
    z0 = z0.to(torch.float64)
    params = {k: v.to(torch.float64) for k, v in params.items()}
    n_systems = z0.shape[0]
    if substeps is None:
        per_system = choose_substeps(system, params, dt)
    else:
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        per_system = torch.full((n_systems,), int(substeps), dtype=torch.int64)
    composition = COMPOSITIONS[method]
    settings = SimulationSettings(method=method, order=composition.order, step_fraction=STEP_FRACTION,
                                  substeps_min=int(per_system.min()), substeps_max=int(per_system.max()))

    z = torch.empty((n_systems, steps + 1, *z0.shape[1:]), dtype=torch.float64, device=z0.device)
    z[:, 0] = z0
    with tqdm(total=n_systems * steps, disable=not progress, unit="system-step", unit_scale=True) as bar:
        for count in per_system.unique().tolist():
            group = (per_system == count).nonzero().squeeze(-1)
            for rows in group.split(systems_per_batch):
                integrate = _integrate_linear if system.linear else _integrate
                z[rows] = integrate(system, z0[rows], {k: v[rows] for k, v in params.items()},
                                    steps, dt / count, count, composition, bar)
    t = torch.arange(steps + 1, dtype=torch.float64, device=z0.device) * dt
    return t, z, settings


def _integrate(system, z0, params, steps, h, substeps, composition: Composition, bar) -> Tensor:
    """``(b, steps + 1, 2, N, D)`` for one chunk of systems sharing a sub-step ``h``."""
    velocity, force_of = system.velocity_function(params), system.force_function(params)
    out = torch.empty((z0.shape[0], steps + 1, *z0.shape[1:]), dtype=z0.dtype, device=z0.device)
    out[:, 0] = z0
    q, p = z0[:, 0].clone(), z0[:, 1].clone()
    force = force_of(q)
    for step in range(1, steps + 1):
        for _ in range(substeps):
            q, p, force = composition.step(q, p, force, h, velocity, force_of, in_place=True)
        out[:, step, 0], out[:, step, 1] = q, p
        bar.update(q.shape[0])
    return out


def _integrate_linear(system, z0, params, steps, h, substeps, composition: Composition, bar) -> Tensor:
    """:func:`_integrate` for systems with linear forces, at a fraction of the cost.

    With linear forces every kick and drift is linear, so one output step of the composition is a
    matrix ``P: (b, 2N, 2N)`` acting alike on each spatial axis. ``P`` is found by taking one step
    from each of the ``2N`` unit states (one axis suffices); the trajectory is then ``P^j z0``, the
    same method's result up to round-off.
    """
    b, _, n, dim = z0.shape
    width = 2 * n
    basis = torch.eye(width, dtype=z0.dtype, device=z0.device).reshape(width, 2, n, 1)
    basis = basis.repeat(b, 1, 1, 1)
    repeated = {k: v.repeat_interleave(width, dim=0) for k, v in params.items()}
    silent = tqdm(disable=True)
    images = _integrate(system, basis, repeated, 1, h, substeps, composition, silent)[:, 1]
    step_matrix = images.reshape(b, width, width).transpose(1, 2)  # columns are images of unit states
    out = torch.empty((b, steps + 1, *z0.shape[1:]), dtype=z0.dtype, device=z0.device)
    state = z0.reshape(b, width, dim)
    out[:, 0] = z0
    for step in range(1, steps + 1):
        state = torch.bmm(step_matrix, state)
        out[:, step] = state.reshape(b, 2, n, dim)
        bar.update(b)
    return out


def generate(
    system: HamiltonianSystem,
    *,
    n_systems: int,
    steps: int,
    dt: float,
    seed: int,
    system_spec: str | None = None,
    progress: bool = False,
) -> Trajectories:
    """Sample ``n_systems`` systems and their initial states from ``seed`` and simulate them.

    The same arguments give the same trajectories bit for bit. ``meta`` records the system, its
    settings, the seed, the integrator and the largest energy and momentum errors measured on the
    result. ``system_spec`` is how to find the system again (a registered name or
    ``"file.py:Class"``); it defaults to ``system.name``.
    """
    if n_systems < 1:
        raise ValueError(f"n_systems must be >= 1, got {n_systems}")
    generator = torch.Generator().manual_seed(seed)
    params = system.sample_params(n_systems, generator)
    z0 = system.sample_state(params, generator)
    t, z, settings = simulate(system, z0, params, steps=steps, dt=dt, progress=progress)
    report = conservation_report(z, system.hamiltonian, params)
    meta = {
        "system": system_spec or system.name,
        "system_settings": system.settings(),
        "dt": dt,
        "steps": steps,
        "seed": seed,
        "hamnet_version": __version__,
        **settings.as_meta(),
        "max_relative_energy_error": float(report["energy"].max()),
        "max_relative_linear_momentum_change": float(report["linear_momentum"].max()),
        "max_relative_angular_momentum_change": float(report["angular_momentum"].max()),
    }
    return Trajectories(t, z, params, meta)
