"""A new integrator: Suzuki's fourth-order, five-stage composition of leapfrog steps. One class, one registration.

A composition needs only its weights; the shared engine (``hamnet.composition``) derives the merged
kicks and drifts, and the solver runs through torchdiffeq's ``odeint`` like the built-ins. Like every
composition of leapfrog steps it is symplectic and needs a separable ``H``. After
``--plugin suzuki_integrator.py``, ``--method suzuki4`` works for training and rollouts.
"""

from hamnet.composition import Composition
from hamnet.integrate import CompositionSolver, Integrator, register_integrator

P = 1.0 / (4.0 - 4.0 ** (1.0 / 3.0))


class Suzuki4(CompositionSolver):
    """Suzuki's symmetric fourth-order composition of five leapfrog steps, for separable H."""

    composition = Composition("suzuki4", order=4, weights=(P, P, 1.0 - 4.0 * P, P, P))


register_integrator(Integrator.from_solver(
    Suzuki4, "Suzuki's 5-stage composition of leapfrog", symplectic=True, separable_only=True))
