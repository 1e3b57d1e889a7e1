"""hamnet.integrate and hamnet.composition: the registry, registration with torchdiffeq (and name
clashes with it), order, symplecticity, reversibility, refusals, gradients, the documented example.

Problems: softened two-body orbits (nonlinear, separable, from ``systems``), a non-separable
nonlinear ``H`` defined here, and a separable pair potential whose weights come in through
``params`` (so gradients with respect to "weights" can be checked without the state requiring
grad). All in float64.
"""

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS

from hamnet import integrate
from hamnet.composition import COMPOSITIONS, Composition
from hamnet.dynamics import HamiltonianField, potential_force
from hamnet.integrate import (INTEGRATORS, ConvergenceError, Gauss4, ImplicitMidpoint, Integrator, Leapfrog,
                              Yoshida4, Yoshida6, Yoshida8, get_integrator, register_integrator, solver_key)
from hamnet.simulation import simulate
from hamnet.systems import NBody

from problems import log_log_slope, two_body_orbit

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
SEPARABLE_METHODS = ["leapfrog", "yoshida4", "yoshida6", "yoshida8"]
SYMPLECTIC_METHODS = SEPARABLE_METHODS + ["implicit_midpoint", "gauss4"]
HAMNET_SOLVERS = {"leapfrog": Leapfrog, "yoshida4": Yoshida4, "yoshida6": Yoshida6, "yoshida8": Yoshida8,
                  "implicit_midpoint": ImplicitMidpoint, "gauss4": Gauss4}
#: the orders the literature gives, written independently of the code that declares them
ORDERS = {"euler": 1, "midpoint": 2, "leapfrog": 2, "implicit_midpoint": 2, "yoshida4": 4, "gauss4": 4,
          "rk4": 4, "dopri5": 5, "yoshida6": 6, "yoshida8": 8, "dopri8": 8}
ADAPTIVE = {"dopri5", "dopri8"}
#: step counts over t in [0, 2] at which each order is asymptotic, yet above the reference's accuracy
STEPS_BY_ORDER = {1: (400, 800, 1600, 3200), 2: (40, 80, 160, 320), 4: (50, 100, 200, 400),
                  6: (20, 30, 45, 68), 8: (24, 36, 54, 81)}
FORCES_PER_STEP = {"leapfrog": 1, "yoshida4": 3, "yoshida6": 7, "yoshida8": 15}


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


def convergence_slope(method, field, z0, end=2.0):
    """Fitted order of ``method`` (a torchdiffeq key) on ``[0, end]``, against a tight dopri5 reference."""
    t = torch.tensor([0.0, end], dtype=F64)
    reference = odeint(field, z0, t, method="dopri5", rtol=1e-13, atol=1e-13)[-1]
    order = SOLVERS[method].order
    dts = [end / n for n in STEPS_BY_ORDER[order]]
    errors = [(odeint(field, z0, t, method=method, options={"step_size": dt})[-1] - reference).abs().max().item()
              for dt in dts]
    assert min(errors) > 1e-10, "errors must stay above the reference's accuracy for the fit to mean anything"
    return log_log_slope(dts, errors)


# -- the registry and torchdiffeq's table ----------------------------------------------------------

def test_every_integrator_is_in_torchdiffeq_table_with_its_order():
    assert set(INTEGRATORS) == set(ORDERS)
    for name in INTEGRATORS:
        integrator = get_integrator(name)
        solver = SOLVERS[solver_key(name)]
        assert solver is HAMNET_SOLVERS.get(name, SOLVERS[name])
        assert integrator.solver is HAMNET_SOLVERS.get(name)
        assert integrator.order == solver.order == ORDERS[name]
        assert integrator.fixed_step == (name not in ADAPTIVE)
        assert integrator.symplectic == (name in SYMPLECTIC_METHODS)
        assert integrator.separable_only == (name in SEPARABLE_METHODS)
    assert solver_key(" LeapFrog ") == "leapfrog" and get_integrator("GAUSS4") is INTEGRATORS.get("gauss4")


def test_every_composition_has_a_solver_stepping_with_it():
    assert set(COMPOSITIONS) == set(SEPARABLE_METHODS)
    for name, composition in COMPOSITIONS.items():
        assert get_integrator(name).solver.composition is composition
        assert composition.order == ORDERS[name] and composition.force_evaluations == FORCES_PER_STEP[name]


def test_unknown_names_are_refused_with_the_known_ones():
    for lookup in (get_integrator, solver_key):
        with pytest.raises(ValueError, match=r"unknown integrator 'rk5'; known: leapfrog, .*gauss4, .*dopri5.*register_integrator"):
            lookup("rk5")


def test_registering_again_is_a_no_op_and_a_taken_name_is_refused():
    before = dict(SOLVERS)
    assert register_integrator(get_integrator("leapfrog")) is get_integrator("leapfrog")
    assert SOLVERS == before
    other = Integrator.from_solver(Leapfrog, "another", symplectic=True, separable_only=True)
    with pytest.raises(ValueError, match="'leapfrog' is already registered"):
        register_integrator(other)


def test_an_entry_must_agree_with_its_solver_and_torchdiffeq():
    with pytest.raises(ValueError, match=r"equal to the solver's own \(2\)"):
        Integrator("odd", 3, symplectic=True, separable_only=True, fixed_step=True, solver=Leapfrog, description="")
    with pytest.raises(ValueError, match="torchdiffeq has no method named 'rk5'"):
        register_integrator(Integrator("rk5", 5, symplectic=False, separable_only=False, fixed_step=True,
                                       solver=None, description=""))
    with pytest.raises(ValueError, match="torchdiffeq.s .euler. has order 1, not 2"):
        register_integrator(Integrator("euler", 2, symplectic=False, separable_only=False, fixed_step=True,
                                       solver=None, description=""), replace=True)
    assert "rk5" not in INTEGRATORS and get_integrator("euler").order == 1


FOREIGN_SOLVERS_SCRIPT = textwrap.dedent("""
    import logging, sys
    import torch
    from torchdiffeq import odeint
    from torchdiffeq._impl.fixed_grid import Euler
    from torchdiffeq._impl.odeint import SOLVERS

    class Foreign(Euler):
        def __init__(self, *args, **kwargs):
            raise AssertionError("torchdiffeq's own solver ran instead of hamnet's")

    NAMES = {names!r}
    for name in NAMES:
        SOLVERS[name] = Foreign
    logging.getLogger("hamnet").setLevel(logging.DEBUG)
    logging.getLogger("hamnet").addHandler(logging.StreamHandler(sys.stdout))

    import hamnet
    from hamnet.dynamics import HamiltonianField
    from hamnet.integrate import get_integrator, solver_key
    from hamnet.systems import NBody

    m = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    q = torch.tensor([[[1 / 3, 0.0], [-2 / 3, 0.0]]], dtype=torch.float64)
    z0 = torch.stack([q, m.unsqueeze(-1) * torch.tensor([[[0.0, 1 / 3], [0.0, -2 / 3]]], dtype=torch.float64)], 1)
    field = HamiltonianField(NBody(n_particles=2, softening=0.1), {{"m": m}})
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    reference = odeint(field, z0, t, method="dopri5", rtol=1e-12, atol=1e-12)
    for name in NAMES:
        key = solver_key(name)
        assert key == "hamnet_" + name and SOLVERS[name] is Foreign, (name, key)
        assert SOLVERS[key] is get_integrator(name).solver and get_integrator(name).solver.__module__ == "hamnet.integrate"
        error = (odeint(field, z0, t, method=key) - reference).abs().max().item()
        assert error < 1e-3, (name, error)
    print("all hamnet solvers ran")
""")


def test_a_name_taken_in_torchdiffeq_moves_hamnets_solver_aside():
    # a fresh interpreter, so that torchdiffeq's table holds the foreign solvers before hamnet is imported
    script = FOREIGN_SOLVERS_SCRIPT.format(names=sorted(HAMNET_SOLVERS))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all hamnet solvers ran" in result.stdout
    for name in HAMNET_SOLVERS:
        assert f"registered as 'hamnet_{name}'" in result.stdout


# -- the composition engine -----------------------------------------------------------------------

def test_composition_coefficients_are_consistent():
    for composition in COMPOSITIONS.values():
        assert len(composition.kicks) == len(composition.drifts) + 1
        assert math.fsum(composition.kicks) == pytest.approx(1.0, abs=1e-14)
        assert math.fsum(composition.drifts) == pytest.approx(1.0, abs=1e-14)
        assert composition.weights == tuple(reversed(composition.weights))  # symmetric: time-reversible
    with pytest.raises(ValueError, match="weights must sum to 1"):
        Composition("bad", 2, (0.5, 0.4))


@pytest.mark.parametrize("method", SEPARABLE_METHODS)
def test_in_place_and_differentiable_steps_agree(method, generator):
    system, params, z0 = pair_problem(generator)
    field, composition = HamiltonianField(system, params), COMPOSITIONS[method]
    q, p = z0[:, 0], z0[:, 1]
    out_of_place = composition.step(q, p, field.force(q), 0.1, field.velocity, field.force)
    in_place = composition.step(q.clone(), p.clone(), field.force(q), 0.1, field.velocity, field.force, in_place=True)
    assert (out_of_place[0] - q).abs().max() > 1e-3
    for a, b in zip(out_of_place, in_place):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", SEPARABLE_METHODS)
def test_odeint_solver_matches_the_ground_truth_simulator(method):
    system, params, z0 = two_body_orbit()
    _, truth, _ = simulate(system, z0, params, steps=30, dt=0.02, substeps=1, method=method)
    t = torch.arange(31, dtype=F64) * 0.02
    solved = odeint(HamiltonianField(system, params), z0, t, method=solver_key(method))
    torch.testing.assert_close(solved.transpose(0, 1), truth, rtol=0, atol=1e-12)


# -- accuracy and geometry ------------------------------------------------------------------------

@pytest.mark.parametrize("method", [name for name in ORDERS if name not in ADAPTIVE])
def test_convergence_order_of_every_fixed_step_integrator(method):
    system, params, z0 = two_body_orbit(speed=1.0)
    fitted = convergence_slope(solver_key(method), HamiltonianField(system, params), z0)
    assert fitted == pytest.approx(ORDERS[method], abs=0.25)


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


@pytest.mark.parametrize("method, per_step", FORCES_PER_STEP.items())
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


# -- docs/integrators.md ------------------------------------------------------------------------

def test_documented_table_lists_every_integrator():
    text = (ROOT / "docs" / "integrators.md").read_text()
    yes_no = {True: "yes", False: "no"}
    for name in INTEGRATORS:
        entry = get_integrator(name)
        row = (f"| {entry.name} | {entry.order} | {yes_no[entry.symplectic]} | {yes_no[entry.separable_only]} "
               f"| {yes_no[entry.fixed_step]} |")
        assert row in text, row


@pytest.fixture
def documented_example():
    """Run the example of docs/integrators.md (it registers 'suzuki4'), and undo it afterwards."""
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "integrators.md").read_text(), re.S).group(1)
    exec(compile(code, "docs/integrators.md", "exec"), {})
    key = solver_key("suzuki4")
    yield key
    INTEGRATORS.unregister("suzuki4")
    SOLVERS.pop(key)


def test_documented_composition_has_its_order(documented_example):
    entry = get_integrator("suzuki4")
    assert (entry.order, entry.symplectic, entry.separable_only, entry.fixed_step) == (4, True, True, True)
    system, params, z0 = two_body_orbit(speed=1.0)
    assert convergence_slope(documented_example, HamiltonianField(system, params), z0) == pytest.approx(4, abs=0.25)


@pytest.mark.parametrize("method", ["implicit_midpoint", "gauss4"])
def test_implicit_solves_converge_per_system_so_a_failing_system_leaves_the_others_alone(method):
    # system 1's field stops being finite after t = 0.25; system 0 must come out as it does alone
    rotation = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)

    def field(t, y):
        out = y @ rotation.T + 0.1 * y.square()
        if y.shape[0] > 1 and float(t) > 0.25:
            out = out.clone()
            out[1] = math.nan
        return out

    y0 = torch.tensor([[1.0, 0.3], [0.5, -0.2]], dtype=torch.float64)
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    together = odeint(field, y0, t, method=integrate.solver_key(method))
    alone = odeint(field, y0[:1], t, method=integrate.solver_key(method))
    assert torch.allclose(together[:, 0], alone[:, 0], rtol=1e-13, atol=1e-13)
    assert not torch.isfinite(together[-1, 1]).all()


def test_replacing_a_registered_integrator_takes_its_place_in_torchdiffeqs_table():
    original = integrate.get_integrator("yoshida6")

    class Yoshida6Again(integrate.CompositionSolver):
        composition = COMPOSITIONS["yoshida6"]

    replacement = Integrator.from_solver(Yoshida6Again, "the same composition, another class", symplectic=True,
                                         separable_only=True)
    try:
        integrate.register_integrator(replacement, replace=True)
        assert SOLVERS["yoshida6"] is Yoshida6Again and integrate.solver_key("yoshida6") == "yoshida6"
        assert "hamnet_yoshida6" not in SOLVERS
    finally:
        integrate.register_integrator(original, replace=True)
    assert SOLVERS["yoshida6"] is original.solver
