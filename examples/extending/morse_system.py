"""A new physical system: particles bound by Morse pair potentials. One class, one registration.

``V = sum_{i<j} D (1 - exp(-a (r_ij - r0)))^2`` with unit masses depends on distances only, so the
system is invariant to rotations and translations. hamnet simulates it with its ground-truth
integrator like a built-in: ``hamnet generate --plugin morse_system.py --system morse --out m.npz``.
"""

import math

import torch

from hamnet.systems import HamiltonianSystem, register_system, remove_total_momentum

WELL_DEPTH = 1.0
WELL_WIDTH = 2.0
REST_LENGTH = 1.0
POSITION_NOISE = 0.05
MOMENTUM_SCALE = 0.2


class MorseRing(HamiltonianSystem):
    """Unit masses on a ring of radius ``REST_LENGTH``, jiggled, bound pairwise by Morse wells."""

    name = "morse"
    symmetry = "SE3"
    default_n_particles = 4

    def sample_params(self, n_systems, generator):
        return {"m": torch.ones(n_systems, self.n_particles, dtype=torch.float64)}

    def sample_state(self, params, generator):
        n = self.n_particles
        angle = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
        ring = torch.stack([angle.cos(), angle.sin()] + [angle * 0] * (self.dim - 2), -1) * REST_LENGTH
        shape = (params["m"].shape[0], n, self.dim)
        q = ring + POSITION_NOISE * torch.randn(shape, generator=generator, dtype=torch.float64)
        p = MOMENTUM_SCALE * torch.randn(shape, generator=generator, dtype=torch.float64)
        return torch.stack([q, remove_total_momentum(p)], 1)

    def potential(self, q, params):
        i, j = torch.triu_indices(self.n_particles, self.n_particles, offset=1)
        r = (q[:, i] - q[:, j]).norm(dim=-1)
        return (WELL_DEPTH * (1 - torch.exp(-WELL_WIDTH * (r - REST_LENGTH))) ** 2).sum(-1)

    def timescale(self, params):
        # small oscillations about a well: omega^2 = 2 D a^2 / (reduced mass 1/2)
        return torch.full((params["m"].shape[0],), 1 / math.sqrt(4 * WELL_DEPTH * WELL_WIDTH**2),
                          dtype=torch.float64)


register_system(MorseRing)
