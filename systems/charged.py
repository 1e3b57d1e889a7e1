"""Charged particles with a softened Coulomb interaction, beside the equivariant-GNN charged benchmark.

``H = sum_i |p_i|^2 / (2 m_i) + k_e sum_{i<j} c_i c_j / sqrt(|q_i - q_j|^2 + eps^2)``: like charges
repel, opposite charges attract. The force is the exact gradient of that potential, so the softening
``eps`` is the same in both and the continuous dynamics conserve energy exactly. Charges ``c: (B, N)``
are a parameter (``"charge"``) that learned models see beside the masses ``m: (B, N)``.

Coulomb's law is softened gravity with the sign turned over: ``V(q; c) = -(k_e / G) V_nbody(q; m = c)``
for the same ``eps``. The pair sums are therefore :class:`systems.nbody.NBody`'s, evaluated with the
charges in place of the masses, not a copy of them.

The reference is the charged 5-body set of EGNN (Satorras, Hoogeboom, Welling, ICML 2021; code at
github.com/vgsatorras/egnn, ``n_body_system/dataset/synthetic_sim.py``, ``ChargedParticlesSim``,
run by ``generate_dataset.py``). There: N = 5 in 3D; charges -1 or +1, each with probability 1/2;
unit masses; Coulomb constant ("interaction_strength") 1, no softening; positions ~ N(0, s^2) per
coordinate with s = (N / 5)^(1/3); every velocity has speed exactly 0.5 ("vel_norm") in a Gaussian
random direction, and total momentum is not removed; a box of half-width 5 only reflects the initial
positions. Its integrator, though the code calls it leapfrog, is symplectic Euler with step 0.001:
one full kick with the initial force, then drift-then-kick steps (first order). Before every kick
each component of the total force on a particle is clipped to [-100, 100] (0.1 / 0.001), which is
not a Hamiltonian flow. It saves every 100th step.

hamnet's ``charged`` is the Hamiltonian system. It draws charges, masses, positions and velocities as
that set does (s = (N / 5)^(1/D), the same rule in 3D, a fixed number density in either dimension;
speed 0.5 in a uniformly random direction; ``p = m v``), then removes each system's total momentum,
which shifts every velocity of equal-mass particles by the same vector (relative speeds are kept,
speeds are no longer exactly 0.5). Softening ``eps = 0.1`` takes the place of the clip, at its scale:
the unsoftened force between unit charges reaches the clip, 100, at distance 0.1. Softening 0 gives
the unsoftened law of the benchmark; it has no shortest timescale (:meth:`Charged.timescale` refuses
it). The benchmark's own protocol (its sampling, integrator, clip and frame interval) is reproduced
by ``hamnet.protocols``, with this system at softening 0 as the Hamiltonian of its unclipped force. Other charge values
(drawn uniformly from a list), a mass range ``U(low, high)``, ``k_e`` and ``eps`` are settings.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .base import HamiltonianSystem, Params, remove_total_momentum
from .nbody import G, NBody, _uniform, unsoftened_timescale_message

#: ``k_e`` in ``V = k_e sum_{i<j} c_i c_j / r_ij``: EGNN's interaction strength
COULOMB_CONSTANT = 1.0
DEFAULT_SOFTENING = 0.1
#: EGNN's charges, drawn with equal probability
CHARGES = (-1.0, 1.0)
#: masses ~ U(low, high); EGNN's particles have unit mass
MASS_RANGE = (1.0, 1.0)
#: position standard deviation per coordinate for REFERENCE_PARTICLES particles (EGNN's loc_std)
POSITION_SCALE = 1.0
REFERENCE_PARTICLES = 5
#: the speed of every initial velocity before total momentum is removed (EGNN's vel_norm)
INITIAL_SPEED = 0.5


def _finite_numbers(name: str, values, length: int | None = None) -> tuple[float, ...]:
    try:
        numbers = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}") from None
    if not numbers or (length is not None and len(numbers) != length) or not all(map(math.isfinite, numbers)):
        count = f"{length} finite numbers" if length is not None else "a non-empty list of finite numbers"
        raise ValueError(f"{name} must be {count}, got {values!r}")
    return numbers


class Charged(HamiltonianSystem):
    name = "charged"
    feature_keys = ("m", "charge")
    symmetry = "SE3"  # for dim = 3; a 2D instance says "SE2" (set in __init__)
    default_n_particles = REFERENCE_PARTICLES
    timescale_settings = ("softening",)

    def __init__(
        self,
        n_particles: int | None = None,
        dim: int = 2,
        softening: float = DEFAULT_SOFTENING,
        coulomb_constant: float = COULOMB_CONSTANT,
        charges: Sequence[float] = CHARGES,
        mass_range: Sequence[float] = MASS_RANGE,
    ) -> None:
        super().__init__(n_particles, dim)
        if not (coulomb_constant > 0 and math.isfinite(coulomb_constant)):
            raise ValueError(f"coulomb_constant must be a positive finite number, got {coulomb_constant}")
        self.charges = _finite_numbers("charges", charges)
        low, high = _finite_numbers("mass_range", mass_range, length=2)
        if not 0 < low <= high:
            raise ValueError(f"mass_range must be (low, high) with 0 < low <= high, got {list(mass_range)}")
        self.mass_range = (low, high)
        self.coulomb_constant = float(coulomb_constant)
        self.symmetry = "SE3" if self.dim == 3 else "SE2"
        # the same softened pair law, read with charges as masses (see the module docstring)
        self._pair_law = NBody(self.n_particles, self.dim, softening=softening)
        self.softening = self._pair_law.softening

    def settings(self) -> dict:
        return {**super().settings(), "softening": self.softening, "coulomb_constant": self.coulomb_constant,
                "charges": list(self.charges), "mass_range": list(self.mass_range)}

    def check_params(self, params, source: str) -> None:
        """As :meth:`HamiltonianSystem.check_params`, and ``charge`` must be shaped like ``m``, ``(B, N)``."""
        super().check_params(params, source)
        m_shape, charge_shape = tuple(params["m"].shape), tuple(params["charge"].shape)
        if charge_shape != m_shape:
            raise ValueError(f"{source} has charges 'charge' of shape {charge_shape}; {self.name} needs one charge "
                             f"per particle, the shape {m_shape} of the masses 'm'")

    def sample_params(self, n_systems: int, generator: torch.Generator) -> Params:
        """``{"m": (B, N), "charge": (B, N)}``: masses ``U(mass_range)``, charges uniform over ``charges``."""
        shape = (n_systems, self.n_particles)
        m = _uniform(shape, *self.mass_range, generator)
        choice = torch.randint(len(self.charges), shape, generator=generator)
        charge = torch.tensor(self.charges, dtype=torch.float64)[choice]
        return {"m": m, "charge": charge}

    def sample_state(self, params: Params, generator: torch.Generator) -> Tensor:
        """``z: (B, 2, N, D)``: Gaussian positions, velocities of speed :data:`INITIAL_SPEED` in random
        directions, ``p = m v`` less each system's mean momentum."""
        m = params["m"]
        shape = (m.shape[0], self.n_particles, self.dim)
        spread = POSITION_SCALE * (self.n_particles / REFERENCE_PARTICLES) ** (1 / self.dim)
        q = spread * torch.randn(shape, generator=generator, dtype=torch.float64)
        direction = torch.randn(shape, generator=generator, dtype=torch.float64)
        v = INITIAL_SPEED * direction / direction.norm(dim=-1, keepdim=True)
        return torch.stack([q, remove_total_momentum(m.unsqueeze(-1) * v)], dim=1)

    def potential(self, q: Tensor, params: Params) -> Tensor:
        """``k_e sum_{i<j} c_i c_j / sqrt(r_ij^2 + eps^2)``; ``q: (B, N, D)`` -> ``(B,)``."""
        return -self.coulomb_constant / G * self._pair_law.potential(q, {"m": params["charge"]})

    def forces(self, q: Tensor, params: Params) -> Tensor:
        return self.force_function(params)(q)

    def force_function(self, params: Params):
        gravity = self._pair_law.force_function({"m": params["charge"]})
        sign_and_strength = -self.coulomb_constant / G
        return lambda q: sign_and_strength * gravity(q)

    def timescale(self, params: Params) -> Tensor:
        """Shortest dynamical time per system ``(B,)``: the time to cross a softening length ``eps`` at
        the fastest relative speed a pair can reach, minimised over pairs.

        That speed is the pair's largest initial relative speed ``u`` with, on top, what falling from
        rest at infinity to the bottom of its softened well (depth ``k_e |c_i c_j| / eps``) adds:
        ``v^2 = u^2 + 2 k_e |c_i c_j| / (mu_ij eps)``, ``mu_ij`` the reduced mass. With ``u = 0`` the time
        ``eps / v`` is ``1 / (sqrt(2) omega)``, where ``omega^2 = k_e |c_i c_j| / (mu_ij eps^3)`` is the
        frequency at the bottom of the well, the largest curvature the pair potential has anywhere.
        ``u`` holds for states from :meth:`sample_state`: velocities of speed ``s`` (:data:`INITIAL_SPEED`)
        less the mean momentum ``P / N``, ``|P| <= s sum m``, differ by at most
        ``s (2 + mean(m) (1 / m_min - 1 / m_max))``, which is ``2 s`` for equal masses.
        Refused (``ValueError``) for softening 0, whose well has no bottom.
        """
        if self.softening == 0:
            raise ValueError(unsoftened_timescale_message(self.name))
        m, c = params["m"], params["charge"]
        light, heavy = m.amin(-1), m.amax(-1)
        initial = INITIAL_SPEED * (2 + m.mean(-1) * (light.reciprocal() - heavy.reciprocal()))
        coupling = self.coulomb_constant * (c.unsqueeze(-1) * c.unsqueeze(-2)).abs()
        inverse_reduced_mass = m.reciprocal().unsqueeze(-1) + m.reciprocal().unsqueeze(-2)
        off_diagonal = ~torch.eye(m.shape[-1], dtype=torch.bool, device=m.device)
        fall = (2 * coupling * inverse_reduced_mass * off_diagonal / self.softening).amax((-1, -2))
        return self.softening / (initial.square() + fall).sqrt()
