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

Nothing runs that cannot finish: before anything large is sampled or allocated,
:func:`estimate_generation` says what a run will cost (memory and work, from its sizes alone) and
:func:`check_generation` refuses what cannot fit in memory or would take more than
:data:`MAX_HOURS`; sub-step counts above :data:`MAX_SUBSTEPS` are refused unless the caller raises
the limit. Nothing is silent: a trajectory or a measured energy that is not finite is an error,
never a file.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .systems import HamiltonianSystem, Params

from .composition import COMPOSITIONS, Composition
from .diagnostics import conservation_series, energy, relative_change
from .io import Trajectories
from .resources import available_memory, format_bytes
from .version import __version__

#: the composition (a name in :data:`hamnet.composition.COMPOSITIONS`) ground truth uses by default
METHOD = "yoshida8"
#: sub-step as a fraction of the system's shortest dynamical time; chosen so that springs and
#: nbody meet the accuracy targets in tests/test_simulation.py with a margin.
STEP_FRACTION = 0.1
#: systems integrated together; bounds memory for large batches without changing the results
SYSTEMS_PER_BATCH = 2048
#: the most sub-steps per output step a run takes unless the caller raises it (``max_substeps``).
#: The built-in systems at their defaults need at most 5 (springs, dt = 0.01) and 4 (nbody,
#: softening 0.1), and under 50 with 1000 particles. 10,000 sub-steps are 150,000 force
#: evaluations per output step, seconds per output step even for one small system: a count above
#: it comes from a mistaken dt, softening or timescale, and is refused rather than left at 0%.
MAX_SUBSTEPS = 10_000
#: pair evaluations per second assumed by run-time estimates. One CPU thread does about 2e7
#: (N-body, any batch size); assuming a several-core rate makes estimates err short, so that only
#: runs that are surely absurd are refused.
PAIR_EVALUATIONS_PER_SECOND = 1e8
#: the fixed cost of one force evaluation of a batch, in seconds (torch's per-operation overhead;
#: one CPU thread measures about 20 microseconds for a tiny batch): what makes long runs of few
#: systems slow whatever their size
FORCE_CALL_SECONDS = 5e-6
#: runs estimated to take longer than this are refused (generate them in parts, with several seeds)
MAX_HOURS = 24.0
#: float64 arrays of ``b x N x N x D`` alive at once while a batch's pair forces are evaluated
#: (differences, their squares, the weighted differences, one more for autograd's saved inputs)
PAIR_TEMPORARIES = 4
#: float64 arrays of ``b x 2N x N x N`` alive at once while the linear fast path builds its step
#: matrix (every unit state carries its system's stiffness while it is formed)
LINEAR_TEMPORARIES = 3
_FLOAT64_BYTES = 8


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


@dataclass(frozen=True)
class GenerationEstimate:
    """What a ground-truth run costs, computed from its sizes before anything is sampled.

    ``output_bytes``: the trajectories ``(B, steps + 1, 2, N, D)`` and initial states, float64
    (parameters come on top: a few ``(B, N)`` arrays, far smaller). ``working_bytes``: the largest
    temporaries of one batch of systems (pair forces cost ``b x N^2 x D``, the linear fast path
    ``b x 2N x N^2``) and of measuring its conservation errors. ``pair_evaluations``: particle pairs
    whose interaction is evaluated, over all stages of all sub-steps of all systems (a multiply-add
    of the linear fast path counts as one). ``force_calls``: force evaluations of whole batches.
    """

    system: str
    n_systems: int
    n_particles: int
    steps: int
    output_bytes: int
    working_bytes: int
    pair_evaluations: int
    force_calls: int

    @property
    def memory_bytes(self) -> int:
        return self.output_bytes + self.working_bytes

    @property
    def hours(self) -> float:
        """Estimated run time at :data:`PAIR_EVALUATIONS_PER_SECOND` and :data:`FORCE_CALL_SECONDS`."""
        seconds = self.pair_evaluations / PAIR_EVALUATIONS_PER_SECOND + self.force_calls * FORCE_CALL_SECONDS
        return seconds / 3600


def estimate_generation(system: HamiltonianSystem, *, n_systems: int, steps: int, substeps: int | Tensor = 1,
                        method: str = METHOD, systems_per_batch: int = SYSTEMS_PER_BATCH) -> GenerationEstimate:
    """The cost of integrating ``n_systems`` systems over ``steps`` output steps, from sizes alone.

    ``substeps``: sub-steps per output step, one count for every system or ``(B,)`` counts per
    system (:func:`choose_substeps`); before the parameters are sampled, 1 is a lower bound.
    Exact Python integers throughout, so absurd sizes give absurd numbers, never an overflow.
    """
    n, dim = system.n_particles, system.dim
    stages = COMPOSITIONS[method].force_evaluations
    batch = min(n_systems, systems_per_batch)
    if isinstance(substeps, Tensor):
        counts, sizes = (values.tolist() for values in substeps.unique(return_counts=True))
    else:
        counts, sizes = [int(substeps)], [n_systems]
    total_substeps = sum(count * size for count, size in zip(counts, sizes))
    batched_substeps = sum(count * -(-size // systems_per_batch) for count, size in zip(counts, sizes))
    batches = -(-n_systems // systems_per_batch)
    working = batch * n * n * dim * PAIR_TEMPORARIES
    if system.linear:  # one step from each of 2N unit states, then one matrix product per output step
        working = max(working, batch * 2 * n * n * n * LINEAR_TEMPORARIES)
        pairs = total_substeps * stages * 2 * n * n * n + n_systems * steps * (2 * n) ** 2 * dim
        calls = batched_substeps * stages + batches * steps
    else:
        pairs = total_substeps * stages * steps * n * n
        calls = batched_substeps * stages * steps
    measuring = batch * (steps + 1) * (2 * dim + 4)  # energy and momenta series of one batch
    return GenerationEstimate(
        system=_label(system), n_systems=n_systems, n_particles=n, steps=steps,
        output_bytes=n_systems * (steps + 2) * 2 * n * dim * _FLOAT64_BYTES,
        working_bytes=(working + measuring) * _FLOAT64_BYTES, pair_evaluations=pairs, force_calls=calls,
    )


def check_generation(estimate: GenerationEstimate, *, available_bytes: int | None = None) -> None:
    """Refuse, in one line naming the flag to change, a run that cannot fit in memory or would take
    more than :data:`MAX_HOURS`. ``available_bytes=None`` reads what is free now
    (:func:`available_memory`); pass a number to check against another budget."""
    if available_bytes is None:
        available_bytes = available_memory()
    what = (f"{estimate.system}: generating {_counted(estimate.n_systems, 'system')} of "
            f"{_counted(estimate.n_particles, 'particle')} over {_counted(estimate.steps, 'step')}")
    if available_bytes is not None and estimate.memory_bytes > available_bytes:
        flags = ("--n-particles" if estimate.working_bytes > estimate.output_bytes
                 else "--n-systems, --steps or --n-particles")
        raise ValueError(
            f"{what} needs about {format_bytes(estimate.memory_bytes)} of memory "
            f"({format_bytes(estimate.output_bytes)} of trajectories, {format_bytes(estimate.working_bytes)} "
            "working set per batch) but "
            f"{format_bytes(available_bytes)} is available: use fewer {flags}")
    if estimate.hours > MAX_HOURS:
        raise ValueError(
            f"{what} would take about {estimate.hours:,.0f} hours ({estimate.pair_evaluations:.2g} pair "
            f"evaluations at {PAIR_EVALUATIONS_PER_SECOND:.0e} per second), above the limit of {MAX_HOURS:g} "
            "hours: use fewer --n-systems, --steps or --n-particles, or generate in parts with several --seed")


def choose_substeps(system: HamiltonianSystem, params: Params, dt: float,
                    step_fraction: float = STEP_FRACTION, *, max_substeps: int = MAX_SUBSTEPS) -> Tensor:
    """Sub-steps per output step for each system, ``(B,)`` int64: the fewest with
    ``dt / substeps <= step_fraction * timescale``. Each system's count depends on its own
    parameters alone, so a trajectory does not depend on which other systems share the batch.

    Refuses (``ValueError``) a timescale that is not one positive finite time per system, and
    counts above ``max_substeps``; the counts are checked in float64 before any cast.
    """
    label = _label(system)
    if not hasattr(system, "timescale"):
        raise ValueError(_no_timescale(label))
    n_systems = next(iter(params.values())).shape[0]
    tau = torch.as_tensor(system.timescale(params), dtype=torch.float64)
    if tau.shape != (n_systems,):
        raise ValueError(f"{label}'s timescale(params) must give one time per system, shape ({n_systems},); "
                         f"got shape {tuple(tau.shape)}")
    invalid = ~(torch.isfinite(tau) & (tau > 0))
    if invalid.any():
        first = int(invalid.nonzero()[0])
        raise ValueError(f"{label}'s timescale(params) must be positive and finite; got {tau[first].item():g} "
                         f"for system {first}")
    ratio = dt / (step_fraction * tau)
    largest = int(ratio.argmax())
    if not ratio[largest].item() <= max_substeps:  # ceil(x) <= n exactly when x <= n, for an integer n
        raise ValueError(_too_many_substeps(system, ratio[largest].item(), dt, tau[largest].item(), step_fraction,
                                            max_substeps))
    return torch.ceil(ratio).clamp_min(1).to(torch.int64)


def simulate(
    system: HamiltonianSystem,
    z0: Tensor,
    params: Params,
    *,
    steps: int,
    dt: float,
    substeps: int | None = None,
    max_substeps: int = MAX_SUBSTEPS,
    method: str = METHOD,
    systems_per_batch: int = SYSTEMS_PER_BATCH,
    progress: bool = False,
) -> tuple[Tensor, Tensor, SimulationSettings]:
    """Integrate the true Hamiltonian of ``system`` from ``z0: (B, 2, N, D)`` in float64.

    Returns ``t: (steps + 1,)``, ``z: (B, steps + 1, 2, N, D)`` and the settings used.
    ``substeps=None`` chooses them per system (:func:`choose_substeps`); counts above
    ``max_substeps`` are refused, as are runs :func:`check_generation` refuses and trajectories that
    stop being finite. Results do not depend on ``systems_per_batch`` or on the other systems in
    the batch, only memory and speed do.
    """
    _check_run(steps, dt, method, substeps, max_substeps)
    z0, params = z0.to(torch.float64), _float64(params)
    per_system = _substep_counts(system, params, dt, substeps, max_substeps, z0.shape[0])
    estimate = estimate_generation(system, n_systems=z0.shape[0], steps=steps, substeps=per_system, method=method,
                                   systems_per_batch=systems_per_batch)
    check_generation(estimate, available_bytes=available_memory(z0.device))
    return _simulate(system, z0, params, per_system, steps, dt, method, systems_per_batch, progress)


def _simulate(system, z0: Tensor, params: Params, per_system: Tensor, steps: int, dt: float, method: str,
              systems_per_batch: int, progress: bool) -> tuple[Tensor, Tensor, SimulationSettings]:
    """:func:`simulate` once its settings are checked and its sub-step counts ``(B,)`` chosen."""
    _check_finite(system, z0.unsqueeze(1), dt, systems_per_batch)
    n_systems = z0.shape[0]
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
    _check_finite(system, z, dt, systems_per_batch)
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
    substeps: int | None = None,
    max_substeps: int = MAX_SUBSTEPS,
    system_spec: str | None = None,
    progress: bool = False,
) -> Trajectories:
    """Sample ``n_systems`` systems and their initial states from ``seed`` and simulate them.

    The same arguments give the same trajectories bit for bit. ``meta`` records the system, its
    settings, the seed, the integrator and the largest energy and momentum errors measured on the
    result. ``system_spec`` is how to find the system again (a registered name or
    ``"file.py:Class"``); it defaults to ``system.name``. ``substeps`` and ``max_substeps`` are as
    in :func:`simulate`.

    Refused with a one-line ``ValueError`` before anything large is sampled: settings that are not
    JSON values, a run that cannot fit in memory or would take too long (:func:`check_generation`,
    from the sizes alone and again once the sub-step counts are known); after integrating: a
    trajectory or a measured energy that is not finite.
    """
    _check_count("n_systems", n_systems)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
    _check_run(steps, dt, METHOD, substeps, max_substeps)
    system_settings = _json_settings(system)
    if substeps is None and not hasattr(system, "timescale"):
        raise ValueError(_no_timescale(_label(system)))
    check_generation(estimate_generation(system, n_systems=n_systems, steps=steps, substeps=substeps or 1))
    generator = torch.Generator().manual_seed(seed)
    params = system.sample_params(n_systems, generator)
    per_system = _substep_counts(system, _float64(params), dt, substeps, max_substeps, n_systems)
    check_generation(estimate_generation(system, n_systems=n_systems, steps=steps, substeps=per_system))
    z0 = system.sample_state(params, generator)
    params = _float64(params)
    t, z, settings = _simulate(system, z0.to(torch.float64), params, per_system, steps, dt, METHOD,
                               SYSTEMS_PER_BATCH, progress)
    errors = _largest_errors(system, z, params, dt, SYSTEMS_PER_BATCH)
    meta = {
        "system": system_spec or system.name,
        "system_settings": system_settings,
        "dt": dt,
        "steps": steps,
        "seed": seed,
        "hamnet_version": __version__,
        **settings.as_meta(),
        "max_relative_energy_error": errors["energy"],
        "max_relative_linear_momentum_change": errors["linear_momentum"],
        "max_relative_angular_momentum_change": errors["angular_momentum"],
    }
    return Trajectories(t, z, params, meta)


# -- checks and their messages ----------------------------------------------------------------------

def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_run(steps: int, dt: float, method: str, substeps: int | None, max_substeps: int) -> None:
    _check_count("steps", steps)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive finite number, got {dt}")
    if method not in COMPOSITIONS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(COMPOSITIONS)}")
    _check_count("max_substeps", max_substeps)
    if substeps is not None:
        _check_count("substeps", substeps)
        if substeps > max_substeps:
            raise ValueError(f"substeps={substeps:,} is above the limit of {max_substeps:,} sub-steps per output "
                             "step: raise the limit with --max-substeps (max_substeps= in Python)")


def _substep_counts(system, params: Params, dt: float, substeps: int | None, max_substeps: int,
                    n_systems: int) -> Tensor:
    if substeps is None:
        return choose_substeps(system, params, dt, max_substeps=max_substeps)
    return torch.full((n_systems,), int(substeps), dtype=torch.int64)


def _check_finite(system, z: Tensor, dt: float, systems_per_batch: int) -> None:
    """Refuse states ``z: (B, T, 2, N, D)`` of which one is not finite, naming the first system and step."""
    for start in range(0, z.shape[0], systems_per_batch):
        finite = torch.isfinite(z[start:start + systems_per_batch]).flatten(2).all(-1)
        if finite.all():
            continue
        row, step = (int(i) for i in (~finite).nonzero()[0])
        label = _label(system)
        if step == 0:
            raise ValueError(f"{label}: the initial state of system {start + row} is not finite; "
                             "check its sample_state (or z0)")
        raise ValueError(f"{label}: the trajectory of system {start + row} stops being finite at step {step} "
                         f"(t = {step * dt:g}): use a smaller --dt, or more sub-steps per output step "
                         "(--substeps N on the command line, substeps=N in Python)")


def _largest_errors(system, z: Tensor, params: Params, dt: float, systems_per_batch: int) -> dict[str, float]:
    """The largest relative changes of energy and momenta of any system in ``z: (B, T, 2, N, D)``,
    measured a batch at a time; a value that is not finite is refused, never written into ``meta``."""
    largest: dict[str, float] = {}
    for start in range(0, z.shape[0], systems_per_batch):
        rows = slice(start, start + systems_per_batch)
        h = energy(system.hamiltonian, z[rows], {key: value[rows] for key, value in params.items()})
        series = {"energy": relative_change(h, h[:, 0].abs()), **conservation_series(z[rows])}
        for name, values in series.items():
            invalid = ~torch.isfinite(values)
            if invalid.any():
                row, step = (int(i) for i in invalid.nonzero()[0])
                cause = (f"H = {h[row, step].item():g}, and {h[row, 0].item():g} at t = 0; check its "
                         "hamiltonian(z, params)" if name == "energy" else "check its dynamics")
                raise ValueError(f"{_label(system)}: the relative {name.replace('_', ' ')} change of system "
                                 f"{start + row} at step {step} (t = {step * dt:g}) is not finite ({cause})")
            largest[name] = max(largest.get(name, 0.0), float(values.max()))
    return largest


def _json_settings(system) -> dict:
    settings = system.settings()
    try:
        if not isinstance(settings, dict):
            raise TypeError(f"a {type(settings).__name__}, not a dict")
        json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError) as error:
        shown = " ".join(repr(settings).split())
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise ValueError(f"system {_label(system)}'s settings() must return JSON values (numbers, strings, lists, "
                         f"dicts); got {shown} ({error})") from None
    return settings


def _no_timescale(label: str) -> str:
    return (f"{label} has no timescale(params): define it, or give a fixed number of sub-steps "
            "(--substeps N on the command line, substeps=N in Python)")


def _too_many_substeps(system, needed: float, dt: float, tau: float, step_fraction: float,
                       max_substeps: int) -> str:
    if not math.isfinite(needed):
        count = "an unbounded number of"
    else:
        count = f"{math.ceil(needed):,}" if needed < 1e15 else f"{needed:.3g}"
    settings = getattr(system, "timescale_settings", ())
    larger = "".join(f", a larger --{name.replace('_', '-')}" for name in settings)
    return (f"{_label(system)} needs {count} sub-steps per output step (dt = {dt:g}, shortest timescale "
            f"{tau:.3g}, sub-steps of at most {step_fraction:g} of it), above the limit of {max_substeps:,}: "
            f"use a smaller --dt{larger}, or raise the limit with --max-substeps (max_substeps= in Python)")


def _label(system) -> str:
    return getattr(system, "name", None) or type(system).__name__


def _float64(params: Params) -> Params:
    return {key: value.to(torch.float64) for key, value in params.items()}


def _counted(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
