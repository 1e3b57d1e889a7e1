"""hamnet.models: one interface for every model, configs that rebuild them, and their symmetries
(in float32 and float64)."""

import dataclasses
import io
import math

import pytest
import torch
from conftest import assert_round_off
from problems import SENSITIVE, amplify, cast, rotation, sample_batch, small_model, springs_batch, transform
from problems import model_config as config

from hamnet.egnn import EGNNH, EGNNNODE
from hamnet.training import TrainConfig
from hamnet.models import FCHNN, FCNODE, HOGN, MODELS, HLieConv, ModelConfig, build_model
from hamnet.systems import NBody

F64 = torch.float64
HAMILTONIANS = ["hlieconv", "fc-hnn", "hogn", "egnn-h"]


def test_registry_names_and_classes():
    assert {name: MODELS.get(name) for name in MODELS} == {"hlieconv": HLieConv, "fc-node": FCNODE, "fc-hnn": FCHNN,
                                                          "hogn": HOGN, "egnn-h": EGNNH, "egnn-node": EGNNNODE}
    with pytest.raises(ValueError, match="unknown model 'mlp'; known: hlieconv, fc-node, fc-hnn, hogn, egnn-h, "
                                         "egnn-node;"):
        build_model(config("mlp"))


@pytest.mark.parametrize("name", HAMILTONIANS)
def test_hamiltonian_models_map_a_state_to_one_energy_per_system(name, generator):
    _, params, z = springs_batch(generator)
    model = small_model(name)
    h = model.hamiltonian(z, params)
    assert h.shape == (3,) and h.dtype == F64 and torch.isfinite(h).all()
    torch.testing.assert_close(model(z, params), h)
    assert model.config == config(name)


@pytest.mark.parametrize("name", ["fc-node", "egnn-node"])
def test_neural_odes_predict_the_time_derivative(name, generator):
    _, params, z = springs_batch(generator)
    model = small_model(name)
    assert not hasattr(model, "hamiltonian") and not model.separable
    assert model.vector_field(z, params).shape == z.shape


@pytest.mark.parametrize("name", ["hlieconv", "egnn-h"])
def test_only_hlieconv_and_egnn_h_are_separable_with_the_true_kinetic_energy(name, generator):
    _, params, z = springs_batch(generator)
    assert [name for name in MODELS if MODELS.get(name).separable] == ["hlieconv", "egnn-h"]
    model = small_model(name)
    kinetic = 0.5 * (z[:, 1].square().sum(-1) / params["m"]).sum(-1)
    torch.testing.assert_close(model.hamiltonian(z, params), kinetic + model.potential(z[:, 0], params))
    torch.testing.assert_close(model.velocity(z[:, 1], params), z[:, 1] / params["m"].unsqueeze(-1))
    q = z[:, 0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.potential(q, params).sum(), q)
    torch.testing.assert_close(model.forces(z[:, 0], params), -grad)


@pytest.mark.parametrize("name", ["fc-hnn", "fc-node"])
def test_fully_connected_models_are_tied_to_their_particle_count(name, generator):
    _, params, z = springs_batch(generator, n_particles=5)
    model = small_model(name)
    with pytest.raises(ValueError, match="fully connected over 4 particles; got a state with N = 5"):
        model(z, params)


@pytest.mark.parametrize("name", ["hlieconv", "hogn", "egnn-h"])
def test_lieconv_and_graph_models_take_any_number_of_particles(name, generator):
    model = small_model(name)
    for n in (2, 4, 7):
        _, params, z = springs_batch(generator, n_particles=n)
        assert model.hamiltonian(z, params).shape == (3,)


def test_features_come_from_the_configured_keys(generator):
    _, params, z = springs_batch(generator)
    model = small_model("hogn", feature_keys=("m",))
    features = model.features({"m": params["m"]}, z[:, 0])
    torch.testing.assert_close(features, params["m"].unsqueeze(-1))
    per_system = model.features({"m": params["m"][:, 0]}, z[:, 0])  # a (B,) parameter is repeated over particles
    torch.testing.assert_close(per_system, params["m"][:, :1].unsqueeze(-1).expand(-1, 4, -1))
    with pytest.raises(ValueError, match="lack \\['k'\\]"):
        small_model("hogn")(z, {"m": params["m"]})


def test_nbody_features_work_with_mass_only_models(generator):
    params, z = sample_batch(NBody(n_particles=3), 2, generator)
    model = small_model("hlieconv", n_particles=3, feature_keys=("m",), group="SO2")
    assert model.hamiltonian(z, params).shape == (2,)


def test_config_is_frozen_validated_and_rebuilds_from_its_dict():
    cfg = config("hlieconv", group="SO2", neighbours=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 4
    values = dataclasses.asdict(cfg)
    assert ModelConfig.from_dict(values) == cfg
    assert ModelConfig.from_dict({**values, "feature_keys": ["m", "k"]}) == cfg  # as read back from JSON
    with pytest.raises(ValueError, match="unknown model config keys \\['colour'\\]"):
        ModelConfig.from_dict({**values, "colour": "red"})
    for bad in ({"dim": 4}, {"width": 0}, {"depth": 0}, {"feature_keys": ("k",)}):
        with pytest.raises(ValueError):
            dataclasses.replace(cfg, **bad)


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_of_config_and_weights_rebuilds_the_same_model(name, generator):
    _, params, z = springs_batch(generator)
    model = build_model(config(name), torch.Generator().manual_seed(11))
    buffer = io.BytesIO()
    torch.save({"config": dataclasses.asdict(model.config), "state": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    rebuilt = build_model(ModelConfig.from_dict(saved["config"]))
    rebuilt.load_state_dict(saved["state"])
    z32, params32 = z.float(), {k: v.float() for k, v in params.items()}
    torch.testing.assert_close(rebuilt(z32, params32), model(z32, params32), rtol=0, atol=0)


def test_initialisation_comes_from_the_generator():
    first = build_model(config("fc-hnn"), torch.Generator().manual_seed(5))
    again = build_model(config("fc-hnn"), torch.Generator().manual_seed(5))
    other = build_model(config("fc-hnn"), torch.Generator().manual_seed(6))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))
    default = build_model(config("fc-hnn"))
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), build_model(config("fc-hnn")).parameters()))


@pytest.mark.parametrize("group, rotates, coupling", [("SO2", True, None), ("T2", False, None), ("SO2", True, "affine"),
                                                     ("SE2", True, "affine"), ("SE2", True, "k")])
def test_hlieconv_symmetry(group, rotates, coupling, generator, dtype):
    _, params, z = springs_batch(generator)
    params, z = cast(params, dtype), z.to(dtype)
    # amplified, V varies by ~1e-4 |H| over these states (freshly initialised, by ~1e-6 |H|: float32 round-off)
    model = small_model("hlieconv", group=group, dtype=dtype, coupling=coupling)
    amplify(model.potential_net, SENSITIVE)
    h = model.hamiltonian(z, params)
    shift = torch.tensor([0.7, -1.3], dtype=dtype)
    assert_round_off(model.hamiltonian(transform(z, torch.eye(2, dtype=dtype), shift), params), h)
    rotated = model.hamiltonian(transform(z, rotation(0.9, dtype), shift), params)
    if rotates:
        assert_round_off(rotated, h)
    else:
        # invariance would mean round-off: ~1e-16 |H| in float64, ~1e-7 |H| in float32
        assert (rotated - h).abs().max() > 1e-5 * h.abs().max()


@pytest.mark.parametrize("group, coupling, settings", [
    ("SE2", "affine", {}), ("T2", "affine", {}), ("SO2", "affine", {}), ("SE2", "k", {}), ("T2", "k", {}),
    ("SE2", "k", {"neighbours": 3})])
def test_a_particle_whose_coupling_is_zero_feels_no_force_where_pairs_are_translation_invariant(group, coupling,
                                                                                               settings, generator):
    """With c = k (the coupling named ``k``, or an affine one fitted to it), a particle of k = 0 drops out
    of every pair: over pair invariants that are translation invariant (SE(2), T(2)) it feels no force and
    the others none from it (with a k-nearest neighbourhood it still decides who is nearest, so only the
    first holds). About the centroid (SO(2)) it still feels one: it moves the centroid, and the force on
    it is minus the others' total."""
    _, params, z = springs_batch(generator)
    params["k"][:, 0] = 0.0
    model = small_model("hlieconv", group=group, coupling=coupling, **settings)
    amplify(model.potential_net, SENSITIVE)
    if coupling == "affine":
        with torch.no_grad():
            model.potential_net.coupling.weight.copy_(torch.tensor([[0.0, 1.0]]))  # features (m, k): c = k
            model.potential_net.coupling.bias.zero_()
    forces = model.forces(z[:, 0], params)
    moved = z[:, 0].clone()
    moved[:, 0] += torch.tensor([0.9, -0.4], dtype=F64)
    if group == "SO2":
        assert forces[:, 0].abs().max() > 1e-6 * forces.abs().max()
        return
    assert forces[:, 0].abs().max() <= 1e-12 * forces.abs().max()
    assert forces[:, 1:].abs().max() > 1e-6  # the others still interact
    if "neighbours" not in settings:
        assert_round_off(model.forces(moved, params)[:, 1:], forces[:, 1:])


@pytest.mark.parametrize("feature_keys", [("m", "k"), ("k", "m"), ("m", "k", "q")])
def test_a_coupling_named_by_a_parameter_scales_each_particles_force_with_it(feature_keys, generator):
    """``coupling="k"``, over SE(2): a particle's position enters V only through pairs weighted by its k,
    so near k_0 = 0 the force on it is linear in k_0 (doubling k_0 doubles it, up to a term of order
    k_0), wherever ``k`` sits among the features."""
    _, params, z = springs_batch(generator)
    params["q"] = torch.rand(params["k"].shape, generator=generator, dtype=F64)
    model = small_model("hlieconv", group="SE2", coupling="k", feature_keys=feature_keys)
    amplify(model.potential_net, SENSITIVE)
    forces = []
    for k0 in (1e-5, 2e-5, 4e-5):
        params["k"][:, 0] = k0
        forces.append(model.forces(z[:, 0], params)[:, 0])
    assert forces[0].abs().min() > 0
    assert torch.allclose(forces[1], 2 * forces[0], rtol=1e-2) and torch.allclose(forces[2], 2 * forces[1], rtol=2e-2)


def test_a_coupling_must_name_a_feature_or_be_affine():
    with pytest.raises(ValueError, match="neither 'affine' nor one of the feature keys m, k"):
        ModelConfig(group="SE2", coupling="q", feature_keys=("m", "k"))
    with pytest.raises(ValueError, match="coupling applies to hlieconv"):
        ModelConfig(name="egnn-h", coupling="k")


def test_a_coupling_switch_read_from_a_file_of_its_time_is_the_affine_kind():
    """Configs written when ``coupling`` was a switch (true or false) still load, as the kind it was."""
    written = dataclasses.asdict(ModelConfig(group="SE2").without_data())
    assert ModelConfig.from_dict({**written, "coupling": True}).coupling == "affine"
    assert ModelConfig.from_dict({**written, "coupling": False}).coupling is None
    train = TrainConfig.from_dict({**TrainConfig().as_dict(), "model": {**written, "coupling": True}})
    assert train.model.coupling == "affine"
    assert build_model(train.model).potential_net.coupling.bias is not None


def test_hlieconv_without_centring_is_not_translation_invariant(generator):
    _, params, z = springs_batch(generator)
    model = small_model("hlieconv", group="SO2", centre=False)
    shifted = transform(z, torch.eye(2, dtype=F64), torch.tensor([0.7, -1.3], dtype=F64))
    assert (model.potential(shifted[:, 0], params) - model.potential(z[:, 0], params)).abs().max() > 1e-8


def test_hogn_is_permutation_invariant_and_fc_hnn_is_not(generator, dtype):
    _, params, z = springs_batch(generator)
    params, z = cast(params, dtype), z.to(dtype)
    order = torch.tensor([2, 0, 3, 1])
    permuted_z, permuted_params = z[:, :, order], {k: v[:, order] for k, v in params.items()}
    hogn = small_model("hogn", dtype=dtype)
    assert_round_off(hogn(permuted_z, permuted_params), hogn(z, params))
    fc = small_model("fc-hnn", dtype=dtype)
    assert (fc(permuted_z, permuted_params) - fc(z, params)).abs().max() > 1e-6


def _over_others(message, n: int) -> torch.Tensor:
    """``sum_{j != i} message(i, j)`` for every ``i``, by Python loops; ``(B, N, C)``."""
    return torch.stack([sum((message(i, j) for j in range(n) if j != i), 0 * message(i, i))  # zeros of the shape
                        for i in range(n)], dim=1)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_graph_models_sum_their_messages_over_the_other_particles(generator, n):
    """HOGN's energy, an EGNN layer and EGNN-NODE's force, rebuilt pair by pair with loops over ``j != i``."""
    _, params, z = springs_batch(generator, n_particles=max(n, 2))  # a system has two particles at least
    params, z = {key: value[:, :n] for key, value in params.items()}, z[:, :, :n]
    q, p = z[:, 0], z[:, 1]
    hogn = small_model("hogn")
    x = torch.cat([q, p, hogn.features(params, q)], dim=-1)
    messages = _over_others(lambda i, j: hogn.edge_net(torch.cat([x[:, i], x[:, j]], -1)), n)
    energy = hogn.global_net(hogn.node_net(torch.cat([x, messages], -1)).sum(1))
    torch.testing.assert_close(hogn.hamiltonian(z, params), energy.squeeze(-1), rtol=1e-12, atol=1e-12)

    node = small_model("egnn-node")
    squared = (q.unsqueeze(2) - q.unsqueeze(1)).square().sum(-1, keepdim=True)
    h = node.network.embed(torch.cat([node.features(params, q), p.square().sum(-1, keepdim=True)], -1))
    for layer in node.network.layers:
        sent = _over_others(lambda i, j: layer.edge_net(torch.cat([h[:, i], h[:, j], squared[:, i, j]], -1)), n)
        h = h + layer.node_net(torch.cat([h, sent], -1))
    pulls = _over_others(lambda i, j: (q[:, i] - q[:, j]) * node.pair_weight_net(node.edge_net(
        torch.cat([h[:, i], h[:, j], squared[:, i, j]], -1))), n)
    force = pulls + node.momentum_gain_net(h) * p
    torch.testing.assert_close(node.vector_field(z, params)[:, 1], force, rtol=1e-12, atol=1e-12)


def test_hlieconv_a_non_finite_state_makes_only_its_own_energy_non_finite(generator):
    _, params, z = springs_batch(generator)
    model = small_model("hlieconv")
    z[1, 0, 2, 0] = math.inf
    energies = model.hamiltonian(z, params)
    others = torch.tensor([0, 2])
    assert not torch.isfinite(energies[1]) and torch.isfinite(energies[others]).all()
    alone = model.hamiltonian(z[others], {k: v[others] for k, v in params.items()})
    assert torch.allclose(energies[others], alone, rtol=1e-12, atol=0)
    # forces too: the diverged system does not reach the others
    q = z[:, 0].clone()
    forces = model.forces(q, params)
    assert torch.isfinite(forces[others]).all()
    assert torch.allclose(forces[others], model.forces(q[others], {k: v[others] for k, v in params.items()}),
                          rtol=1e-10, atol=1e-14)
