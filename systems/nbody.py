"""Gravitational N-body with Plummer softening.

``H = sum_i |p_i|^2 / (2 m_i) - sum_{i<j} G m_i m_j / sqrt(|q_i - q_j|^2 + eps^2)``. The force is the
exact gradient of that potential, so softening is the same in both and energy is conserved exactly
by the continuous dynamics. Units: ``G = 1``. Softening ``eps = 0`` is the unsoftened ``1/r`` law; it has
no shortest dynamical time (two bodies can come arbitrarily close), so :meth:`NBody.timescale` refuses it
and its ground truth needs a fixed number of sub-steps.

Initial-condition families (``family=``):

- ``"central"``: a heavy body (mass ``CENTRAL_MASS``) and ``N - 1`` light bodies on near-circular
  orbits at radii ``U(1, 3)``, speeds ``sqrt(G M / r)`` perturbed by a few percent; in 3D each orbit
  lies in a plane tilted at random by up to ``MAX_TILT``.
- ``"cluster"``: ``N`` comparable masses drawn in a unit ball with Gaussian velocities rescaled to
  virial ratio ``2T/|V| = VIRIAL_RATIO`` < 2, hence a negative total energy: a bound cluster.

Every state is moved to its centre-of-mass frame: centre of mass at the origin, zero total momentum.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import HamiltonianSystem, Params

G = 1.0
FAMILIES = ("central", "cluster")
DEFAULT_SOFTENING = 0.1

CENTRAL_MASS = 1.0
SATELLITE_MASS_RANGE = (0.001, 0.01)
ORBIT_RADIUS_RANGE = (1.0, 3.0)
SPEED_PERTURBATION = 0.05
MAX_TILT = 0.3  # radians

CLUSTER_MASS_RANGE = (0.5, 1.5)  # divided by N so the total mass is about 1
CLUSTER_RADIUS = 1.0
VIRIAL_RATIO = 0.5


def _uniform(shape, low, high, generator):
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def unsoftened_timescale_message(name: str) -> str:
    """Why a system with softening 0 has no ``timescale``, and what to do instead, in one line."""
    return (f"{name} with softening 0 (the unsoftened 1/r law) has no shortest timescale to choose a step from: "
            "use a positive --softening (softening= in Python), or give a fixed number of sub-steps "
            "(--substeps N on the command line, substeps=N in Python)")


def _unit_vectors(shape, generator):
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


class NBody(HamiltonianSystem):
    name = "nbody"
    feature_keys = ("m",)
    symmetry = "SE3"
    default_n_particles = 5
    timescale_settings = ("softening",)

    def __init__(
        self,
        n_particles: int | None = None,
        dim: int = 2,
        family: str = "central",
        softening: float = DEFAULT_SOFTENING,
    ) -> None:
        super().__init__(n_particles, dim)
        if family not in FAMILIES:
            raise ValueError(f"unknown nbody family {family!r}; choose one of {', '.join(FAMILIES)}")
        if not (softening >= 0 and math.isfinite(softening)):
            raise ValueError(f"softening must be a non-negative finite number (0 for the unsoftened 1/r law), "
                             f"got {softening}")
        self.family = family
        self.softening = float(softening)

    def settings(self) -> dict:
        return {**super().settings(), "family": self.family, "softening": self.softening}

    def sample_params(self, n_systems: int, generator: torch.Generator) -> Params:
        shape = (n_systems, self.n_particles)
        if self.family == "central":
            m = _uniform(shape, *SATELLITE_MASS_RANGE, generator)
            m[:, 0] = CENTRAL_MASS
        else:
            m = _uniform(shape, *CLUSTER_MASS_RANGE, generator) / self.n_particles
        return {"m": m}

    def sample_state(self, params: Params, generator: torch.Generator) -> Tensor:
        sample = self._sample_central if self.family == "central" else self._sample_cluster
        q, v = sample(params["m"], generator)
        return self._to_centre_of_mass_frame(q, v, params["m"])

    def _sample_central(self, m: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n_systems, n = m.shape
        radius = _uniform((n_systems, n - 1, 1), *ORBIT_RADIUS_RANGE, generator)
        angle = _uniform((n_systems, n - 1), 0.0, 2 * math.pi, generator)
        in_plane = torch.stack([angle.cos(), angle.sin()], -1)
        tangent = torch.stack([-angle.sin(), angle.cos()], -1)
        if self.dim == 3:
            tilt = _uniform((n_systems, n - 1), -MAX_TILT, MAX_TILT, generator)
            zeros = torch.zeros_like(angle)
            in_plane = torch.cat([in_plane, zeros.unsqueeze(-1)], -1)
            tangent = torch.cat([tangent * tilt.cos().unsqueeze(-1), tilt.sin().unsqueeze(-1)], -1)
        speed = torch.sqrt(G * (m[:, :1, None] + m[:, 1:, None]) / radius)
        speed = speed * (1 + SPEED_PERTURBATION * torch.randn(speed.shape, generator=generator, dtype=torch.float64))
        zeros = torch.zeros(n_systems, 1, self.dim, dtype=torch.float64)
        q = torch.cat([zeros, radius * in_plane], 1)
        v = torch.cat([zeros, speed * tangent], 1)
        return q, v

    def _sample_cluster(self, m: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n_systems, n = m.shape
        # uniform in the ball: radius ~ R u^(1/D)
        radius = CLUSTER_RADIUS * torch.rand((n_systems, n, 1), generator=generator, dtype=torch.float64) ** (1 / self.dim)
        q = radius * _unit_vectors((n_systems, n, self.dim), generator)
        v = torch.randn((n_systems, n, self.dim), generator=generator, dtype=torch.float64)
        q, v = self._centre(q, v, m)
        kinetic = 0.5 * (m * v.square().sum(-1)).sum(-1)
        potential = self.potential(q, {"m": m})
        scale = torch.sqrt(VIRIAL_RATIO * potential.abs() / (2 * kinetic))
        return q, v * scale[:, None, None]

    @staticmethod
    def _centre(q: Tensor, v: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        w = (m / m.sum(-1, keepdim=True)).unsqueeze(-1)
        return q - (w * q).sum(1, keepdim=True), v - (w * v).sum(1, keepdim=True)

    def _to_centre_of_mass_frame(self, q: Tensor, v: Tensor, m: Tensor) -> Tensor:
        q, v = self._centre(q, v, m)
        return torch.stack([q, m.unsqueeze(-1) * v], dim=1)

    def _pair_terms(self, q: Tensor) -> tuple[Tensor, Tensor]:
        diff = q.unsqueeze(2) - q.unsqueeze(1)  # (B, N, N, D): q_i - q_j
        squared = diff.square().sum(-1) + self.softening**2
        # a body's distance to itself is 0, and 1/0 would make 0 * inf = nan without softening; the
        # diagonal is multiplied by diff = 0 (forces) or masked (potential), so any finite value will do
        squared.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        return diff, torch.rsqrt(squared)

    def potential(self, q: Tensor, params: Params) -> Tensor:
        m = params["m"]
        _, inv_r = self._pair_terms(q)
        mm = m.unsqueeze(2) * m.unsqueeze(1)
        off_diagonal = ~torch.eye(q.shape[1], dtype=torch.bool, device=q.device)
        return -0.5 * G * (mm * inv_r * off_diagonal).sum((-1, -2))

    def forces(self, q: Tensor, params: Params) -> Tensor:
        return self.force_function(params)(q)

    def force_function(self, params: Params):
        m = params["m"]
        pull = G * m.unsqueeze(1)  # (B, 1, N): G m_j
        own_mass = m.unsqueeze(-1)  # (B, N, 1)

        def force(q: Tensor) -> Tensor:
            diff, inv_r = self._pair_terms(q)
            # the diagonal has diff = 0, so it contributes nothing
            return -own_mass * ((pull * inv_r**3).unsqueeze(-1) * diff).sum(2)

        return force

    def timescale(self, params: Params) -> Tensor:
        """Shortest dynamical time, per system ``(B,)``: ``sqrt(eps^3 / (G M))`` bounds the
        fastest possible orbit, since softening caps the acceleration at every separation. Refused
        (``ValueError``) for softening 0, which caps nothing."""
        if self.softening == 0:
            raise ValueError(unsoftened_timescale_message(self.name))
        total_mass = params["m"].sum(-1)
        return torch.sqrt(self.softening**3 / (G * total_mass))
