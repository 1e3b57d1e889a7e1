"""A Lennard-Jones cluster with a soft core: a short-range, stiff pair potential beside springs, gravity and Coulomb.

``H = sum_i |p_i|^2 / (2 m_i) + sum_{i<j} 4 eps (x_ij^6 - x_ij^3)``, ``x_ij = sigma^2 / (|q_i - q_j|^2 + a^2)``.

With core radius ``a = 0`` (``softening=0``) this is the Lennard-Jones law ``4 eps ((sigma/r)^12 - (sigma/r)^6)``.
A core ``a > 0`` replaces ``r^2`` by ``r^2 + a^2``, the softening nbody and charged use, so the pair energy
is finite at ``r = 0``: ``4 eps (u^6 - u^3)`` with ``u = sigma^2 / a^2``. Beyond the core the law keeps
Lennard-Jones' shape: as a function of ``r^2 + a^2`` it is Lennard-Jones' function of ``r^2``, so the
well has the same depth ``eps``, at ``r^2 + a^2 = 2^(1/3) sigma^2``; the pair minimum lies at
``r_min = sqrt(2^(1/3) sigma^2 - a^2)`` (1.0049 sigma for the default ``a = sigma / 2``; 2^(1/6) sigma
= 1.1225 sigma without a core), where the curvature is ``72 eps r_min^2 / (2^(2/3) sigma^4)``.
``a`` must stay below ``2^(1/6) sigma``, else there is no well. The force is the exact gradient of that
potential. ``eps``, ``sigma``, ``a`` are settings shared by every pair and system; the masses
``m ~ U(mass_range)`` are the per-particle parameters, the only ones learned models see.

Initial states are bound clusters: the ``N`` sites nearest the origin of a lattice whose
nearest-neighbour spacing is ``r_min`` (triangular in 2D, face-centred cubic in 3D), turned by a
random rotation, each coordinate of each site moved by a jitter drawn uniformly from
``[-J, J] r_min`` (``J =`` :data:`JITTER`: bounded, so no pair starts far up the wall); momenta
drawn from the Maxwell-Boltzmann distribution at temperature ``kT`` (``temperature``, in units of
energy), then each system's total momentum and, about its centre of
mass, its angular momentum removed (projections in the kinetic energy's metric, so the mean kinetic
energy is ``kT / 2`` per remaining degree of freedom, ``((N - 1) D - 1) kT / 2`` in 2D and
``((N - 2) D) kT / 2`` in 3D); centre of mass at the origin. At the defaults the lattice's
bonds give about ``-eps`` each and the thermal energy is a few ``kT``, so the total energy is
negative (tests check it for every sampled system).

Units: none of its own (see docs/units.md). Lengths in units of ``sigma`` and energies in units of
``eps`` give reduced units; ``temperature`` is ``kT`` in those units of energy.

How well learned models keep this cluster's energy, and what their training needs (a longer schedule
than springs' for SO(2)), is measured by ``benchmarks/lennard_jones.py`` (docs/results/lennard-jones.md).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .base import HamiltonianSystem, Params
from .charged import _finite_numbers
from .nbody import _uniform

DEFAULT_EPSILON = 1.0
DEFAULT_SIGMA = 1.0
#: the core radius ``a``: half of ``sigma``, so the well stays Lennard-Jones' (its minimum moves from
#: 1.1225 to 1.0049 sigma) while the energy at ``r = 0`` is finite (16,128 eps)
DEFAULT_SOFTENING = 0.5
#: ``kT`` in units of energy: a cold, solid cluster (the 13-particle Lennard-Jones cluster melts near ``kT = 0.3 eps``)
DEFAULT_TEMPERATURE = 0.1
#: masses ~ U(low, high)
MASS_RANGE = (0.5, 1.5)
#: the largest jitter of a lattice site's coordinate, in units of ``r_min``: a bond's length starts
#: within 2 sqrt(D) JITTER r_min of the minimum (its standard deviation is sqrt(2/3) JITTER r_min),
#: so at the default core no pair starts with an energy above 0.07 eps in 2D, 0.98 eps in 3D
#: (the well's bottom is -eps)
JITTER = 0.05
#: :meth:`LennardJones.timescale` resolves the wall up to the pair energy this many ``kT`` above 0:
#: a pair meeting from far apart with that relative kinetic energy, whose Boltzmann weight is ``e^-20``
CLIMB_TEMPERATURES = 20.0
#: points at which the curvature of the wall is sampled for its largest value
CURVATURE_SAMPLES = 4097
#: ``r^2 + a^2`` at the pair minimum, in units of ``sigma^2``
_MINIMUM_SCALED = 2.0 ** (1 / 3)


class LennardJones(HamiltonianSystem):
    name = "lennard-jones"
    feature_keys = ("m",)
    symmetry = "SE3"  # for dim = 3; a 2D instance says "SE2" (set in __init__)
    default_n_particles = 6
    timescale_settings = ("softening",)

    def __init__(
        self,
        n_particles: int | None = None,
        dim: int = 2,
        epsilon: float = DEFAULT_EPSILON,
        sigma: float = DEFAULT_SIGMA,
        softening: float = DEFAULT_SOFTENING,
        temperature: float = DEFAULT_TEMPERATURE,
        mass_range: Sequence[float] = MASS_RANGE,
    ) -> None:
        super().__init__(n_particles, dim)
        for setting, value in (("epsilon", epsilon), ("sigma", sigma)):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{setting} must be a positive finite number, got {value!r}")
        for setting, value in (("softening", softening), ("temperature", temperature)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{setting} must be a non-negative finite number, got {value!r}")
        if softening**2 >= _MINIMUM_SCALED * sigma**2:
            raise ValueError(f"softening (the core radius) must be below 2^(1/6) sigma = {2 ** (1 / 6) * sigma:.4g} "
                             f"for the pair potential to have a well, got {softening}")
        low, high = _finite_numbers("mass_range", mass_range, length=2)
        if not 0 < low <= high:
            raise ValueError(f"mass_range must be (low, high) with 0 < low <= high, got {list(mass_range)}")
        self.epsilon, self.sigma, self.softening = float(epsilon), float(sigma), float(softening)
        self.temperature, self.mass_range = float(temperature), (low, high)
        self.symmetry = "SE3" if self.dim == 3 else "SE2"
        #: the pair distance of the potential's minimum, where the pair energy is ``-epsilon``
        self.minimum_distance = math.sqrt(_MINIMUM_SCALED * self.sigma**2 - self.softening**2)
        self._lattice = _nearest_sites(self.n_particles, self.dim) * self.minimum_distance
        self._wall_curvature = self._largest_curvature(CLIMB_TEMPERATURES * self.temperature)

    def settings(self) -> dict:
        return {**super().settings(), "epsilon": self.epsilon, "sigma": self.sigma, "softening": self.softening,
                "temperature": self.temperature, "mass_range": list(self.mass_range)}

    def sample_params(self, n_systems: int, generator: torch.Generator) -> Params:
        """``{"m": (B, N)}``: masses ``U(mass_range)``."""
        return {"m": _uniform((n_systems, self.n_particles), *self.mass_range, generator)}

    def sample_state(self, params: Params, generator: torch.Generator) -> Tensor:
        """``z: (B, 2, N, D)``: a jittered, randomly turned lattice cluster at rest in its centre-of-mass
        frame (zero total linear and angular momentum), with thermal momenta at ``temperature``."""
        m = params["m"]
        n_systems = m.shape[0]
        shape = (n_systems, self.n_particles, self.dim)
        turn = _random_rotations(n_systems, self.dim, generator)
        uniform = 2 * torch.rand(shape, generator=generator, dtype=torch.float64) - 1
        jitter = JITTER * self.minimum_distance * uniform
        q = self._lattice @ turn.transpose(-1, -2) + jitter
        q = q - ((m / m.sum(-1, keepdim=True)).unsqueeze(-1) * q).sum(1, keepdim=True)
        thermal = (m * self.temperature).sqrt().unsqueeze(-1)
        p = thermal * torch.randn(shape, generator=generator, dtype=torch.float64)
        # the centre of mass's share m_i P / M, not P / N: the projection that leaves the other
        # degrees of freedom Maxwell-Boltzmann distributed (each holding kT / 2 on average)
        p = p - (m / m.sum(-1, keepdim=True)).unsqueeze(-1) * p.sum(1, keepdim=True)
        return torch.stack([q, p - _rigid_rotation_momentum(q, p, m)], dim=1)

    def _pair_terms(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q_i - q_j: (B, N, N, D)``, ``s = |q_i - q_j|^2 + a^2`` and ``x^3 = (sigma^2 / s)^3``, ``(B, N, N)``."""
        diff = q.unsqueeze(2) - q.unsqueeze(1)
        scaled = diff.square().sum(-1) + self.softening**2
        # a particle's distance to itself is 0 (and 1/0 without a core); the diagonal is multiplied by
        # diff = 0 (forces) or masked (potential), so any finite value will do
        scaled.diagonal(dim1=-2, dim2=-1).fill_(self.sigma**2)
        return diff, scaled, (self.sigma**2 / scaled) ** 3

    def potential(self, q: Tensor, params: Params) -> Tensor:
        """``sum_{i<j} 4 eps (x^6 - x^3)``; ``q: (B, N, D)`` -> ``(B,)``."""
        _, _, cube = self._pair_terms(q)
        off_diagonal = ~torch.eye(q.shape[1], dtype=torch.bool, device=q.device)
        return 2 * self.epsilon * ((cube.square() - cube) * off_diagonal).sum((-1, -2))

    def forces(self, q: Tensor, params: Params) -> Tensor:
        """``-dV/dq_i = sum_j 24 eps (2 x^6 - x^3) (q_i - q_j) / s``; ``q: (B, N, D)`` -> ``(B, N, D)``."""
        diff, scaled, cube = self._pair_terms(q)
        magnitude = 24 * self.epsilon * (2 * cube.square() - cube) / scaled  # the diagonal meets diff = 0
        return (magnitude.unsqueeze(-1) * diff).sum(2)

    def pair_curvature(self, r: Tensor) -> Tensor:
        """``d^2 V_pair / dr^2`` at pair distances ``r`` (any shape): ``2 f'(s) + 4 r^2 f''(s)`` with
        ``f(s) = 4 eps ((sigma^2 / s)^6 - (sigma^2 / s)^3)``, ``s = r^2 + a^2``."""
        scaled = r.square() + self.softening**2
        cube = (self.sigma**2 / scaled) ** 3
        slope = 4 * self.epsilon * (-6 * cube.square() + 3 * cube) / scaled
        bend = 4 * self.epsilon * (42 * cube.square() - 12 * cube) / scaled.square()
        return 2 * slope + 4 * r.square() * bend

    def _largest_curvature(self, energy: float) -> float:
        """The largest ``d^2 V_pair / dr^2`` on the wall from the pair energy ``energy >= 0`` down to the
        minimum: over ``[r_e, r_min]``, where ``V_pair(r_e) = energy`` on the inner side (``r_e = 0`` when
        even ``r = 0`` costs less). ``4 eps (y^2 - y) = energy`` for ``y = x^3`` has the inner root
        ``y = (1 + sqrt(1 + energy / eps)) / 2``."""
        cube = (1 + math.sqrt(1 + energy / self.epsilon)) / 2
        inner_squared = self.sigma**2 / cube ** (1 / 3) - self.softening**2
        inner = math.sqrt(inner_squared) if inner_squared > 0 else 0.0
        r = torch.linspace(inner, self.minimum_distance, CURVATURE_SAMPLES, dtype=torch.float64)
        return float(self.pair_curvature(r).max())

    def timescale(self, params: Params) -> Tensor:
        """Shortest dynamical time per system ``(B,)``: ``1 / omega`` with ``omega^2 = k (1/m_1 + 1/m_2)``,
        the two lightest masses' pair held by the stiffest part of the wall it can reach.

        ``k`` is the largest curvature of the pair potential between the minimum and the distance where
        the pair energy is :data:`CLIMB_TEMPERATURES` ``kT``: what a pair meeting from far apart with
        that much relative kinetic energy climbs to (clusters from :meth:`sample_state` start near their
        lattice minimum, a pair in a well deeper still). At least the curvature of the well at its
        bottom and, at ``kT = 0``, that up to pair energy 0. A heuristic, as nbody's is: generate
        measures the energy error it gives and writes it to the file.
        """
        m = params["m"].sort(dim=-1).values
        inverse_reduced_mass = m[..., 0].reciprocal() + m[..., 1].reciprocal()
        return (self._wall_curvature * inverse_reduced_mass).rsqrt()


def _nearest_sites(n: int, dim: int) -> Tensor:
    """The ``n`` sites nearest the origin (one at the origin) of the triangular (2D) or face-centred
    cubic (3D) lattice of unit nearest-neighbour spacing, centred on their mean: ``(n, dim)``. Ties in
    distance keep the order of the candidates, so the same ``n`` always gives the same sites."""
    reach = math.ceil(n ** (1 / dim)) + 2
    axis = torch.arange(-reach, reach + 1, dtype=torch.float64)
    grid = torch.cartesian_prod(*[axis] * dim)
    if dim == 2:
        sites = grid @ torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)
    else:
        sites = grid[grid.sum(-1).remainder(2) == 0] / math.sqrt(2)  # fcc: integer points of even sum
    distance = torch.round(sites.norm(dim=-1) * 1e9)  # equal distances compare equal despite round-off
    nearest = sites[distance.argsort(stable=True)[:n]]
    return nearest - nearest.mean(0)


def _random_rotations(n: int, dim: int, generator: torch.Generator) -> Tensor:
    """``n`` rotation matrices ``(n, dim, dim)`` drawn uniformly (Haar measure)."""
    if dim == 2:
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    matrix, upper = torch.linalg.qr(torch.randn((n, 3, 3), generator=generator, dtype=torch.float64))
    matrix = matrix * upper.diagonal(dim1=-2, dim2=-1).sign().unsqueeze(-2)
    return matrix * torch.linalg.det(matrix)[:, None, None]  # det +1: a proper rotation


def _rigid_rotation_momentum(q: Tensor, p: Tensor, m: Tensor) -> Tensor:
    """The momenta ``m_i omega x q_i`` of the rigid rotation that carries all of the angular momentum
    ``L = sum_i q_i x p_i`` about the origin, ``omega = I^-1 L`` (the pseudo-inverse where ``I`` is
    singular, as for two particles in 3D); ``q, p: (B, N, D)`` with centre of mass at the origin.
    Subtracting it leaves zero angular momentum and, since ``sum_i m_i q_i = 0``, zero total momentum."""
    weighted = m.unsqueeze(-1)
    if q.shape[-1] == 2:
        angular = (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).sum(-1)
        inertia = (m * q.square().sum(-1)).sum(-1)
        omega = angular / inertia
        return weighted * omega[:, None, None] * torch.stack([-q[..., 1], q[..., 0]], -1)
    angular = torch.linalg.cross(q, p, dim=-1).sum(1)
    identity = torch.eye(3, dtype=q.dtype, device=q.device)
    inertia = (m[..., None, None] * (q.square().sum(-1)[..., None, None] * identity
                                     - q.unsqueeze(-1) * q.unsqueeze(-2))).sum(1)
    omega = (torch.linalg.pinv(inertia) @ angular.unsqueeze(-1)).squeeze(-1)
    return weighted * torch.linalg.cross(omega.unsqueeze(1).expand_as(q), q, dim=-1)
