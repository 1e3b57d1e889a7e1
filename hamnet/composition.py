"""Symplectic compositions of Stoermer-Verlet steps: one table of coefficients, one step function.

Note to the reader: ``q`` and ``p`` are positions and momenta of shape ``(B, N, D)``, and the
Hamiltonian is separable, ``H = T(p) + V(q)``, so that its flow splits into a *drift*
``q += h velocity(p)`` and a *kick* ``p += h force(q)``. ``velocity: (B, N, D) -> (B, N, D)`` is
``dT/dp`` and ``force: (B, N, D) -> (B, N, D)`` is ``-dV/dq``.

A composition runs kick-drift-kick (leapfrog) sub-steps of sizes ``w_1 h, ..., w_s h`` with
``sum w_i = 1``; symmetric weights chosen as in H. Yoshida, Phys. Lett. A 150, 262 (1990) raise
the order from 2 to 4, 6 or 8. Adjacent half-kicks merge, so a step is ``s + 1`` kicks and ``s``
drifts and costs ``s`` force evaluations: the force after the last drift is the one the next step
starts with, and the step function hands it back for that purpose. Every composition of kicks and
drifts is symplectic and, with symmetric weights, time-reversible; it conserves total linear
momentum when ``V`` is translation invariant and angular momentum when ``V`` is rotation invariant.

Both the ground-truth simulator (:mod:`hamnet.simulation`, in place on plain tensors) and the
torchdiffeq solvers (:mod:`hamnet.integrate`, out of place so autograd can differentiate through
them) step with :meth:`Composition.step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from torch import Tensor

__all__ = ["Composition", "COMPOSITIONS", "symmetric_composition"]

VectorMap = Callable[[Tensor], Tensor]

#: how far the weights of a composition may sum from 1 (they are printed to ~15 digits in papers)
WEIGHT_SUM_TOLERANCE = 1e-12


def symmetric_composition(outer: tuple[float, ...]) -> tuple[float, ...]:
    """The symmetric weights ``(w_K, ..., w_1, w_0, w_1, ..., w_K)`` with ``w_0 = 1 - 2 sum w_i``,
    from ``outer = (w_1, ..., w_K)`` as Yoshida tabulates them."""
    w0 = 1.0 - 2.0 * math.fsum(outer)
    return tuple(reversed(outer)) + (w0,) + tuple(outer)


def _merged_kicks(weights: tuple[float, ...]) -> tuple[float, ...]:
    # the closing half-kick of one leapfrog sub-step and the opening one of the next act on the
    # same force, so they merge into one kick: one force evaluation per sub-step instead of two
    inner = tuple(0.5 * (a + b) for a, b in zip(weights[:-1], weights[1:]))
    return (0.5 * weights[0],) + inner + (0.5 * weights[-1],)


def _add(x: Tensor, rate: Tensor, size: float | Tensor) -> Tensor:
    return x + size * rate


def _add_in_place(x: Tensor, rate: Tensor, size: float) -> Tensor:
    return x.add_(rate, alpha=size)


@dataclass(frozen=True)
class Composition:
    """A composition of leapfrog sub-steps with ``weights`` (fractions of the step), of ``order``.

    ``kicks`` and ``drifts`` are the merged coefficients, derived once: a step of size ``h`` is
    ``kick(kicks[0] h) drift(drifts[0] h) kick(kicks[1] h) ... drift(drifts[-1] h) kick(kicks[-1] h)``.
    """

    name: str
    order: int
    weights: tuple[float, ...]
    kicks: tuple[float, ...] = field(init=False, repr=False)
    drifts: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        weights = tuple(float(w) for w in self.weights)
        if not weights or abs(math.fsum(weights) - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"composition {self.name!r}: the weights must sum to 1, got {weights}")
        if self.order < 1:
            raise ValueError(f"composition {self.name!r}: order must be >= 1, got {self.order}")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "kicks", _merged_kicks(weights))
        object.__setattr__(self, "drifts", weights)

    @property
    def force_evaluations(self) -> int:
        """Force evaluations per step (the step's first force is the previous step's last)."""
        return len(self.drifts)

    def step(self, q: Tensor, p: Tensor, force: Tensor, h: float | Tensor, velocity: VectorMap,
             force_of: VectorMap, *, in_place: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """One step of size ``h`` from ``q, p: (B, N, D)`` with ``force = force_of(q)``.

        Returns ``(q, p, force)`` after the step, ``force`` at the new ``q`` (the next step's carry).
        ``in_place=True`` updates ``q`` and ``p`` themselves and needs a float ``h``: fast, for plain
        tensors outside autograd (the ground truth). Otherwise new tensors are made, so gradients
        flow through the step, also with respect to a tensor ``h``.
        """
        add = _add_in_place if in_place else _add
        for kick, drift in zip(self.kicks, self.drifts):
            p = add(p, force, kick * h)
            q = add(q, velocity(p), drift * h)
            force = force_of(q)
        return q, add(p, force, self.kicks[-1] * h), force


_CUBE_ROOT_2 = 2.0 ** (1.0 / 3.0)
# Yoshida (1990), sixth order, solution A: w1..w3.
_YOSHIDA6_OUTER = (-1.17767998417887, 0.235573213359357, 0.784513610477560)
# Yoshida (1990), eighth order, solution D: w1..w7.
_YOSHIDA8_OUTER = (
    0.102799849391985,
    -1.96061023297549,
    1.93813913762276,
    -0.158240635368243,
    -1.44485223686048,
    0.253693336566229,
    0.914844246229740,
)

#: the built-in compositions by name (read-only: a new one is a new :class:`Composition`)
COMPOSITIONS: Mapping[str, Composition] = MappingProxyType({c.name: c for c in (
    Composition("leapfrog", 2, (1.0,)),
    # the middle sub-step runs backwards: w0 = -2^(1/3) w1 with w1 = 1 / (2 - 2^(1/3))
    Composition("yoshida4", 4, (1.0 / (2.0 - _CUBE_ROOT_2), -_CUBE_ROOT_2 / (2.0 - _CUBE_ROOT_2),
                                1.0 / (2.0 - _CUBE_ROOT_2))),
    Composition("yoshida6", 6, symmetric_composition(_YOSHIDA6_OUTER)),
    Composition("yoshida8", 8, symmetric_composition(_YOSHIDA8_OUTER)),
)})
