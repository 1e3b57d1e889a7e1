"""Symplectic integrators, registered with torchdiffeq so that ``odeint(..., method=name)`` finds them.

Note to the reader: the state is ``z: (B, 2, N, D)`` (positions ``q = z[:, 0]``, momenta
``p = z[:, 1]``) and the vector field is a :class:`hamnet.dynamics.HamiltonianField`. Importing this
module calls :func:`register_solvers`, which adds four fixed-step methods to torchdiffeq's solver
table (``torchdiffeq._impl.odeint.SOLVERS``, tested against torchdiffeq 0.2.5, whose maintainers
recommend exactly this for new fixed-grid solvers):

================= ===== ================ ==============================================
method            order field            evaluations per step
================= ===== ================ ==============================================
leapfrog          2     separable H only 1 force (the last one is reused)
yoshida4          4     separable H only 3 forces
implicit_midpoint 2     any ``func``     fixed-point iterations, each one ``func`` call
gauss4            4     any ``func``     fixed-point iterations, each two ``func`` calls
================= ===== ================ ==============================================

Like every torchdiffeq fixed-grid solver, these take one step per interval of ``t`` unless
``options={"step_size": dt}`` is given; ``rtol`` and ``atol`` do not apply to them. The implicit
methods take ``options={"tol": ..., "max_iters": ...}`` for their nonlinear solve.

The splitting methods (leapfrog, yoshida4) update ``q`` and ``p`` in turn, so they must see the
Hamiltonian structure. They find it by unwrapping torchdiffeq's own wrappers (``base_func``
chains) down to the :class:`HamiltonianField`; they follow time reversal and refuse, with a
message saying what to use instead, what they cannot integrate correctly: a field that is not a
separable ``HamiltonianField``, a tuple state, and therefore ``odeint_adjoint``'s backward pass
(its augmented state is a tuple) when one of them is the ``adjoint_method``.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import Tensor
from torchdiffeq._impl.misc import _PerturbFunc, _ReverseFunc, _TupleFunc, _TupleInputOnlyFunc
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

__all__ = [
    "Leapfrog",
    "Yoshida4",
    "ImplicitMidpoint",
    "Gauss4",
    "SYMPLECTIC_SOLVERS",
    "ConvergenceError",
    "register_solvers",
]

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

class _Composition(_CarryingSolver):
    """Kick-drift-kick leapfrog substeps of sizes ``c_i * dt``; the carry is the force at the current ``q``."""

    coefficients: tuple[float, ...]
    method_name: str

    def __init__(self, func, y0, **kwargs) -> None:
        super().__init__(func, y0, **kwargs)
        self.field, self.sign = _separable_field(self.func, self.method_name)
        if y0.dim() != 4 or y0.shape[1] != 2:
            raise ValueError(f"{self.method_name!r} needs a state z: (B, 2, N, D), got shape {tuple(y0.shape)}")

    def _initial_carry(self, y0: Tensor) -> Tensor:
        return self.field.force(y0[:, 0])

    def _step(self, t0, dt, y0, force):
        h = self.sign * torch.as_tensor(dt, dtype=y0.dtype, device=y0.device)
        q, p = y0[:, 0], y0[:, 1]
        for c in self.coefficients:
            p = p + (0.5 * c) * h * force
            q = q + c * h * self.field.velocity(p)
            force = self.field.force(q)
            p = p + (0.5 * c) * h * force
        return torch.stack([q, p], dim=1), force


class Leapfrog(_Composition):
    """Stoermer-Verlet (velocity Verlet, kick-drift-kick), order 2, for separable ``H = T(p) + V(q)``.

    Symplectic and time-reversible: the energy error stays bounded (it oscillates at ``O(dt^2)``
    with no trend) over exponentially long times, and every quadratic invariant that ``H``
    conserves by symmetry is kept to round-off: total linear momentum when ``V`` is translation
    invariant, angular momentum when ``V`` is rotation invariant about the origin. One force
    evaluation per step, since the force at the end of a step is the one the next step starts with.
    """

    order = 2
    coefficients = (1.0,)
    method_name = "leapfrog"


_CUBE_ROOT_2 = 2.0 ** (1.0 / 3.0)


class Yoshida4(_Composition):
    """Yoshida's fourth-order symmetric composition of three leapfrog steps, for separable H.

    Substeps ``w1 dt, w0 dt, w1 dt`` with ``w1 = 1 / (2 - 2^(1/3))`` and ``w0 = 1 - 2 w1`` (the middle
    one runs backwards). Conserves what leapfrog conserves (symplectic, reversible, momenta kept
    to round-off for a symmetric ``V``) with an ``O(dt^4)`` energy error; three forces per step.
    """

    order = 4
    coefficients = (1.0 / (2.0 - _CUBE_ROOT_2), -_CUBE_ROOT_2 / (2.0 - _CUBE_ROOT_2), 1.0 / (2.0 - _CUBE_ROOT_2))
    method_name = "yoshida4"


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
        y_size = y0.detach().abs().max()
        for _ in range(self.max_iters):
            new = [
                self.func(t0 + c_i * dt, y0 + h * sum(a_ij * k for a_ij, k in zip(row, stages)))
                for row, c_i in zip(self.a, self.c)
            ]
            change = max((n - k).detach().abs().max() for n, k in zip(new, stages)) * h.abs()
            size = torch.maximum(y_size, max(n.detach().abs().max() for n in new) * h.abs())
            stages = new
            if not torch.isfinite(change):
                break  # leave a non-finite state for the caller to report, with its step
            if change <= self.tol * size:
                break
        else:
            raise ConvergenceError(
                f"{self.method_name}: the implicit stage equations did not converge to tol={self.tol:.1e} "
                f"in {self.max_iters} fixed-point iterations at t={float(t0):.6g} (last relative change "
                f"{float(change / size):.1e}); use a smaller step or pass options={{'max_iters': ...}}"
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


SYMPLECTIC_SOLVERS: dict[str, type[FixedGridODESolver]] = {
    "leapfrog": Leapfrog,
    "yoshida4": Yoshida4,
    "implicit_midpoint": ImplicitMidpoint,
    "gauss4": Gauss4,
}


def register_solvers(table: dict[str, type] | None = None) -> None:
    """Add hamnet's solvers to torchdiffeq's solver table (or to ``table``). Idempotent.

    Refuses to replace a different solver already registered under one of the names.
    """
    table = SOLVERS if table is None else table
    for name, solver in SYMPLECTIC_SOLVERS.items():
        existing = table.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (solver.__module__, solver.__qualname__):
            raise RuntimeError(
                f"torchdiffeq already has a solver named {name!r} ({existing.__module__}.{existing.__qualname__}); "
                "hamnet will not replace it"
            )
        table[name] = solver


register_solvers()
