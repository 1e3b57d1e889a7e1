"""A new model: a learned pair potential. One class, one registration.

``H = sum_i |p_i|^2 / 2 m_i + sum_{i<j} phi(|q_i - q_j|^2, f_i, f_j)`` with ``phi`` an MLP on the
squared distance and both particles' features, symmetrised over the pair. It depends on distances
only, so it is invariant to rotations and translations (and conserves both momenta under a
symplectic integrator), and separable, so leapfrog applies. After ``--plugin pair_potential_model.py``,
``hamnet train --model pair-potential`` trains it and checkpoints of it load like any other.
"""

import torch
from torch import nn

from hamnet.dynamics import potential_force
from hamnet.models import ParticleModel, register_model


class PairPotential(ParticleModel):
    """A separable Hamiltonian with a symmetric learned pair potential, for any number of particles."""

    separable = True

    def __init__(self, config):
        super().__init__(config)
        layers, size = [], 1 + 2 * self.n_features
        for _ in range(config.depth):
            layers += [nn.Linear(size, config.width), nn.SiLU()]
            size = config.width
        self.phi = nn.Sequential(*layers, nn.Linear(size, 1))

    def potential(self, q, params):
        """``V(q)``; ``q: (B, N, D)`` -> ``(B,)``."""
        features = self.features(params, q)
        i, j = torch.triu_indices(q.shape[1], q.shape[1], offset=1, device=q.device)
        r2 = (q[:, i] - q[:, j]).square().sum(-1, keepdim=True)
        forward = self.phi(torch.cat([r2, features[:, i], features[:, j]], -1))
        backward = self.phi(torch.cat([r2, features[:, j], features[:, i]], -1))
        return 0.5 * (forward + backward).squeeze(-1).sum(-1)

    def hamiltonian(self, z, params):
        self._check_state(z, fixed_n=False)
        return self.kinetic(z[:, 1], params) + self.potential(z[:, 0], params)

    def forces(self, q, params):
        return potential_force(self.potential, q, params, owner=self)

    def forward(self, z, params):
        return self.hamiltonian(z, params)


register_model("pair-potential", PairPotential)
