"""EGNN as a one-shot position predictor (hamnet.egnn).

Equivariance under random rotations, reflections, translations and permutations in float32 and
float64; the velocity term of a fresh and of a hand-set model; gradcheck; the memory-saving pair
layer against the plain concatenation; a fit that learns ``x + v``, restores its best state and is
reproducible from its seed; and the one-line errors for bad input and diverging training.
"""

import pytest
import torch
from conftest import TOLERANCES
from problems import cast, transform

from hamnet.egnn import EGNNPredictor, VelocityEGNNLayer, _pair_linear, fit_predictor, position_mse

F64 = torch.float64
#: small enough to be quick, deep enough that coordinates are updated twice
SMALL = dict(width=16, depth=2)


def random_state(generator, dtype=F64, n_systems=3, n_particles=5, dim=3, charges=True):
    """Unit-Gaussian ``z: (B, 2, N, D)``, masses in ``[0.5, 1.5)`` and charges of +-1 (as in the benchmark)."""
    z = torch.randn(n_systems, 2, n_particles, dim, generator=generator, dtype=F64)
    params = {"m": 0.5 + torch.rand(n_systems, n_particles, generator=generator, dtype=F64)}
    if charges:
        params["charge"] = 2.0 * torch.randint(0, 2, (n_systems, n_particles), generator=generator).to(F64) - 1.0
    return z.to(dtype), cast(params, dtype)


def model(seed=0, dtype=F64, pair_gain=1.0, **size):
    """A predictor from ``seed``; ``pair_gain`` scales phi_x's last layer (fresh, its output is ~1e-4,
    too small for a check of the coordinate messages to notice them)."""
    predictor = EGNNPredictor(**size, generator=torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        for layer in predictor.layers:
            layer.pair_weight_net[-1].weight.mul_(pair_gain)
    return predictor


def orthogonal(generator, dim, *, reflect):
    matrix, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=F64))
    if (torch.linalg.det(matrix) < 0) != reflect:
        matrix[:, 0] = -matrix[:, 0]
    return matrix


def assert_equal_to_round_off(actual, expected):
    """Every difference within the dtype's invariance tolerance (100 ulp) of the largest ``|expected|``."""
    scale = TOLERANCES[expected.dtype].invariance * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0, atol=scale)


def free_particles(generator, n_systems, horizon=1.0):
    """States of charged particles and the positions ``q + horizon v`` that free flight reaches."""
    z, params = random_state(generator, torch.float32, n_systems=n_systems)
    return z, params, z[:, 0] + horizon * z[:, 1] / params["m"].unsqueeze(-1)


# -- symmetry -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_prediction_is_equivariant_to_rigid_motions_and_permutations(reflect, dim, generator, dtype):
    z, params = random_state(generator, dtype, dim=dim)
    predictor = model(dtype=dtype, pair_gain=1e2)  # the paper's size, with coordinate messages that matter
    matrix = orthogonal(generator, dim, reflect=reflect).to(dtype)
    shift = (3 * torch.randn(dim, generator=generator, dtype=F64)).to(dtype)
    order = torch.randperm(z.shape[2], generator=generator)
    prediction = predictor(z, params)
    moved = predictor(transform(z, matrix, shift)[:, :, order], {key: value[:, order] for key, value in params.items()})
    assert moved.dtype == dtype
    assert_equal_to_round_off(moved, (prediction @ matrix.T + shift)[:, order])
    # not vacuous: moving one particle alone changes the others' predictions beyond the tolerance
    bent = z.clone()
    bent[:, 0, 0] += 0.3
    assert (predictor(bent, params) - prediction)[:, 1:].abs().max() > 1e-4 * prediction.abs().max()


def test_without_charges_the_masses_take_their_place(generator):
    z, params = random_state(generator, charges=False)
    predictor = model(**SMALL)
    as_charges = {"m": params["m"], "charge": params["m"]}
    torch.testing.assert_close(predictor(z, params), predictor(z, as_charges), rtol=0, atol=0)
    other_key = EGNNPredictor(**SMALL, charge_key="q_e", generator=torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(other_key(z, {"m": params["m"], "q_e": params["m"]}), predictor(z, params),
                               rtol=0, atol=0)
    charged = {"m": params["m"], "charge": -torch.ones_like(params["m"])}
    assert (predictor(z, charged) - predictor(z, params)).abs().max() > 1e-6


# -- the velocity term --------------------------------------------------------------------------

def test_a_fresh_model_moves_each_particle_along_its_velocity(generator):
    z, params = random_state(generator, n_particles=6)
    v = z[:, 1] / params["m"].unsqueeze(-1)

    def sideways(predictor):
        """Largest ``|dx x v| / |v|^2`` over particles (``dx`` the predicted displacement: the part of it
        across ``v``, in units of ``|v|``) and the mean ``|dx| / |v|``."""
        displacement = predictor(z, params) - z[:, 0]
        across = torch.linalg.cross(displacement, v).norm(dim=-1) / v.norm(dim=-1).square()
        return across.max().item(), (displacement.norm(dim=-1) / v.norm(dim=-1)).mean().item()

    fresh_across, fresh_step = sideways(model())
    assert fresh_across < 1e-2 and fresh_step > 1e-2  # along v, and not standing still
    assert sideways(model(pair_gain=1e3))[0] > 0.1  # the check sees the coordinate messages


def set_velocity_gains(predictor, gain):
    """Every ``phi_v`` outputs ``gain`` whatever ``h``."""
    with torch.no_grad():
        for layer in predictor.layers:
            layer.velocity_gain_net[-1].weight.zero_()
            layer.velocity_gain_net[-1].bias.fill_(gain)


def test_without_pair_weights_the_model_adds_the_input_velocity_in_every_layer(generator):
    z, params = random_state(generator)
    predictor = model(**SMALL)
    set_velocity_gains(predictor, 0.5)
    with torch.no_grad():
        for layer in predictor.layers:
            layer.pair_weight_net[-1].weight.zero_()
    # each layer adds 0.5 v with v = p / m the input velocity (not p, not the last layer's 0.5 v)
    expected = z[:, 0] + SMALL["depth"] * 0.5 * z[:, 1] / params["m"].unsqueeze(-1)
    torch.testing.assert_close(predictor(z, params), expected, rtol=1e-14, atol=1e-14)


def test_constant_pair_weights_push_away_from_the_centroid_by_a_mean_over_the_others(generator):
    z, params = random_state(generator, n_particles=4)
    predictor = model(width=8, depth=1)
    set_velocity_gains(predictor, 0.0)
    with torch.no_grad():
        hidden, _, last = predictor.layers[0].pair_weight_net
        hidden.weight.zero_()
        hidden.bias.fill_(1.0)
        last.weight.fill_(1.0)
    weight = 8 * torch.nn.functional.silu(torch.tensor(1.0, dtype=F64))
    # (1 / (N - 1)) sum_{j != i} (x_i - x_j) = N / (N - 1) (x_i - centroid)
    q = z[:, 0]
    expected = q + weight * 4 / 3 * (q - q.mean(1, keepdim=True))
    torch.testing.assert_close(predictor(z, params), expected, rtol=1e-13, atol=1e-13)


# -- derivatives and the pair layer -------------------------------------------------------------

def test_prediction_passes_gradcheck(generator):
    z, params = random_state(generator, n_systems=2, n_particles=3)
    predictor = model(width=4, depth=1, pair_gain=1e3)
    p = z[:, 1]
    assert torch.autograd.gradcheck(lambda q: predictor(torch.stack([q, p], 1), params),
                                    (z[:, 0].clone().requires_grad_(True),))
    assert torch.autograd.gradcheck(lambda p: predictor(torch.stack([z[:, 0], p], 1), params),
                                    (p.clone().requires_grad_(True),))


def test_pair_linear_equals_the_layer_on_concatenated_pairs(generator):
    layer = torch.nn.Linear(2 * 5 + 3, 7).double()
    h = torch.randn(2, 4, 5, generator=generator, dtype=F64)
    edges = torch.randn(2, 4, 4, 3, generator=generator, dtype=F64)
    pairs = torch.cat([h.unsqueeze(2).expand(-1, -1, 4, -1), h.unsqueeze(1).expand(-1, 4, -1, -1), edges], dim=-1)
    torch.testing.assert_close(_pair_linear(layer, h, edges), layer(pairs), rtol=1e-12, atol=1e-12)


def test_velocity_layer_sums_over_the_other_particles(generator):
    """One layer, rebuilt pair by pair with loops over ``j != i`` (the paper's eqs. 3, 5-7, C = N - 1)."""
    layer = VelocityEGNNLayer(6).double()
    n = 3
    h, x, v = (torch.randn(2, n, size, generator=generator, dtype=F64) for size in (6, 2, 2))
    attributes = torch.randn(2, n, n, 2, generator=generator, dtype=F64)
    silu = torch.nn.functional.silu

    def message(i, j):
        squared = (x[:, i] - x[:, j]).square().sum(-1, keepdim=True)
        return silu(layer.edge_out(silu(layer.edge_in(torch.cat([h[:, i], h[:, j], squared, attributes[:, i, j]], -1)))))

    others = [[j for j in range(n) if j != i] for i in range(n)]
    sent = torch.stack([sum(message(i, j) for j in others[i]) for i in range(n)], 1)
    pulls = torch.stack([sum((x[:, i] - x[:, j]) * layer.pair_weight_net(message(i, j)) for j in others[i])
                         for i in range(n)], 1) / (n - 1)
    new_h, new_x = layer(h, x, v, attributes)
    torch.testing.assert_close(new_h, h + layer.node_net(torch.cat([h, sent], -1)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_x, x + layer.velocity_gain_net(h) * v + pulls, rtol=1e-12, atol=1e-12)


# -- training -----------------------------------------------------------------------------------

def test_fit_learns_free_flight_and_keeps_its_best_state(generator):
    train, valid = free_particles(generator, 200), free_particles(generator, 100)
    predictor = model(dtype=torch.float32, **SMALL)
    lines = []
    result = fit_predictor(predictor, train, valid, epochs=40, lr=3e-3, evaluate_every=10, log=lines.append)
    epochs, _, valid_mse = zip(*result["history"])
    assert epochs == (0, 10, 20, 30, 40) and len(lines) == 4
    assert result["best_valid_mse"] < 1e-3 * valid_mse[0]
    assert result["best_valid_mse"] == min(valid_mse) == valid_mse[epochs.index(result["best_epoch"])]
    assert position_mse(predictor, *valid) == result["best_valid_mse"]
    assert result["seconds"] > 0


def test_fit_restores_the_best_epoch_not_the_last(generator):
    train, valid = free_particles(generator, 100), free_particles(generator, 50)
    predictor = model(dtype=torch.float32, **SMALL)
    # a step so large that training makes the model worse than it started
    result = fit_predictor(predictor, train, valid, epochs=2, lr=1.0, evaluate_every=1)
    assert result["best_epoch"] == 0 and result["history"][-1][2] > result["history"][0][2]
    assert position_mse(predictor, *valid) == result["history"][0][2]


def test_the_same_seed_gives_the_same_weights_and_fit(generator):
    train, valid = free_particles(generator, 40), free_particles(generator, 20)
    weights = [model(seed, dtype=torch.float32, **SMALL).state_dict() for seed in (0, 0, 1)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert not torch.equal(weights[0]["embed.weight"], weights[2]["embed.weight"])

    def history(seed):
        predictor = model(dtype=torch.float32, **SMALL)
        return fit_predictor(predictor, train, valid, epochs=2, batch_size=10, evaluate_every=1, seed=seed)["history"]

    assert history(0) == history(0) and history(0) != history(1)


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda z, params: (z[:, 0], params), r"expected a state z: \(B, 2, N, D\)"),
    (lambda z, params: (z[:, :, :1], {key: value[:, :1] for key, value in params.items()}), "N >= 2"),
    (lambda z, params: (z, {"charge": params["charge"]}), "lack the masses 'm'"),
    (lambda z, params: (z, {**params, "m": params["m"][:, :2]}), r"params\['m'\] must be \(B, N\)"),
    (lambda z, params: (z, {**params, "charge": params["charge"][:1]}), r"params\['charge'\] must be \(B, N\)"),
    (lambda z, params: (z.float(), params), "model.double"),
], ids=["z-rank", "one-particle", "no-mass", "mass-shape", "charge-shape", "dtype"])
def test_bad_input_is_refused_in_one_line(change, message, generator):
    z, params = random_state(generator)
    with pytest.raises(ValueError, match=message) as error:
        model(**SMALL)(*change(z, params))
    assert "\n" not in str(error.value)


def test_diverging_or_non_finite_training_is_refused_in_one_line(generator):
    train, valid = free_particles(generator, 40), free_particles(generator, 20)
    with pytest.raises(FloatingPointError, match="lower the learning rate") as error:
        fit_predictor(model(dtype=torch.float32, **SMALL), train, valid, epochs=3, batch_size=20, lr=1e30)
    assert "\n" not in str(error.value)
    z0, params, target = train
    poisoned = z0.clone()
    poisoned[3, 1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match="train z0 holds values that are not finite"):
        fit_predictor(model(dtype=torch.float32, **SMALL), (poisoned, params, target), valid, epochs=1)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit_predictor(model(dtype=torch.float32, **SMALL), train, valid, epochs=0)
