"""The EGNN models: EGNN-H (a learned invariant potential) and EGNN-NODE (an equivariant force).

Symmetries under random orthogonal maps (rotations and reflections), translations and permutations
in 2D and 3D, in float32 and float64; derivatives by gradcheck; momenta under leapfrog; checkpoints;
a short training run.
"""

import dataclasses
import json
import math

import pytest
import torch
from conftest import assert_round_off
from problems import cast, sample_batch, small_model, transform
from problems import model_config as config
from test_rollouts import Confined, momentum_changes, strong

from hamnet.checkpoint import model_from_checkpoint, save_checkpoint
from hamnet.data import Windows
from hamnet.io import load_trajectories, save_trajectories
from hamnet.loss import window_mse
from hamnet.egnn import EGNNH, EGNNNODE
from hamnet.models import ModelConfig, build_model
from hamnet.rollouts import default_method, rollout
from hamnet.simulation import generate
from hamnet.training import TrainConfig, train
from hamnet.systems import Springs

F64 = torch.float64
#: small enough to be quick, deep enough that messages pass twice
SIZE = dict(width=16, depth=2)


def random_state(generator, dim, dtype, n_systems=3, n_particles=5):
    """Unit-Gaussian ``z: (B, 2, N, D)`` and parameters ``m, k: (B, N)``. Positions of order 1 make
    the squared distances matter: a fresh EGNN-H's potential varies by ~1e-3 of its size over them."""
    z = torch.randn(n_systems, 2, n_particles, dim, generator=generator, dtype=F64)
    m = 0.5 + torch.rand(n_systems, n_particles, generator=generator, dtype=F64)
    k = 5 * torch.rand(n_systems, n_particles, generator=generator, dtype=F64)
    return z.to(dtype), cast({"m": m, "k": k}, dtype)


def rigid_motion(generator, dim, n_particles, *, reflect, dtype):
    """A random orthogonal ``(D, D)`` matrix (``det = -1`` when ``reflect``), a shift ``(D,)`` and a permutation."""
    matrix, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=F64))
    if (torch.linalg.det(matrix) < 0) != reflect:
        matrix[:, 0] = -matrix[:, 0]
    shift = 3 * torch.randn(dim, generator=generator, dtype=F64)
    return matrix.to(dtype), shift.to(dtype), torch.randperm(n_particles, generator=generator)


def permuted(params, order):
    return {key: value[:, order] for key, value in params.items()}


# -- symmetry -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("dim", [2, 3])
def test_egnn_h_is_invariant_to_rigid_motions_and_permutations(dim, reflect, generator, dtype):
    z, params = random_state(generator, dim, dtype)
    model = small_model("egnn-h", dim=dim, dtype=dtype, **SIZE)
    matrix, shift, order = rigid_motion(generator, dim, z.shape[2], reflect=reflect, dtype=dtype)
    moved = transform(z, matrix, shift)[:, :, order]
    v = model.potential(z[:, 0], params)
    assert_round_off(model.potential(moved[:, 0], permuted(params, order)), v)
    assert_round_off(model.hamiltonian(moved, permuted(params, order)), model.hamiltonian(z, params))
    # not vacuous: a motion that is not rigid changes V far beyond the tolerance
    bent = z[:, 0] + 0.3 * torch.randn(z[:, 0].shape, generator=generator).to(dtype)
    assert (model.potential(bent, params) - v).abs().max() > 1e-4 * v.abs().max()


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("dim", [2, 3])
def test_egnn_node_is_equivariant_to_rigid_motions_and_permutations(dim, reflect, generator, dtype):
    z, params = random_state(generator, dim, dtype)  # 5 particles: any N, the config says 4
    model = small_model("egnn-node", dim=dim, dtype=dtype, **SIZE)
    matrix, shift, order = rigid_motion(generator, dim, z.shape[2], reflect=reflect, dtype=dtype)
    field = model.vector_field(z, params)
    assert field.shape == z.shape
    moved = model.vector_field(transform(z, matrix, shift)[:, :, order], permuted(params, order))
    # derivatives rotate with the state and do not feel the shift
    assert_round_off(moved, transform(field, matrix, torch.zeros_like(shift))[:, :, order])


def test_egnn_node_knows_dq_dt_and_conserves_no_momentum(generator):
    z, params = random_state(generator, 2, F64)
    model = small_model("egnn-node", **SIZE)
    field = model(z, params)
    torch.testing.assert_close(field[:, 0], z[:, 1] / params["m"].unsqueeze(-1), rtol=0, atol=0)
    # as documented: pair weights are not symmetric and phi_v rescales each momentum
    assert field[:, 1].sum(1).abs().max() > 1e-3
    assert not model.separable and not hasattr(model, "hamiltonian") and default_method(model) == "rk4"
    trajectory = rollout(model, z, params, steps=20, dt=0.01, method="rk4")
    assert torch.isfinite(trajectory).all() and not trajectory.requires_grad


def test_a_non_finite_system_leaves_the_others_as_they_would_be_alone(generator):
    z, params = random_state(generator, 3, F64)
    model = small_model("egnn-h", dim=3, **SIZE)
    z[1, 0, 2, 0] = math.inf
    others = torch.tensor([0, 2])
    alone = z[others], {key: value[others] for key, value in params.items()}
    energies, forces = model.hamiltonian(z, params), model.forces(z[:, 0], params)
    assert not torch.isfinite(energies[1])
    torch.testing.assert_close(energies[others], model.hamiltonian(*alone), rtol=1e-12, atol=0)
    torch.testing.assert_close(forces[others], model.forces(alone[0][:, 0], alone[1]), rtol=1e-12, atol=1e-15)


# -- derivatives --------------------------------------------------------------------------------

def test_egnn_h_potential_and_force_pass_gradcheck(generator):
    z, params = random_state(generator, 3, F64, n_systems=2, n_particles=3)
    model = small_model("egnn-h", dim=3, width=8, depth=2)
    q = z[:, 0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: model.potential(x, params), (q,))
    assert torch.autograd.gradcheck(lambda x: model.forces(x, params), (q,))  # the second derivative


# -- conservation -------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
def test_egnn_h_with_leapfrog_keeps_both_momenta_for_2000_steps(dim, generator):
    system = Springs(n_particles=4, dim=dim)
    params, z0 = sample_batch(system, 2, generator)
    # output scaled so that the network's forces are O(1) beside the springs' (fresh: ~1e-3)
    network = strong(small_model("egnn-h", dim=dim, **SIZE), force_scale=1e3)
    assert network.forces(z0[:, 0], params).abs().max() > 0.1
    trajectory = rollout(Confined(network, system), z0, params, steps=2000, dt=0.01, method="leapfrog")
    linear, angular = momentum_changes(trajectory)
    assert linear < 1e-12 and angular < 1e-12


# -- configs, checkpoints, training -------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("egnn-h", EGNNH), ("egnn-node", EGNNNODE)])
def test_checkpoint_round_trip_gives_the_same_outputs(name, cls, generator, tmp_path):
    settings = config(name, dim=3, **SIZE)
    assert ModelConfig.from_dict(dataclasses.asdict(settings)) == settings
    model = build_model(settings, torch.Generator().manual_seed(3))
    assert type(model) is cls and model.config == settings
    save_checkpoint(tmp_path / "model.pt", {"model_config": dataclasses.asdict(settings), "model": model.state_dict()})
    loaded, _ = model_from_checkpoint(tmp_path / "model.pt")
    assert type(loaded) is cls and loaded.config == settings
    z, params = random_state(generator, 3, torch.float32)
    torch.testing.assert_close(loaded(z, params), model(z, params), rtol=0, atol=0)


def test_training_a_tiny_egnn_h_lowers_the_loss(tmp_path):
    path = tmp_path / "springs.npz"
    save_trajectories(path, generate(Springs(n_particles=4), n_systems=8, steps=12, dt=0.01, seed=0))
    settings = TrainConfig(model=config("egnn-h", **SIZE), epochs=2, batch_size=8, lr=1e-2, method="leapfrog",
                           validation_windows=16)
    train(settings, path, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[1]["train_loss"] < lines[0]["train_loss"]
    windows = Windows(load_trajectories(path), chunk=settings.chunk)
    fresh = build_model(settings.model, torch.Generator().manual_seed(settings.seed))
    trained, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    before, after = (window_mse(model, windows, 0.01, method="leapfrog")["mse"] for model in (fresh, trained))
    assert after < before
