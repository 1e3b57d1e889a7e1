"""The paper's spring system: every pair of particles joined by a zero-rest-length spring.

``H = sum_i |p_i|^2 / (2 m_i) + sum_{i<j} k_i k_j |q_i - q_j|^2``, with ``m_i ~ U(0.1, 3.1)`` and
``k_i ~ U(0, 5)`` (Finzi et al. 2020). The paper's code writes the potential as
``1/2 sum_{i != j} k_i k_j |q_i - q_j|^2`` over ordered pairs, which is the same number.

Unlike the reference generator, initial momenta are centred within each system (so every system
has zero total momentum, not only the batch on average), and sampling uses the generator passed in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import HamiltonianSystem, Params, remove_total_momentum

MASS_RANGE = (0.1, 3.1)
SPRING_RANGE = (0.0, 5.0)
POSITION_SCALE = 0.4
MOMENTUM_SCALE = 0.6


def _uniform(shape, low, high, generator):
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


class Springs(HamiltonianSystem):
    name = "springs"
    feature_keys = ("m", "k")
    symmetry = "SE3"  # invariant to rotations and translations in either dimension
    default_n_particles = 6
    linear = True

    def sample_params(self, n_systems: int, generator: torch.Generator) -> Params:
        shape = (n_systems, self.n_particles)
        return {
            "m": _uniform(shape, *MASS_RANGE, generator),
            "k": _uniform(shape, *SPRING_RANGE, generator),
        }

    def sample_state(self, params: Params, generator: torch.Generator) -> Tensor:
        n_systems = params["m"].shape[0]
        shape = (n_systems, self.n_particles, self.dim)
        q = POSITION_SCALE * torch.randn(shape, generator=generator, dtype=torch.float64)
        p = MOMENTUM_SCALE * torch.randn(shape, generator=generator, dtype=torch.float64)
        return torch.stack([q, remove_total_momentum(p)], dim=1)

    def unphysical(self, params: Params) -> list[str]:
        """Besides the masses: spring constants ``k`` that are not positive (a pair's stiffness is
        ``k_i k_j``, so one negative ``k`` makes springs that push apart without bound)."""
        problems = super().unphysical(params)
        k = params.get("k")
        if k is not None and bool((k <= 0).any()):
            count = int((k <= 0).reshape(k.shape[0], -1).any(-1).sum())
            problems.append(f"spring constants 'k' must be positive; {count} of {k.shape[0]} systems have one that "
                            f"is not (smallest {float(k.min()):.3g})")
        return problems

    def potential(self, q: Tensor, params: Params) -> Tensor:
        # sum_{i<j} k_i k_j |q_i - q_j|^2 = K sum_i k_i |q_i|^2 - |sum_i k_i q_i|^2, with K = sum_i k_i:
        # O(N) and exact for zero-rest-length springs with product constants.
        k = params["k"]
        weighted = (k.unsqueeze(-1) * q).sum(1)
        return k.sum(-1) * (k * q.square().sum(-1)).sum(-1) - weighted.square().sum(-1)

    def stiffness(self, params: Params) -> Tensor:
        """The matrix ``S: (B, N, N)`` with ``V = q^T S q / 2`` per dimension, so forces are ``-S q``.

        ``S_ii = 2 k_i (K - k_i)`` and ``S_ij = -2 k_i k_j``, with ``K = sum_j k_j``.
        """
        k = params["k"]
        outer = 2.0 * k.unsqueeze(-1) * k.unsqueeze(-2)
        return torch.diag_embed(2.0 * k * k.sum(-1, keepdim=True)) - outer

    def forces(self, q: Tensor, params: Params) -> Tensor:
        # -dV/dq_i = -2 k_i (K q_i - sum_j k_j q_j)
        k = params["k"].unsqueeze(-1)
        weighted = (k * q).sum(1, keepdim=True)
        return -2.0 * k * (k.sum(1, keepdim=True) * q - weighted)

    def force_function(self, params: Params):
        # The force is linear in q: one batched matrix product per evaluation.
        minus_stiffness = -self.stiffness(params)
        return lambda q: torch.bmm(minus_stiffness, q)

    def timescale(self, params: Params) -> Tensor:
        """``1 / omega_max`` per system ``(B,)``, where ``omega_max^2`` is the largest eigenvalue of
        ``M^-1/2 S M^-1/2``: the period / 2 pi of the fastest normal mode."""
        root_inverse_mass = params["m"].rsqrt()
        scaled = root_inverse_mass.unsqueeze(-1) * self.stiffness(params) * root_inverse_mass.unsqueeze(-2)
        omega_sq = torch.linalg.eigvalsh(scaled)[..., -1]
        return omega_sq.clamp_min(torch.finfo(omega_sq.dtype).tiny).rsqrt()


def two_particle_frequency(m1: float, m2: float, k1: float, k2: float) -> float:
    """Angular frequency of the relative coordinate of two particles joined by spring ``2 k1 k2``.

    ``V = k1 k2 |q1 - q2|^2`` is a spring of stiffness ``2 k1 k2`` on the relative coordinate,
    whose reduced mass is ``m1 m2 / (m1 + m2)``.
    """
    return math.sqrt(2.0 * k1 * k2 * (m1 + m2) / (m1 * m2))
