"""The equivariant-GNN papers' N-body benchmark sets, generated on their own protocols.

Note to the reader: ``x``, ``v`` are positions and velocities; every particle of every protocol has
unit mass, so momenta ``p = m v = v`` and forces are accelerations. A file holds ``z: (B, T, 2, N, 3)``
at every ``FRAME_STEPS``-th step of the protocol's inner step ``dt = 1e-3``: frame ``k`` is step
``100 k``, at time ``t = step * dt``, from step 0 (the sampled initial state) to ``start_step`` plus
the longest horizon. A benchmark maps the frame of ``start_step`` to the frame ``horizon`` steps on.

**egnn-charged5** (Satorras, Hoogeboom and Welling, ICML 2021; also SEGNN and SEGNO). N = 5 in 3D,
unit masses, charges -1 or +1 each with probability 1/2, Coulomb constant 1 and no softening: the
force on ``i`` is ``sum_j c_i c_j (x_i - x_j) / |x_i - x_j|^3`` (like charges repel). Positions
~ N(0, 1) per coordinate; each velocity is a Gaussian random direction of speed exactly 0.5; total
momentum is not removed; a coordinate beyond the box of half-width 5 is reflected once, at the start
(``x > 5 -> 10 - x`` with that velocity component made negative, and the mirror image below -5). The
integrator is symplectic Euler at ``dt``: a full kick ``v += dt F(x_0)``, then for every step a drift
``x += dt v`` (the state recorded at a frame is the one after this drift) and a kick
``v += dt F(x)``. EGNN's frame ``k`` is our step ``100 (k + 1)``; its benchmark maps its frame 30
(step 3100) to frame 40 (step 4100), and SEGNO adds 1500 and 2000 steps ahead.

**segnn-gravity100** (Brandstetter, Hesselink, van der Pol, Bekkers and Welling, ICLR 2022). N = 100
in 3D, unit masses, ``G = 1``: acceleration
``a_i = G sum_j m_j (x_j - x_i) / (|x_j - x_i|^2 + 0.1^2)^(3/2)``. Positions and velocities ~ N(0, 1)
per coordinate (SEGNN's ``GravitySim`` takes a position scale and a speed but uses neither); the mean
velocity is subtracted (positions are not recentred). The integrator is kick-drift-kick leapfrog at
``dt``. Frame ``k`` is step ``100 k``. SEGNN's benchmark maps frame 30 (step 3000) to frame 40 (step
4000), 1000 steps and no other horizon, and SEGNN trains on all 10,000 training trajectories it
generates (this protocol's train split defaults to 3000 like the others: ask for 10,000 to match).
hamnet stores frames to step 5000 and also scores 1500 and 2000 steps from step 3000: those two
horizons are hamnet's own, defined by neither paper (SEGNN's files stop at step 4900). No published
number for this set is checked here; the gravity numbers of SEGNO's table are not for it, but for
segno-gravity5.

**segno-gravity5** (Liu, Cheng, Zhao, Xu, Zhao, Tsung, Li and Rong, ICLR 2024: SEGNO). SEGNN's
generator above, unchanged, with N = 5 (the default body count of SEGNN's generating script): the
same force, sampling and leapfrog. The benchmark maps frame 0, the sampled initial state at step 0,
to steps 1000, 1500 and 2000 (frames 10, 15 and 20); 3000 training trajectories (the first 3000 of
the 10,000 generated), 2000 validation and 2000 test. The "Gravity" columns of SEGNO's Table 1
(1000, 1500 and 2000 ts) are on this set. SEGNO's repository does not hold its generator; its data
file names and loader match SEGNN's script run at 5 bodies, which is how this set is read.

Where a protocol is not Hamiltonian, and what hamnet does about it:

- egnn-charged5 clips **each component** of the total force on a particle to [-100, 100]
  (``0.1 / dt``) before every kick. A clipped force is no gradient of any potential, and it need
  not even point along the true force. It acts only in close encounters (unit charges closer than
  0.1), but those happen.
- egnn-charged5's integrator is first-order symplectic Euler with a full first kick, not leapfrog:
  the recorded velocities are half a step out of phase with the positions (``v`` at frame ``k`` is
  the velocity after the kick of the previous step), so ``H(x, v)`` of a recorded frame is not the
  energy the scheme's modified Hamiltonian conserves, even where nothing is clipped.
- segnn-gravity100 and segno-gravity5 are Hamiltonian: their force is minus the gradient of the
  softened potential ``-G sum_{i<j} m_i m_j / sqrt(r_ij^2 + 0.1^2)`` (SEGNN's energy function leaves
  the softening out, its force does not), and leapfrog is symplectic, so the energy of that ``H``
  stays within ``O(dt^2)`` of its start.

The data reproduce each protocol exactly, clip and phase included: they are the benchmarks' data, and
hamnet's Hamiltonian models learn from them as they are. How often the clip acted is counted in
``meta`` (``clipped_systems``, ``clipped_kicks_fraction``), and ``Trajectories.system()`` rebuilds the
Hamiltonian whose force the protocol integrates: ``charged`` with softening 0, ``nbody`` with 0.1.

Randomness comes only from ``torch.Generator().manual_seed(seed)``; the same arguments give the same
data bit for bit, whatever the chunking. The splits do not choose seeds: whoever generates a
benchmark (``benchmarks/``) gives each split its own seed.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .systems import HamiltonianSystem, Params, make_system

from .io import Trajectories
from .resources import check_memory
from .version import __version__

__all__ = ["PROTOCOLS", "Protocol", "check_protocol", "generate_protocol"]

#: the inner step of every protocol
INNER_DT = 1e-3
#: inner steps between stored frames
FRAME_STEPS = 100
#: benchmark horizons in inner steps: SEGNO's three (EGNN's and SEGNN's papers use only the 1000)
HORIZONS = (1000, 1500, 2000)
#: systems per split (EGNN and SEGNO generate 10,000 training systems and use the first 3000)
SPLIT_SIZES = MappingProxyType({"train": 3000, "valid": 2000, "test": 2000})

#: EGNN's clip of every force component, computed as its code does (0.1 / dt)
MAX_FORCE_COMPONENT = 0.1 / INNER_DT
#: EGNN's box half-width, applied to the initial state only
BOX_HALF_WIDTH = 5.0
#: EGNN's speed of every initial velocity
INITIAL_SPEED = 0.5
#: EGNN's charges, each drawn with probability 1/2
CHARGES = (-1.0, 1.0)
COULOMB_CONSTANT = 1.0
#: SEGNN's gravitational constant and Plummer softening (SEGNO uses SEGNN's generator)
G = 1.0
GRAVITY_SOFTENING = 0.1

#: systems are integrated in chunks whose pair array ``(chunk, D, N, N)`` float64 takes about this
#: many bytes (with two more arrays a third its size), so that a chunk's arrays stay in the CPU's
#: caches: on one thread, gravity takes about 30 microseconds per system and step in chunks of 4 to
#: 8 MiB (16 to 32 systems of 100 bodies), 60 to 80 in chunks of 25 to 100 MiB. Charged chunks hold
#: thousands of systems. The results do not depend on it.
PAIR_CHUNK_BYTES = 4 * 2**20
_FLOAT64_BYTES = 8
#: a chunk's force workspace, in pair arrays (the differences, and two arrays a third their size)
_PAIR_WORKSPACE = 2


@dataclass(frozen=True)
class Protocol:
    """One benchmark's data protocol. Steps count inner steps of ``dt``; frames are stored every
    ``frame_steps`` steps from step 0 to :attr:`steps`. ``system`` and ``system_settings`` (beyond
    ``n_particles`` and ``dim``) name the Hamiltonian system whose force the protocol integrates."""

    name: str
    paper: str
    system: str
    system_settings: Mapping[str, object]
    n_particles: int
    start_step: int
    integrator: str
    #: where the protocol is not a Hamiltonian flow ("" when it is)
    not_hamiltonian: str
    dim: int = 3
    dt: float = INNER_DT
    frame_steps: int = FRAME_STEPS
    horizons: tuple[int, ...] = HORIZONS
    splits: Mapping[str, int] = field(default_factory=lambda: SPLIT_SIZES)

    @property
    def steps(self) -> int:
        """The last step stored: ``start_step`` plus the longest horizon."""
        return self.start_step + max(self.horizons)

    @property
    def n_frames(self) -> int:
        return self.steps // self.frame_steps + 1

    @property
    def frame_dt(self) -> float:
        """The time between stored frames (a file's ``meta["dt"]``)."""
        return self.frame_steps * self.dt

    def frame_of(self, step: int) -> int:
        """The index of ``step`` among a file's frames; refused unless it is a stored step."""
        stored = (not isinstance(step, bool) and isinstance(step, numbers.Integral)
                  and 0 <= step <= self.steps and step % self.frame_steps == 0)
        if not stored:
            raise ValueError(f"{self.name} stores steps 0, {self.frame_steps}, ..., {self.steps}; "
                             f"step {step!r} is not one of them")
        return int(step) // self.frame_steps

    def make_system(self) -> HamiltonianSystem:
        """The Hamiltonian system whose force the protocol integrates (the clip aside)."""
        return make_system(self.system, n_particles=self.n_particles, dim=self.dim, **self.system_settings)


def _gravity(name: str, paper: str, n_particles: int, start_step: int) -> Protocol:
    """A protocol on SEGNN's gravity generator: only the body count and the start step differ."""
    return Protocol(
        name=name,
        paper=paper,
        system="nbody",
        system_settings=MappingProxyType({"family": "cluster", "softening": GRAVITY_SOFTENING}),
        n_particles=n_particles,
        start_step=start_step,
        integrator="kick-drift-kick leapfrog",
        not_hamiltonian="",
    )


PROTOCOLS: dict[str, Protocol] = {
    "egnn-charged5": Protocol(
        name="egnn-charged5",
        paper="Satorras, Hoogeboom, Welling: E(n) Equivariant Graph Neural Networks, ICML 2021 (charged 5-body)",
        system="charged",
        system_settings=MappingProxyType({"softening": 0.0, "coulomb_constant": COULOMB_CONSTANT,
                                          "charges": CHARGES, "mass_range": (1.0, 1.0)}),
        n_particles=5,
        start_step=3100,
        integrator="symplectic Euler: a full kick with the initial force, then drift-then-kick steps; "
                   "every force component clipped to [-100, 100]",
        not_hamiltonian="every force component is clipped to [-100, 100] before each kick; the integrator is "
                        "first-order symplectic Euler with a full first kick, so stored velocities lag the "
                        "positions by half a step",
    ),
    "segnn-gravity100": _gravity(
        "segnn-gravity100",
        paper="Brandstetter et al.: Geometric and Physical Quantities Improve E(3) Equivariant Message "
              "Passing, ICLR 2022 (gravity 100-body)",
        n_particles=100,
        start_step=3000,
    ),
    "segno-gravity5": _gravity(
        "segno-gravity5",
        paper="Liu et al.: SEGNO, Improving Generalization in Equivariant Graph Neural Networks with Physical "
              "Inductive Biases, ICLR 2024 (gravity 5-body)",
        n_particles=5,
        start_step=0,
    ),
}


def generate_protocol(name: str, split: str, n_systems: int | None = None, seed: int = 0,
                      progress: bool = False) -> Trajectories:
    """Sample ``n_systems`` systems (default: the split's size) from ``seed`` and integrate them on
    the protocol ``name``. Returns ``z: (B, T, 2, N, 3)`` float64 at ``t = step * dt`` for every
    stored step (``T = protocol.n_frames``), ``params`` ``{"m": (B, N)}`` (and ``"charge": (B, N)``
    for charged) and ``meta`` with the system, the protocol and, for charged, the clip counts.

    ``split`` is recorded and sets the default size; it does not change the seed. Refused with a
    one-line ``ValueError``: an unknown protocol or split, ``n_systems`` that is not a positive
    integer, ``seed`` that is not a non-negative integer; ``MemoryError`` when the output cannot fit.
    """
    protocol = _protocol(name)
    n_systems, seed = _checked_arguments(protocol, split, n_systems, seed)
    system = protocol.make_system()
    frame_bytes = n_systems * 2 * protocol.n_particles * protocol.dim * _FLOAT64_BYTES
    # the frames, the sampled initial states (one frame's worth) and a chunk's workspace
    check_memory(frame_bytes * (protocol.n_frames + 1) + _PAIR_WORKSPACE * PAIR_CHUNK_BYTES,
                 f"{name}: generating {n_systems:,} systems", "use fewer n_systems, and generate the split in "
                 "parts with several seeds")
    generator = torch.Generator().manual_seed(seed)
    x, v, params = _SAMPLERS[name](protocol, n_systems, generator)
    z, clipped = _simulate(protocol, x, v, params, progress)
    t = torch.arange(0, protocol.steps + 1, protocol.frame_steps, dtype=torch.float64) * protocol.dt
    meta = {
        "system": protocol.system,
        "system_settings": system.settings(),
        "dt": protocol.frame_dt,
        "steps": protocol.n_frames - 1,
        "seed": seed,
        "hamnet_version": __version__,
        "protocol": {"name": name, "split": split, "seed": seed, "inner_dt": protocol.dt,
                     "frame_steps": protocol.frame_steps, "integrator": protocol.integrator,
                     "start_step": protocol.start_step, "horizons": list(protocol.horizons)},
    }
    if protocol.not_hamiltonian:
        meta["clipped_systems"] = int((clipped > 0).sum())
        meta["clipped_kicks_fraction"] = float(clipped.sum()) / (n_systems * protocol.steps)
    return Trajectories(t, z, params, meta)


def check_protocol(data: Trajectories, name: str, source: str) -> Protocol:
    """The protocol ``name``, once ``data`` (read from ``source``, named in messages) is shown to be
    its set and to reach its last step; otherwise a one-line ``ValueError`` saying how to make one."""
    protocol = _protocol(name)
    remedy = (f"generate it with `hamnet generate --protocol {name} --split SPLIT` "
              f"(hamnet.protocols.generate_protocol({name!r}, split) in Python)")
    made_by = data.meta.get("protocol")
    if not isinstance(made_by, dict):
        raise ValueError(f"{source} was not made by a benchmark protocol; {remedy}")
    if made_by.get("name") != name:
        raise ValueError(f"{source} holds the {made_by.get('name')!r} set, not {name!r}; {remedy}")
    if made_by.get("frame_steps") != protocol.frame_steps or made_by.get("inner_dt") != protocol.dt:
        raise ValueError(f"{source} stores a frame every {made_by.get('frame_steps')} steps of "
                         f"{made_by.get('inner_dt')}, not every {protocol.frame_steps} of {protocol.dt}; {remedy}")
    last = (data.n_times - 1) * protocol.frame_steps
    if last < protocol.steps:
        raise ValueError(f"{source} stops at step {last}, before step {protocol.steps} ({protocol.start_step} plus "
                         f"the longest horizon, {max(protocol.horizons)}) that {name} needs; {remedy}")
    return protocol


# -- arguments --------------------------------------------------------------------------------------

def _protocol(name: str) -> Protocol:
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def _checked_arguments(protocol: Protocol, split: str, n_systems, seed) -> tuple[int, int]:
    """``n_systems`` (defaulting to the split's size) and ``seed`` as ints, once every argument is checked."""
    if not isinstance(split, str) or split not in protocol.splits:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(protocol.splits)}")
    if n_systems is None:
        n_systems = protocol.splits[split]
    if isinstance(n_systems, bool) or not isinstance(n_systems, numbers.Integral) or n_systems < 1:
        raise ValueError(f"n_systems must be a positive integer, got {n_systems!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative integer below 2**63, got {seed!r}")
    return int(n_systems), int(seed)


# -- sampling: positions and velocities (B, N, D), parameters ---------------------------------------

def _sample_egnn_charged(protocol: Protocol, n_systems: int, generator: torch.Generator
                         ) -> tuple[Tensor, Tensor, Params]:
    shape = (n_systems, protocol.n_particles, protocol.dim)
    choice = torch.randint(len(CHARGES), shape[:2], generator=generator)
    charge = torch.tensor(CHARGES, dtype=torch.float64)[choice]
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    direction = torch.randn(shape, generator=generator, dtype=torch.float64)
    v = INITIAL_SPEED * direction / direction.norm(dim=-1, keepdim=True)
    x, v = _reflect_into_box(x, v, BOX_HALF_WIDTH)
    return x, v, {"m": torch.ones(shape[:2], dtype=torch.float64), "charge": charge}


def _reflect_into_box(x: Tensor, v: Tensor, half_width: float) -> tuple[Tensor, Tensor]:
    """EGNN's walls, met once: a coordinate beyond ``half_width`` is mirrored back inside and its
    velocity component turned inwards."""
    over, under = x > half_width, x < -half_width
    x = torch.where(over, 2 * half_width - x, torch.where(under, -2 * half_width - x, x))
    v = torch.where(over, -v.abs(), torch.where(under, v.abs(), v))
    return x, v


def _sample_segnn_gravity(protocol: Protocol, n_systems: int, generator: torch.Generator
                          ) -> tuple[Tensor, Tensor, Params]:
    """SEGNN's ``GravitySim`` initial state, for any body count: x, v ~ N(0, 1), minus the mean v."""
    shape = (n_systems, protocol.n_particles, protocol.dim)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    return x, v - v.mean(dim=1, keepdim=True), {"m": torch.ones(shape[:2], dtype=torch.float64)}


# -- integration ------------------------------------------------------------------------------------

def _simulate(protocol: Protocol, x: Tensor, v: Tensor, params: Params, progress: bool) -> tuple[Tensor, Tensor]:
    """Integrate every system from ``x, v: (B, N, D)``, a chunk at a time. Returns the stored frames
    ``z: (B, T, 2, N, D)`` and the kicks per system in which the clip acted, ``(B,)`` int64."""
    n_systems = x.shape[0]
    z = torch.empty((n_systems, protocol.n_frames, 2, protocol.n_particles, protocol.dim), dtype=torch.float64)
    clipped = torch.zeros(n_systems, dtype=torch.int64)
    chunk = max(1, PAIR_CHUNK_BYTES // (protocol.dim * protocol.n_particles**2 * _FLOAT64_BYTES))
    integrate = _INTEGRATORS[protocol.name]
    with tqdm(total=n_systems * protocol.steps, disable=not progress, unit="system-step", unit_scale=True) as bar:
        for start in range(0, n_systems, chunk):
            rows = slice(start, start + chunk)
            clipped[rows] = integrate(protocol, x[rows], v[rows], {k: value[rows] for k, value in params.items()},
                                      z[rows], bar)
    return z, clipped


def _symplectic_euler_clipped(protocol: Protocol, x: Tensor, v: Tensor, params: Params, frames: Tensor,
                              bar) -> Tensor:
    """EGNN's integrator on one chunk, writing ``frames: (b, T, 2, N, D)``; returns the clipped kicks
    per system ``(b,)``. The kick after the last stored drift changes nothing stored and is not taken,
    so each system takes ``protocol.steps`` kicks."""
    charge = params["charge"]
    x, v = _coordinate_major(x), _coordinate_major(v)
    forces = _PairForces(x, COULOMB_CONSTANT * charge.unsqueeze(-1) * charge.unsqueeze(-2), softening=0.0)
    clipped = torch.zeros(x.shape[0], dtype=torch.int64)
    _store(frames, 0, x, v)
    clipped += _clipped_kick(x, v, forces, protocol.dt)
    for step in range(1, protocol.steps + 1):
        x += protocol.dt * v
        if step % protocol.frame_steps == 0:
            _store(frames, step // protocol.frame_steps, x, v)
            bar.update(x.shape[0] * protocol.frame_steps)
        if step < protocol.steps:
            clipped += _clipped_kick(x, v, forces, protocol.dt)
    return clipped


def _clipped_kick(x: Tensor, v: Tensor, forces: _PairForces, dt: float) -> Tensor:
    """``v += dt * clip(F(x))`` in place, on coordinate-major ``x, v: (b, D, N)``, with EGNN's
    component-wise clip; returns whether each system's kick was clipped, ``(b,)``."""
    force = forces(x)
    clipped = force.abs().amax(dim=(1, 2)) > MAX_FORCE_COMPONENT
    v += dt * force.clamp_(-MAX_FORCE_COMPONENT, MAX_FORCE_COMPONENT)
    return clipped


def _leapfrog(protocol: Protocol, x: Tensor, v: Tensor, params: Params, frames: Tensor, bar) -> Tensor:
    """SEGNN's kick-drift-kick leapfrog on one chunk, writing ``frames: (b, T, 2, N, D)``; nothing is
    clipped, so it returns zeros ``(b,)``. Masses are 1: ``-G`` couples every pair."""
    x, v = _coordinate_major(x), _coordinate_major(v)
    accelerations = _PairForces(x, -G, GRAVITY_SOFTENING)
    acceleration = accelerations(x)
    half_step = protocol.dt / 2
    _store(frames, 0, x, v)
    for step in range(1, protocol.steps + 1):
        v += half_step * acceleration
        x += protocol.dt * v
        acceleration = accelerations(x)
        v += half_step * acceleration
        if step % protocol.frame_steps == 0:
            _store(frames, step // protocol.frame_steps, x, v)
            bar.update(x.shape[0] * protocol.frame_steps)
    return torch.zeros(x.shape[0], dtype=torch.int64)


class _PairForces:
    """``F_i = sum_j coupling_ij (x_i - x_j) / (|x_i - x_j|^2 + softening^2)^(3/2)`` for coordinate-major
    ``x: (b, D, N)`` -> ``(b, D, N)``; ``coupling``: ``(b, N, N)`` or one number for every pair.

    Coordinate-major, every pair array ``(b, N, N)`` of one coordinate is contiguous, which makes this
    about five times faster on one CPU thread than the ``(b, N, N, D)`` layout of ``systems``. Its pair
    arrays are allocated once and reused: allocated afresh at every step, each came from the system
    as new pages, and the page faults made whole runs up to six times slower. The force returned is
    overwritten by the next call.
    """

    def __init__(self, x: Tensor, coupling: Tensor | float, softening: float) -> None:
        b, dim, n = x.shape
        self.coupling, self.softening = coupling, softening
        self.diff = x.new_empty((b, dim, n, n))
        self.weight = x.new_empty((b, n, n))
        self.scratch = x.new_empty((b, n, n))  # squares of one axis, then the cubes
        self.force = x.new_empty((b, dim, n))

    def __call__(self, x: Tensor) -> Tensor:
        diff, weight, scratch = self.diff, self.weight, self.scratch
        torch.sub(x.unsqueeze(-1), x.unsqueeze(-2), out=diff)  # (b, D, N, N): x_i - x_j
        weight.fill_(self.softening**2)
        for axis in diff.unbind(1):  # squares and sums apart, never fused: the same bits in any chunk
            weight.add_(torch.mul(axis, axis, out=scratch))
        # a particle's distance to itself is 0, and 1/0 would make 0 * inf = nan without softening;
        # the self-pair is multiplied by diff = 0, so any finite value will do
        weight.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        weight.rsqrt_()
        cube = torch.mul(weight, weight, out=scratch).mul_(weight).mul_(self.coupling)
        diff.mul_(cube.unsqueeze(1))
        return torch.sum(diff, dim=-1, out=self.force)


def _coordinate_major(x: Tensor) -> Tensor:
    """A contiguous copy ``(b, D, N)`` of ``x: (b, N, D)``, updated in place by the integrators."""
    return x.transpose(1, 2).clone(memory_format=torch.contiguous_format)


def _store(frames: Tensor, index: int, x: Tensor, v: Tensor) -> None:
    """Frame ``index`` of ``frames: (b, T, 2, N, D)`` from coordinate-major ``x, v: (b, D, N)``;
    ``p = v`` (unit masses)."""
    frames[:, index, 0] = x.transpose(1, 2)
    frames[:, index, 1] = v.transpose(1, 2)


Sampler = Callable[[Protocol, int, torch.Generator], tuple[Tensor, Tensor, Params]]
Integrator = Callable[..., Tensor]

#: each protocol's initial-state sampler and integrator (both gravity sets run SEGNN's generator)
_SAMPLERS: dict[str, Sampler] = {"egnn-charged5": _sample_egnn_charged, "segnn-gravity100": _sample_segnn_gravity,
                                 "segno-gravity5": _sample_segnn_gravity}
_INTEGRATORS: dict[str, Integrator] = {"egnn-charged5": _symplectic_euler_clipped, "segnn-gravity100": _leapfrog,
                                       "segno-gravity5": _leapfrog}
