"""Add your own physical system and your own Lie group: one small class each.

    python examples/custom_system_and_group.py [--out examples-output/custom]

``MorseChain`` is a new system: particles bound by Morse pair potentials, which only depend on
distances, so the system is invariant to rotations and translations. It is simulated by hamnet's
ground-truth integrator and written to a trajectory file like any built-in system, and the CLI can
load it too: ``hamnet generate --system examples/custom_system_and_group.py:MorseChain --out m.npz``.

``ScaledRotations`` is a new group (rotations and scalings of the plane); a LieResNet built on it
is checked for invariance with ``equivariance_error``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import hamnet
from hamnet.groups import LieGroup
from systems import HamiltonianSystem, remove_total_momentum

WELL_DEPTH = 1.0
WELL_WIDTH = 2.0
REST_LENGTH = 1.0


class MorseChain(HamiltonianSystem):
    """``V = sum_{i<j} D (1 - exp(-a (r_ij - r0)))^2`` with unit masses."""

    name = "morse"
    symmetry = "SE3"
    default_n_particles = 4

    def sample_params(self, n_systems, generator):
        return {"m": torch.ones(n_systems, self.n_particles, dtype=torch.float64)}

    def sample_state(self, params, generator):
        n = self.n_particles
        angle = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
        ring = torch.stack([angle.cos(), angle.sin()] + [angle * 0] * (self.dim - 2), -1) * REST_LENGTH
        q = ring + 0.05 * torch.randn((params["m"].shape[0], n, self.dim), generator=generator, dtype=torch.float64)
        p = 0.2 * torch.randn(q.shape, generator=generator, dtype=torch.float64)
        return torch.stack([q, remove_total_momentum(p)], 1)

    def potential(self, q, params):
        i, j = torch.triu_indices(self.n_particles, self.n_particles, offset=1)
        r = (q[:, i] - q[:, j]).norm(dim=-1)
        return (WELL_DEPTH * (1 - torch.exp(-WELL_WIDTH * (r - REST_LENGTH))) ** 2).sum(-1)

    def timescale(self, params):
        # small oscillations about the well: omega^2 = 2 D a^2 / (reduced mass 1/2)
        return torch.full((params["m"].shape[0],), 1 / math.sqrt(4 * WELL_DEPTH * WELL_WIDTH**2), dtype=torch.float64)


class ScaledRotations(LieGroup):
    """Rotation and scaling of the plane: ``[[a, -b], [b, a]]`` with ``a + ib = exp(s + i theta)``."""

    name = "ScaledRotations"
    space_dim = 2
    lie_dim = 2
    matrix_size = 2

    def hat(self, a):
        s, theta = a[..., 0], a[..., 1]
        return torch.stack([torch.stack([s, -theta], -1), torch.stack([theta, s], -1)], -2)

    def log(self, g):
        a, b = g[..., 0, 0], g[..., 1, 0]
        return torch.stack([0.5 * torch.log(a * a + b * b), torch.atan2(b, a)], -1)

    def section(self, points):
        x, y = points[..., 0], points[..., 1]
        element = torch.stack([torch.stack([x, -y], -1), torch.stack([y, x], -1)], -2)
        return element, points.new_zeros(*points.shape[:-1], 0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples-output/custom")
    parser.add_argument("--tiny", action="store_true", help="seconds-long settings (used by the tests)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = hamnet.generate(MorseChain(), n_systems=8 if args.tiny else 200, steps=100, dt=0.01, seed=0,
                           system_spec=f"{__file__}:MorseChain")
    hamnet.save_trajectories(out / "morse.npz", data)
    print(f"MorseChain: {data.n_systems} systems, max relative energy error {data.meta['max_relative_energy_error']:.1e}")

    group = ScaledRotations()
    network = hamnet.LieResNet(group, in_features=1, width=16, depth=1).double()
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(3, 5, 2, generator=generator, dtype=torch.float64)
    features = torch.ones(3, 5, 1, dtype=torch.float64)
    error = hamnet.equivariance_error(network, group, points, features, generator=generator)
    print(f"LieResNet on ScaledRotations: largest output change under random group elements {error:.1e}")
    return {"energy_error": data.meta["max_relative_energy_error"], "equivariance_error": error}


if __name__ == "__main__":
    main()
