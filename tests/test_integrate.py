"""hamnet.integrate: registration with torchdiffeq, order, symplecticity, reversibility, refusals, gradients.

Problems: an eccentric softened two-body orbit (nonlinear, separable, from ``systems``), a
non-separable nonlinear ``H`` defined here, and a separable pair potential whose weights come in
through ``params`` (so gradients with respect to "weights" can be checked without the state
requiring grad). All in float64.
"""

import math

import pytest
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS

from hamnet import integrate
from hamnet.dynamics import HamiltonianField, potential_force
from hamnet.integrate import ConvergenceError, Gauss4, ImplicitMidpoint, Leapfrog, Yoshida4, register_solvers
from systems import NBody

F64 = torch.float64
SEPARABLE_METHODS = ["leapfrog", "yoshida4"]
SYMPLECTIC_METHODS = ["leapfrog", "yoshida4", "implicit_midpoint", "gauss4"]
ORDERS = {"leapfrog": 2, "implicit_midpoint": 2, "yoshida4": 4, "gauss4": 4, "rk4": 4}


def two_body_orbit():
    """Masses 1 and 0.5 in their centre-of-mass frame, separation 0.3 to 1 (softening 0.1)."""
    system = NBody(n_particles=2, softening=0.1)
    m = torch.tensor([[1.0, 0.5]], dtype=F64)
    q = torch.tensor([[[1 / 3, 0.0], [-2 / 3, 0.0]]], dtype=F64)
    v = torch.tensor([[[0.0, 0.8 / 3], [0.0, -1.6 / 3]]], dtype=F64)
    z0 = torch.stack([q, m.unsqueeze(-1) * v], dim=1)
    return system, {"m": m}, z0


class NonSeparable:
    """``H = sum_i |p_i|^2 (1 + |q_i|^2 / 4) / 2 m_i + sum_i |q_i|^4 / 4 + q_0 . q_1``: nonlinear, not separable."""

    separable = False

    def hamiltonian(self, z, params):
        q, p = z[:, 0], z[:, 1]
        kinetic = (p.square().sum(-1) * (1 + q.square().sum(-1) / 4) / (2 * params["m"])).sum(-1)
        return kinetic + q.square().sum(-1).square().sum(-1) / 4 + (q[:, 0] * q[:, 1]).sum(-1)


def non_separable_problem(generator):
    z0 = 0.7 * torch.randn(2, 2, 3, 2, generator=generator, dtype=F64)
    m = 0.5 + torch.rand(2, 3, generator=generator, dtype=F64)
    return NonSeparable(), {"m": m}, z0


class WeightedPairPotential:
    """Separable ``V = sum_{i<j} w_0 |q_i - q_j|^2 + w_1 cos(w_2 |q_i - q_j|^2)``; ``w = params["w"]: (B, 3)``."""

    separable = True

    def potential(self, q, params):
        w = params["w"]
        r2 = (q.unsqueeze(1) - q.unsqueeze(2)).square().sum(-1)  # (B, N, N)
        pair = w[:, 0, None, None] * r2 + w[:, 1, None, None] * torch.cos(w[:, 2, None, None] * r2)
        return 0.5 * (pair * (1 - torch.eye(q.shape[1], dtype=q.dtype))).sum((1, 2))

    def hamiltonian(self, z, params):
        return 0.5 * (z[:, 1].square().sum(-1) / params["m"]).sum(-1) + self.potential(z[:, 0], params)

    def velocity(self, p, params):
        return p / params["m"].unsqueeze(-1)

    def forces(self, q, params):
        return potential_force(self.potential, q, params)


def pair_problem(generator):
    z0 = 0.5 * torch.randn(1, 2, 3, 2, generator=generator, dtype=F64)
    params = {"m": torch.tensor([[1.0, 2.0, 0.5]], dtype=F64), "w": torch.tensor([[1.0, 0.3, 2.0]], dtype=F64)}
    return WeightedPairPotential(), params, z0


def step(field, z, dt, method, n=1):
    t = torch.arange(n + 1, dtype=F64) * dt
    return odeint(field, z, t, method=method)[-1]


def slope(dts, errors):
    x, y = torch.tensor(dts).log(), torch.tensor(errors).log()
    return float(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum())


# -- registration -----------------------------------------------------------------------------

def test_solvers_are_registered_with_torchdiffeq():
    expected = {"leapfrog": Leapfrog, "yoshida4": Yoshida4, "implicit_midpoint": ImplicitMidpoint, "gauss4": Gauss4}
    for name, solver in expected.items():
        assert SOLVERS[name] is solver
        assert solver.order == ORDERS[name]
    register_solvers()  # idempotent
    assert all(SOLVERS[name] is solver for name, solver in expected.items())


def test_registration_fills_any_table_and_refuses_to_replace_a_different_solver():
    table = {}
    register_solvers(table)
    assert table == integrate.SYMPLECTIC_SOLVERS
    table = {"leapfrog": SOLVERS["rk4"]}
    with pytest.raises(RuntimeError, match="already has a solver named 'leapfrog'"):
        register_solvers(table)


# -- accuracy and geometry ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "implicit_midpoint", "gauss4", "rk4"])
def test_convergence_order_on_an_eccentric_orbit(method):
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    end = 2.0
    t = torch.tensor([0.0, end], dtype=F64)
    reference = odeint(field, z0, t, method="dopri5", rtol=1e-12, atol=1e-12)[-1]
    steps = (40, 80, 160, 320) if ORDERS[method] == 2 else (100, 200, 400, 800)
    dts = [end / n for n in steps]
    errors = [(odeint(field, z0, t, method=method, options={"step_size": dt})[-1] - reference).abs().max().item()
              for dt in dts]
    assert min(errors) > 1e-10, "errors must stay above the reference's accuracy for the fit to mean anything"
    assert slope(dts, errors) == pytest.approx(ORDERS[method], abs=0.2)


def one_step_jacobian(field, z0, dt, method):
    """``M = d z1 / d z0`` of one step, as a ``(2 N D, 2 N D)`` matrix in (q, p) order."""
    size = z0[0].numel()
    jac = torch.autograd.functional.jacobian(lambda x: step(field, x.view_as(z0), dt, method).flatten(), z0.flatten())
    return jac.reshape(size, size)


def symplectic_defect(matrix):
    n = matrix.shape[0] // 2
    eye, zero = torch.eye(n, dtype=F64), torch.zeros(n, n, dtype=F64)
    j = torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)
    return (matrix.T @ j @ matrix - j).abs().max().item()


@pytest.mark.parametrize("method", SYMPLECTIC_METHODS)
def test_one_step_is_symplectic_on_a_nonlinear_separable_h(method, generator):
    system, params, z0 = pair_problem(generator)
    matrix = one_step_jacobian(HamiltonianField(system, params), z0, 0.1, method)
    assert (matrix - torch.eye(matrix.shape[0], dtype=F64)).abs().max() > 1e-2  # a real, nonlinear step
    assert symplectic_defect(matrix) < 1e-10


@pytest.mark.parametrize("method", ["implicit_midpoint", "gauss4"])
def test_implicit_step_is_symplectic_on_a_non_separable_h(method, generator):
    model, params, z0 = non_separable_problem(generator)
    field = HamiltonianField(model, {"m": params["m"][:1]})
    assert symplectic_defect(one_step_jacobian(field, z0[:1], 0.1, method)) < 1e-10


def test_rk4_is_visibly_not_symplectic(generator):
    system, params, z0 = pair_problem(generator)
    assert symplectic_defect(one_step_jacobian(HamiltonianField(system, params), z0, 0.1, "rk4")) > 1e-7


@pytest.mark.parametrize("method", SYMPLECTIC_METHODS)
def test_time_reversible(method):
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    forward = step(field, z0, 0.02, method, n=200)
    flipped = torch.stack([forward[:, 0], -forward[:, 1]], dim=1)
    back = step(field, flipped, 0.02, method, n=200)
    assert (forward - z0).abs().max() > 0.1
    assert (torch.stack([back[:, 0], -back[:, 1]], dim=1) - z0).abs().max() < 1e-10


@pytest.mark.parametrize("method", SYMPLECTIC_METHODS)
def test_decreasing_time_runs_the_flow_backwards(method):
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    t = torch.arange(51, dtype=F64) * 0.02
    forward = odeint(field, z0, t, method=method)
    backward = odeint(field, forward[-1], t.flip(0), method=method)
    torch.testing.assert_close(backward.flip(0), forward, rtol=0, atol=1e-10)


class CountingForces(NBody):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forces(self, q, params):
        self.calls += 1
        return super().forces(q, params)


@pytest.mark.parametrize("method, per_step", [("leapfrog", 1), ("yoshida4", 3)])
def test_splitting_reuses_the_last_force(method, per_step):
    _, params, z0 = two_body_orbit()
    system = CountingForces(n_particles=2, softening=0.1)
    step(HamiltonianField(system, params), z0, 0.01, method, n=40)
    assert system.calls == 40 * per_step + 1


def test_output_times_off_the_step_grid_are_interpolated():
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    t = torch.tensor([0.0, 0.013, 0.1], dtype=F64)
    out = odeint(field, z0, t, method="leapfrog", options={"step_size": 0.01})
    on_grid = odeint(field, z0, torch.tensor([0.0, 0.01, 0.02], dtype=F64), method="leapfrog")
    torch.testing.assert_close(out[1], 0.7 * on_grid[1] + 0.3 * on_grid[2])
    torch.testing.assert_close(out[2], step(field, z0, 0.01, "leapfrog", n=10))


# -- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", SEPARABLE_METHODS)
def test_splitting_refuses_a_non_separable_hamiltonian(method, generator):
    model, params, z0 = non_separable_problem(generator)
    with pytest.raises(ValueError, match="only for separable H.*NonSeparable.*implicit_midpoint"):
        step(HamiltonianField(model, params), z0, 0.1, method)


@pytest.mark.parametrize("method", SEPARABLE_METHODS)
def test_splitting_refuses_a_plain_function(method):
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    with pytest.raises(ValueError, match="HamiltonianField"):
        step(lambda t, z: field(t, z), z0, 0.1, method)


@pytest.mark.parametrize("method", SEPARABLE_METHODS)
def test_splitting_refuses_tuple_states(method):
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    with pytest.raises(ValueError, match="not a tuple"):
        odeint(lambda t, y: (field(t, y[0]),), (z0,), torch.tensor([0.0, 0.1], dtype=F64), method=method)


@pytest.mark.parametrize("method", SEPARABLE_METHODS)
def test_splitting_refuses_to_be_the_adjoint_method(method, generator):
    system, params, z0 = pair_problem(generator)
    field = HamiltonianField(system, params)
    z0 = z0.requires_grad_(True)
    out = odeint_adjoint(field, z0, torch.tensor([0.0, 0.1], dtype=F64), method=method, adjoint_params=())
    with pytest.raises(ValueError, match="adjoint_method='rk4'"):
        out.sum().backward()


def test_splitting_forward_with_a_non_splitting_adjoint_matches_direct_gradients(generator):
    system, params, z0 = pair_problem(generator)
    field = HamiltonianField(system, params)
    t = torch.arange(11, dtype=F64) * 0.01
    z0 = z0.requires_grad_(True)
    (direct,) = torch.autograd.grad(odeint(field, z0, t, method="leapfrog")[-1].square().sum(), z0)
    adjoint_out = odeint_adjoint(field, z0, t, method="leapfrog", adjoint_method="gauss4",
                                 adjoint_params=(), adjoint_options={})
    (adjoint,) = torch.autograd.grad(adjoint_out[-1].square().sum(), z0)
    # the adjoint integrates a different discretisation, so agreement is to the methods' accuracy
    torch.testing.assert_close(adjoint, direct, rtol=1e-3, atol=1e-4)


def test_implicit_solve_that_cannot_converge_raises():
    system, params, z0 = two_body_orbit()
    with pytest.raises(ConvergenceError, match="did not converge.*smaller step"):
        odeint(HamiltonianField(system, params), z0, torch.tensor([0.0, 5.0], dtype=F64),
               method="implicit_midpoint", options={"max_iters": 5})


def test_implicit_tolerance_follows_the_dtype():
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    for dtype in (torch.float32, torch.float64):
        solver = ImplicitMidpoint(field, z0.to(dtype), atol=1e-9, rtol=1e-7)
        assert solver.tol == pytest.approx(integrate.TOLERANCE_IN_EPS * torch.finfo(dtype).eps)


# -- gradients through odeint ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "implicit_midpoint", "gauss4", "rk4"])
def test_training_loss_through_odeint_passes_gradcheck(method, generator):
    system, params, z0 = pair_problem(generator)
    t = torch.arange(4, dtype=F64) * 0.05
    target = z0 + 0.01

    def loss(z_start, weights):
        field = HamiltonianField(system, {"m": params["m"], "w": weights})
        return (odeint(field, z_start, t, method=method)[1:] - target).square().mean()

    weights = params["w"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (z0.clone().requires_grad_(True), weights))
    # the weights alone: the state does not require grad, the force's graph must still be kept
    assert torch.autograd.gradcheck(lambda w: loss(z0, w), (weights,))


@pytest.mark.parametrize("method", SYMPLECTIC_METHODS)
def test_event_handling_finds_the_same_time_as_rk4(method):
    system, params, z0 = two_body_orbit()
    field = HamiltonianField(system, params)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def separation_reaches_half(_, z):
        return (z[:, 0, 0] - z[:, 0, 1]).norm(dim=-1).sum() - 0.5

    found = {m: odeint(field, z0, t, method=m, options={"step_size": 0.001}, event_fn=separation_reaches_half)
             for m in (method, "rk4")}
    (event_time, states), (rk4_time, _) = found[method], found["rk4"]
    assert abs(separation_reaches_half(event_time, states[-1]).item()) < 1e-8
    assert event_time.item() == pytest.approx(rk4_time.item(), abs=1e-5)
