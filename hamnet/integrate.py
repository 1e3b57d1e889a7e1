"""hamnet's integrators: one registry, and symplectic solvers that torchdiffeq's ``odeint`` runs.

Note to the reader: the state is ``z: (B, 2, N, D)`` (positions ``q = z[:, 0]``, momenta
``p = z[:, 1]``) and the vector field is a :class:`hamnet.dynamics.HamiltonianField`.

:data:`INTEGRATORS` is the one table of integrators hamnet offers (``docs/integrators.md`` lists
them): hamnet's own solvers, the compositions of :mod:`hamnet.composition` (leapfrog, yoshida4,
yoshida6, yoshida8; separable H only) and the implicit Gauss methods (implicit_midpoint, gauss4; any
H), and the torchdiffeq methods hamnet users reach for (euler, midpoint, rk4, dopri5, dopri8).
Each entry says its order, whether it is symplectic, needs a separable H, or steps on a fixed grid.
Importing this module registers hamnet's solvers in torchdiffeq's solver table
(``torchdiffeq._impl.odeint.SOLVERS``). torchdiffeq has no public way to add a solver, so this uses its
private table and its step callbacks (torchdiffeq 0.2.4 and later); ``pyproject.toml`` bounds the
versions to the ones CI tests (0.2.4, the lowest, and the pinned 0.2.5). Pass
``method=solver_key(name)`` to ``odeint``.
Where torchdiffeq already has a different solver of the same name (its development branch has an
``implicit_midpoint``), hamnet's goes in as ``hamnet_<name>`` and torchdiffeq's stays untouched.

Like every torchdiffeq fixed-grid solver, hamnet's take one step per interval of ``t`` unless
``options={"step_size": dt}`` is given; ``rtol`` and ``atol`` do not apply to them. The implicit
methods take ``options={"tol": ..., "max_iters": ...}`` for their nonlinear solve.

The splitting methods update ``q`` and ``p`` in turn, so they must see the Hamiltonian structure.
They find it by unwrapping torchdiffeq's own wrappers (``base_func`` chains) down to the
:class:`HamiltonianField`; they follow time reversal and refuse, with a message saying what to use
instead, what they cannot integrate correctly: a field that is not a separable
``HamiltonianField``, a tuple state, and therefore ``odeint_adjoint``'s backward pass (its
augmented state is a tuple) when one of them is the ``adjoint_method``.
"""

from __future__ import annotations

import abc
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchdiffeq._impl.misc import _PerturbFunc, _ReverseFunc, _TupleFunc, _TupleInputOnlyFunc
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from .composition import COMPOSITIONS, Composition
from .registry import Registry

__all__ = [
    "Integrator",
    "INTEGRATORS",
    "register_integrator",
    "get_integrator",
    "solver_key",
    "CompositionSolver",
    "Leapfrog",
    "Yoshida4",
    "Yoshida6",
    "Yoshida8",
    "ImplicitMidpoint",
    "Gauss4",
    "ConvergenceError",
]

logger = logging.getLogger(__name__)

#: where a name clashes with a different torchdiffeq solver, hamnet's is registered under this prefix
HAMNET_PREFIX = "hamnet_"
#: the implicit solve stops when the last update changed the state by less than this many
#: machine epsilons of the dtype, relative to the state's size
TOLERANCE_IN_EPS = 64
DEFAULT_MAX_ITERS = 100


class ConvergenceError(RuntimeError):
    """An implicit integrator's nonlinear solve did not reach its tolerance."""


# -- finding the Hamiltonian field under torchdiffeq's wrappers ---------------------------------

def _unwrap(func: Any, method: str) -> tuple[Any, float]:
    """The innermost vector field under torchdiffeq's wrappers, and the sign time reversal puts on it."""
    sign = 1.0
    while True:
        if isinstance(func, (_TupleFunc, _TupleInputOnlyFunc)):
            raise ValueError(
                f"{method!r} splits the state into positions and momenta, so it needs one tensor state "
                "z: (B, 2, N, D), not a tuple. odeint_adjoint's backward pass integrates a tuple "
                f"(augmented) state: with odeint_adjoint pass adjoint_method='rk4', 'dopri5', "
                "'implicit_midpoint' or 'gauss4'"
            )
        if isinstance(func, _ReverseFunc):
            sign *= float(func.mul)
            func = func.base_func
        elif isinstance(func, _PerturbFunc):
            func = func.base_func
        else:
            return func, sign


def _separable_field(func: Any, method: str) -> tuple[Any, float]:
    field, sign = _unwrap(func, method)
    if not all(callable(getattr(field, name, None)) for name in ("velocity", "force")):
        raise ValueError(
            f"{method!r} needs the q/p structure of a Hamiltonian: pass "
            f"hamnet.dynamics.HamiltonianField(model, params) as func, not {type(field).__name__}"
        )
    if not getattr(field, "separable", False):
        model = getattr(field, "model", field)
        raise ValueError(
            f"{method!r} works only for separable H = T(p) + V(q), and {type(model).__name__} is not "
            "separable; use 'implicit_midpoint' or 'gauss4' (symplectic for any H) or 'rk4'"
        )
    return field, sign


# -- the shared fixed-grid loop --------------------------------------------------------------------

class _CarryingSolver(FixedGridODESolver, metaclass=abc.ABCMeta):
    """A fixed-grid solver whose steps hand something on to the next one (a force, a stage guess).

    torchdiffeq's own loop forms ``y1 = y0 + dy`` and cannot pass anything between steps, so
    :meth:`integrate` is replaced by the same loop over the grid that keeps the step's exact
    output and its carry. Output times between grid points are interpolated as torchdiffeq does.
    """

    def _initial_carry(self, y0: Tensor) -> Any:
        return None

    @abc.abstractmethod
    def _step(self, t0: Tensor, dt: Tensor, y0: Tensor, carry: Any) -> tuple[Tensor, Any]:
        """One step from ``y0`` at ``t0`` of size ``dt``: the new state and the carry for the next step."""

    def _step_func(self, func, t0, dt, t1, y0):
        # used by torchdiffeq's event handling, one step at a time
        y1, _ = self._step(t0, dt, y0, self._initial_carry(y0))
        f0 = func(t0, y0) if self.interp == "cubic" else None
        return y1 - y0, f0

    def integrate(self, t: Tensor) -> Tensor:
        time_grid = self.grid_constructor(self.func, self.y0, t)
        if not (time_grid[0] == t[0] and time_grid[-1] == t[-1]):
            raise ValueError("the time grid must start at t[0] and end at t[-1]")
        solution = torch.empty(len(t), *self.y0.shape, dtype=self.y0.dtype, device=self.y0.device)
        solution[0] = self.y0
        j = 1
        y0, carry = self.y0, self._initial_carry(self.y0)
        for t0, t1 in zip(time_grid[:-1], time_grid[1:]):
            self.func.callback_step(t0, y0, t1 - t0)
            y1, carry = self._step(t0, t1 - t0, y0, carry)
            while j < len(t) and t1 >= t[j]:
                solution[j] = self._output(t0, t1, y0, y1, t[j])
                j += 1
            y0 = y1
        return solution

    def _output(self, t0: Tensor, t1: Tensor, y0: Tensor, y1: Tensor, t: Tensor) -> Tensor:
        if t == t1:
            return y1
        if self.interp == "linear":
            return self._linear_interp(t0, t1, y0, y1, t)
        if self.interp == "cubic":
            f0, f1 = self.func(t0, y0), self.func(t1, y1)
            return self._cubic_hermite_interp(t0, y0, f0, t1, y1, f1, t)
        raise ValueError(f"unknown interpolation {self.interp!r}; choose 'linear' or 'cubic'")


# -- splitting methods (separable H) ---------------------------------------------------------------

class CompositionSolver(_CarryingSolver):
    """A torchdiffeq solver that steps with a :class:`~hamnet.composition.Composition`, for separable H.

    A subclass sets ``composition``; its name and order become the solver's. The step is the
    engine's out-of-place one, so autograd differentiates through it, and the carry is the force
    at the current ``q``: one force evaluation per sub-step.
    """

    composition: Composition

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "composition" in cls.__dict__:
            cls.order = cls.composition.order
            cls.method_name = cls.composition.name

    def __init__(self, func, y0, **kwargs) -> None:
        super().__init__(func, y0, **kwargs)
        self.field, self.sign = _separable_field(self.func, self.method_name)
        if y0.dim() != 4 or y0.shape[1] != 2:
            raise ValueError(f"{self.method_name!r} needs a state z: (B, 2, N, D), got shape {tuple(y0.shape)}")

    def _initial_carry(self, y0: Tensor) -> Tensor:
        return self.field.force(y0[:, 0])

    def _step(self, t0, dt, y0, force):
        h = self.sign * torch.as_tensor(dt, dtype=y0.dtype, device=y0.device)
        q, p, force = self.composition.step(y0[:, 0], y0[:, 1], force, h, self.field.velocity, self.field.force)
        return torch.stack([q, p], dim=1), force


class Leapfrog(CompositionSolver):
    """Stoermer-Verlet (velocity Verlet, kick-drift-kick), order 2, for separable ``H = T(p) + V(q)``.

    Symplectic and time-reversible: the energy error stays bounded (it oscillates at ``O(dt^2)``
    with no trend) over exponentially long times, and every quadratic invariant that ``H``
    conserves by symmetry is kept to round-off: total linear momentum when ``V`` is translation
    invariant, angular momentum when ``V`` is rotation invariant about the origin. One force
    evaluation per step, since the force at the end of a step is the one the next step starts with.
    """

    composition = COMPOSITIONS["leapfrog"]


class Yoshida4(CompositionSolver):
    """Yoshida's fourth-order symmetric composition of three leapfrog steps, for separable H.

    Sub-steps ``w1 dt, w0 dt, w1 dt`` with ``w1 = 1 / (2 - 2^(1/3))`` and ``w0 = 1 - 2 w1`` (the middle
    one runs backwards). Conserves what leapfrog conserves (symplectic, reversible, momenta kept
    to round-off for a symmetric ``V``) with an ``O(dt^4)`` energy error; three forces per step.
    """

    composition = COMPOSITIONS["yoshida4"]


class Yoshida6(CompositionSolver):
    """Yoshida's sixth-order composition of seven leapfrog steps (solution A), for separable H.

    Conserves what leapfrog conserves, with an ``O(dt^6)`` energy error; seven forces per step.
    """

    composition = COMPOSITIONS["yoshida6"]


class Yoshida8(CompositionSolver):
    """Yoshida's eighth-order composition of fifteen leapfrog steps (solution D), for separable H.

    The ground truth's method (:mod:`hamnet.simulation`). Conserves what leapfrog conserves, with
    an ``O(dt^8)`` energy error; fifteen forces per step.
    """

    composition = COMPOSITIONS["yoshida8"]


# -- implicit Runge-Kutta methods (any H) ---------------------------------------------------------

class _ImplicitRungeKutta(_CarryingSolver):
    """A fully implicit Runge-Kutta method whose stage equations are solved by fixed-point iteration.

    The stages ``k_i = f(t0 + c_i dt, y0 + dt sum_j a_ij k_j)`` are iterated until the last update
    moved the state by at most ``tol`` relative to its size (default ``TOLERANCE_IN_EPS`` machine
    epsilons of the state's dtype), else :class:`ConvergenceError`. The iteration converges when
    ``dt`` times the Lipschitz constant of ``f`` is small, the regime where these methods are
    accurate anyway. The previous step's stages start the next solve. With gradients enabled the
    iterations are differentiated through (exact to the tolerance, memory grows with iterations).
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    method_name: str

    def __init__(self, func, y0, tol: float | None = None, max_iters: int = DEFAULT_MAX_ITERS, **kwargs) -> None:
        super().__init__(func, y0, **kwargs)
        if tol is None:
            tol = TOLERANCE_IN_EPS * torch.finfo(y0.dtype).eps
        if not (tol > 0 and max_iters >= 1):
            raise ValueError(f"{self.method_name!r} needs tol > 0 and max_iters >= 1, got tol={tol}, max_iters={max_iters}")
        self.tol = float(tol)
        self.max_iters = int(max_iters)

    def _step(self, t0, dt, y0, stages):
        h = torch.as_tensor(dt, dtype=y0.dtype, device=y0.device)
        if stages is None:
            stages = [self.func(t0, y0)] * len(self.b)
        # convergence is judged per system (the leading axis of a batched state), so that one system that
        # turns non-finite or converges slowly neither stops nor holds back the solve of the others
        per_system = y0.dim() >= 2

        def largest(x: Tensor) -> Tensor:
            x = x.detach().abs()
            return x.flatten(1).amax(1) if per_system else x.max().reshape(1)

        y_size = largest(y0)
        for _ in range(self.max_iters):
            new = [
                self.func(t0 + c_i * dt, y0 + h * sum(a_ij * k for a_ij, k in zip(row, stages)))
                for row, c_i in zip(self.a, self.c)
            ]
            change = torch.stack([largest(n - k) for n, k in zip(new, stages)]).amax(0) * h.abs()
            size = torch.maximum(y_size, torch.stack([largest(n) for n in new]).amax(0) * h.abs())
            stages = new
            finite = torch.isfinite(change)  # a non-finite system is left for the caller to report, with its step
            if bool((~finite | (change <= self.tol * size)).all()):
                break
        else:
            worst = float(torch.where(finite, change / size, 0).max())
            raise ConvergenceError(
                f"{self.method_name}: the implicit stage equations did not converge to tol={self.tol:.1e} "
                f"in {self.max_iters} fixed-point iterations at t={float(t0):.6g} (last relative change "
                f"{worst:.1e}); use a smaller step (--dt) or allow more iterations (--max-iters on the "
                f"command line, options={{'max_iters': ...}} in Python)"
            )
        y1 = y0 + h * sum(b_i * k for b_i, k in zip(self.b, stages))
        return y1, stages


class ImplicitMidpoint(_ImplicitRungeKutta):
    """Implicit midpoint rule ``y1 = y0 + dt f((y0 + y1) / 2)``, order 2, for any vector field.

    Symplectic for every Hamiltonian, separable or not, and symmetric (time-reversible); it
    conserves every quadratic invariant exactly (linear and angular momentum when ``H`` has the
    symmetry), and the energy error stays bounded. Conservation holds to the solve's tolerance.
    """

    order = 2
    a = ((0.5,),)
    b = (1.0,)
    c = (0.5,)
    method_name = "implicit_midpoint"


_SQRT3_6 = math.sqrt(3.0) / 6.0


class Gauss4(_ImplicitRungeKutta):
    """Two-stage Gauss-Legendre Runge-Kutta, order 4, for any vector field.

    Like the implicit midpoint rule (the one-stage Gauss method) it is symplectic for any
    Hamiltonian, symmetric, and conserves quadratic invariants to the solve's tolerance, with an
    ``O(dt^4)`` bounded energy error.
    """

    order = 4
    a = ((0.25, 0.25 - _SQRT3_6), (0.25 + _SQRT3_6, 0.25))
    b = (0.5, 0.5)
    c = (0.5 - _SQRT3_6, 0.5 + _SQRT3_6)
    method_name = "gauss4"


# -- the integrator registry -----------------------------------------------------------------------

@dataclass(frozen=True)
class Integrator:
    """What hamnet knows about an integrator: the entries of :data:`INTEGRATORS`.

    ``solver`` is the torchdiffeq solver class, or ``None`` for one of torchdiffeq's own methods
    (found in its table under ``name``). ``separable_only``: needs ``H = T(p) + V(q)``;
    ``fixed_step``: steps on the given grid (else adaptive, controlled by ``rtol`` and ``atol``).
    """

    name: str
    order: int
    symplectic: bool
    separable_only: bool
    fixed_step: bool
    solver: type | None
    description: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"an integrator name must be a non-empty string, got {self.name!r}")
        if self.solver is not None and not isinstance(self.solver, type):
            raise TypeError(f"integrator {self.name!r}: solver must be a solver class or None, got {self.solver!r}")
        declared = getattr(self.solver, "order", self.order)
        if not (isinstance(self.order, int) and self.order >= 1) or declared != self.order:
            raise ValueError(f"integrator {self.name!r}: order must be a positive integer equal to the "
                             f"solver's own ({declared}), got {self.order!r}")

    @classmethod
    def from_solver(cls, solver: type, description: str, *, symplectic: bool, separable_only: bool,
                    fixed_step: bool = True) -> Integrator:
        """The entry for one of hamnet's solver classes, named and ordered as the class declares."""
        return cls(name=solver.method_name, order=solver.order, symplectic=symplectic,
                   separable_only=separable_only, fixed_step=fixed_step, solver=solver, description=description)


INTEGRATORS: Registry[Integrator] = Registry(
    "integrator", hint="add one with hamnet.integrate.register_integrator (see docs/integrators.md)")


def register_integrator(integrator: Integrator, *, replace: bool = False) -> Integrator:
    """Add ``integrator`` to :data:`INTEGRATORS` and its solver to torchdiffeq's table; returns it.

    Registering the same entry again is a no-op. Where torchdiffeq already holds a different
    solver under the name, hamnet's goes in under ``"hamnet_<name>"`` instead (see :func:`solver_key`).
    """
    if not isinstance(integrator, Integrator):
        raise TypeError(f"register_integrator takes an Integrator, got {type(integrator).__name__}")
    if integrator.solver is None:
        if integrator.name not in SOLVERS:
            raise ValueError(f"torchdiffeq has no method named {integrator.name!r}; give the solver class as solver=")
        declared = getattr(SOLVERS[integrator.name], "order", integrator.order)
        if declared != integrator.order:
            raise ValueError(f"torchdiffeq's {integrator.name!r} has order {declared}, not {integrator.order}")
    previous = INTEGRATORS.get(integrator.name) if integrator.name in INTEGRATORS else None
    INTEGRATORS.register(integrator.name, integrator, replace=replace)
    _install(integrator, replacing=previous.solver if previous is not None else None)
    return integrator


def get_integrator(name: str) -> Integrator:
    """The registered integrator ``name`` (any case); ``ValueError`` listing the known names otherwise."""
    return INTEGRATORS.get(name)


def solver_key(name: str) -> str:
    """The key of integrator ``name`` in torchdiffeq's solver table: pass it as ``odeint(method=...)``.

    That is ``name`` itself unless torchdiffeq has a different solver of that name (a later
    torchdiffeq release may add one), in which case it is ``"hamnet_<name>"``. A solver that has
    gone missing from torchdiffeq's table since it was registered is put back first.
    """
    return _install(get_integrator(name))


def _install(integrator: Integrator, replacing: type | None = None) -> str:
    """Put ``integrator``'s solver in torchdiffeq's table (idempotent); return its key there. ``replacing``:
    the solver of the entry it replaces, whose place in the table it takes."""
    name, solver = integrator.name, integrator.solver
    if solver is None:
        return name
    key = name
    ours = replacing is not None and SOLVERS.get(name) is replacing
    if name in SOLVERS and not ours and not _same_class(SOLVERS[name], solver):
        # never replace a solver torchdiffeq has of its own: a clash must neither break import nor
        # change what torchdiffeq's name means
        key = f"{HAMNET_PREFIX}{name}"
        if SOLVERS.get(key) is not solver:
            logger.debug("torchdiffeq already has a solver named %r (%s); hamnet's %s is registered as %r",
                         name, _qualified(SOLVERS[name]), solver.__qualname__, key)
    SOLVERS[key] = solver
    return key


def _qualified(cls: Any) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _same_class(a: Any, b: type) -> bool:
    # by qualified name, so that re-importing this module (a reload) counts as the same solver
    return a is not None and _qualified(a) == _qualified(b)


def _register_built_ins() -> None:
    any_h = {"symplectic": True, "separable_only": False}
    split = {"symplectic": True, "separable_only": True}
    for integrator in (
        Integrator.from_solver(Leapfrog, "Stoermer-Verlet kick-drift-kick; one force per step", **split),
        Integrator.from_solver(Yoshida4, "Yoshida's 3-stage composition of leapfrog", **split),
        Integrator.from_solver(Yoshida6, "Yoshida's 7-stage composition of leapfrog (solution A)", **split),
        Integrator.from_solver(Yoshida8, "Yoshida's 15-stage composition of leapfrog (solution D)", **split),
        Integrator.from_solver(ImplicitMidpoint, "implicit midpoint rule (1-stage Gauss)", **any_h),
        Integrator.from_solver(Gauss4, "2-stage Gauss-Legendre Runge-Kutta", **any_h),
        _torchdiffeq_method("euler", 1, "explicit Euler", fixed_step=True),
        _torchdiffeq_method("midpoint", 2, "explicit midpoint", fixed_step=True),
        _torchdiffeq_method("rk4", 4, "classical Runge-Kutta (3/8 rule); the paper's training method", fixed_step=True),
        _torchdiffeq_method("dopri5", 5, "adaptive Dormand-Prince 5(4)", fixed_step=False),
        _torchdiffeq_method("dopri8", 8, "adaptive Dormand-Prince 8(7)", fixed_step=False),
    ):
        register_integrator(integrator)


def _torchdiffeq_method(name: str, order: int, description: str, *, fixed_step: bool) -> Integrator:
    return Integrator(name=name, order=order, symplectic=False, separable_only=False, fixed_step=fixed_step,
                      solver=None, description=f"torchdiffeq's {description}")


_register_built_ins()
