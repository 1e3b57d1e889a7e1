"""hamnet.dynamics: J grad H agrees with analytic forces, works under no_grad, and trains through the
force (a second derivative: checked in float64 against finite differences and in float32 against float64)."""

import copy
import functools

import pytest
import torch
from conftest import TOLERANCES, assert_close
from problems import cast, small_model, springs_batch

from hamnet.dynamics import HamiltonianField, hamiltonian_gradient, keeps_graph, potential_force

F64 = torch.float64
model = functools.partial(small_model, seed=3)


class AsNonSeparable:
    """A system seen only through its Hamiltonian, so the field must differentiate all of ``H``."""

    separable = False

    def __init__(self, system):
        self.system = system

    def hamiltonian(self, z, params):
        return self.system.hamiltonian(z, params)


def test_separable_field_uses_velocity_and_analytic_force(generator):
    system, params, z0 = springs_batch(generator)
    dz = HamiltonianField(system, params)(torch.tensor(0.0), z0)
    torch.testing.assert_close(dz[:, 0], z0[:, 1] / params["m"].unsqueeze(-1))
    torch.testing.assert_close(dz[:, 1], system.forces(z0[:, 0], params))


def test_autograd_field_of_the_full_hamiltonian_is_j_grad_h(generator):
    system, params, z0 = springs_batch(generator)
    expected = HamiltonianField(system, params)(torch.tensor(0.0), z0)
    actual = HamiltonianField(AsNonSeparable(system), params)(torch.tensor(0.0), z0)
    assert_close(actual, expected)


@pytest.mark.parametrize("wrap", [lambda s: s, AsNonSeparable])
def test_field_under_no_grad_is_detached(wrap, generator):
    system, params, z0 = springs_batch(generator)
    with torch.no_grad():
        dz = HamiltonianField(wrap(system), params)(torch.tensor(0.0), z0)
    assert not dz.requires_grad and torch.isfinite(dz).all()


@pytest.mark.parametrize("name", ["hlieconv", "fc-hnn", "hogn", "fc-node"])
def test_model_fields_keep_graphs_only_when_training(name, generator):
    _, params, z0 = springs_batch(generator)
    field = HamiltonianField(model(name), params)
    with torch.no_grad():
        assert not field(torch.tensor(0.0), z0).requires_grad
    dz = field(torch.tensor(0.0), z0)  # the data state does not require grad; the weights do
    assert dz.requires_grad
    dz.square().sum().backward()
    # every weight matrix shapes the force (output biases only shift H, so they get no gradient)
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in field.model.parameters() if p.dim() == 2)


def _force_loss_and_weight(net, params, z0):
    """A loss that trains through the force (its square, summed) and the first weight matrix of ``net``."""
    field = HamiltonianField(net, params)
    weight = next(p for p in net.parameters() if p.dim() == 2)
    return (lambda: field(torch.tensor(0.0), z0)[:, 1].square().sum()), weight


@pytest.mark.parametrize("name", ["hlieconv", "fc-hnn"])
def test_gradient_through_the_force_matches_an_independent_computation(name, generator, dtype):
    """float64: central finite differences; float32: the same weights and data in float64."""
    _, params, z0 = springs_batch(generator, n_systems=2)
    net, params, z0 = model(name, dtype=dtype), cast(params, dtype), z0.to(dtype)
    loss, weight = _force_loss_and_weight(net, params, z0)
    direction = torch.randn(weight.shape, generator=generator, dtype=F64)
    (grad,) = torch.autograd.grad(loss(), weight)
    slope = (grad.double() * direction).sum().item()
    rtol, _ = TOLERANCES[dtype].second_derivative
    if dtype == torch.float32:  # the same weights and data, differentiated in float64
        loss64, weight64 = _force_loss_and_weight(copy.deepcopy(net).double(), cast(params, F64), z0.double())
        (grad64,) = torch.autograd.grad(loss64(), weight64)
        assert slope == pytest.approx((grad64 * direction).sum().item(), rel=rtol)
        return
    eps = 1e-6
    with torch.no_grad():
        weight.add_(eps * direction)
        plus = loss()
        weight.sub_(2 * eps * direction)
        minus = loss()
        weight.add_(eps * direction)
    assert slope == pytest.approx(((plus - minus) / (2 * eps)).item(), rel=rtol)


def test_field_passes_through_a_direct_vector_field(generator):
    _, params, z0 = springs_batch(generator)
    node = model("fc-node")
    field = HamiltonianField(node, params)
    assert not field.separable
    torch.testing.assert_close(field(torch.tensor(0.0), z0), node.vector_field(z0, params))


def test_field_registers_models_but_not_systems(generator):
    system, params, _ = springs_batch(generator)
    assert list(HamiltonianField(system, params).parameters()) == []
    net = model("fc-hnn")
    assert len(list(HamiltonianField(net, params).parameters())) == len(list(net.parameters()))


def test_objects_outside_the_protocol_are_refused():
    with pytest.raises(TypeError, match="neither hamiltonian"):
        HamiltonianField(object(), {})

    class Incomplete:
        separable = True

        def hamiltonian(self, z, params):
            return z.sum((1, 2, 3))

    with pytest.raises(TypeError, match="lacks velocity"):
        HamiltonianField(Incomplete(), {})


def test_keeps_graph_looks_at_tensors_dicts_and_module_weights():
    plain, tracked = torch.zeros(2), torch.zeros(2, requires_grad=True)
    net = model("fc-hnn")
    assert not keeps_graph(plain, {"m": plain})
    assert keeps_graph(plain, {"m": tracked}) and keeps_graph(tracked) and keeps_graph(plain, net)
    with torch.no_grad():
        assert not keeps_graph(tracked, net)


def test_potential_force_keeps_the_graph_for_parameters_alone(generator):
    system, params, z0 = springs_batch(generator)
    k = params["k"].clone().requires_grad_(True)
    force = potential_force(system.potential, z0[:, 0], {**params, "k": k})
    torch.testing.assert_close(force, system.forces(z0[:, 0], params))
    (grad,) = torch.autograd.grad(force.square().sum(), k)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    assert not hamiltonian_gradient(system.hamiltonian, z0, params).requires_grad
