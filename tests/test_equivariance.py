"""hamnet.equivariance: the symmetry checks users run on their own models. The invariance check tells an invariant model
(round-off, in float32 and float64) from one that is not, tells a Monte Carlo model's invariance in
distribution from a broken symmetry, is reproducible, and honours masks; the checks on phase-space states
pass invariant energies and equivariant vector fields and catch models that are neither."""

import pytest
import torch
from conftest import TOLERANCES
from problems import SENSITIVE, amplify, cast, point_cloud, small_lieresnet, small_model

from hamnet.dynamics import HamiltonianField
from hamnet.equivariance import (InvarianceReport, act_on_state, assert_equivariant, assert_invariant,
                                 energy_invariance_error, equivariance_error, field_equivariance_error,
                                 invariance_error)
from hamnet.groups import SE2, SE3, SO2, SO3, T
from hamnet.systems import Springs

F64 = torch.float64


def test_an_invariant_model_gives_round_off_and_a_broken_symmetry_shows(generator, dtype):
    """An SO(2) network is invariant to rotations about the origin, not to translations: SE(2) motions show it."""
    model = small_lieresnet(SO2(), dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(SO2(), generator, dtype=dtype)
    scale = model(points, features).abs().max().item()
    assert invariance_error(model, SO2(), points, features) <= TOLERANCES[dtype].invariance * scale
    assert invariance_error(model, SE2(), points, features) > 1e-3 * scale


def test_the_group_elements_come_from_the_generator(generator):
    model = small_lieresnet(SO2(), gain=SENSITIVE)
    points, features = point_cloud(SO2(), generator)

    def error(seed=None, n_transforms=8):
        draws = None if seed is None else torch.Generator().manual_seed(seed)
        return invariance_error(model, SE2(), points, features, n_transforms=n_transforms, generator=draws)

    assert error() == error()  # no generator: a fixed seed
    assert error(1) == error(1) and error(1) != error(2)
    assert error(1, n_transforms=2) <= error(1)  # the first two draws of eight


def test_padded_points_are_left_to_the_model(generator):
    model = small_lieresnet(SO2(), gain=SENSITIVE)
    points, features = point_cloud(SO2(), generator, N=4)
    padded_points = torch.cat([points, torch.full((3, 2, 2), float("nan"), dtype=points.dtype)], 1)
    padded_features = torch.cat([features, torch.full((3, 2, 2), 5.0, dtype=points.dtype)], 1)
    mask = torch.tensor([[True] * 4 + [False] * 2] * 3)
    padded = invariance_error(model, SE2(), padded_points, padded_features, mask)
    scale = model(points, features).abs().max().item()
    assert abs(padded - invariance_error(model, SE2(), points, features)) <= TOLERANCES[F64].invariance * scale


def test_points_of_the_wrong_dimension_are_refused(generator):
    points, features = point_cloud(SO2(), generator)
    with pytest.raises(ValueError, match=r"SO3 acts on 3-dimensional points: expected points of shape \(B, N, 3\)"):
        invariance_error(small_lieresnet(SO2()), SO3(), points, features)


@pytest.mark.parametrize("group", [SO2(), SO3(), SE3()], ids=["SO2", "SO3", "SE3"])
def test_the_report_of_an_exact_model_is_round_off_with_no_lift_spread(group, generator, dtype):
    model = small_lieresnet(group, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, dtype=dtype)
    report = invariance_error(model, group, points, features, report=True)
    assert isinstance(report, InvarianceReport) and report.lift_spread == 0.0
    assert report.change == invariance_error(model, group, points, features)
    assert report.relative_change <= TOLERANCES[dtype].invariance
    assert report.scale == model(points, features).abs().max().item()


@pytest.mark.parametrize("group", [SE2(), SO3(), SE3()], ids=["SE2", "SO3", "SE3"])
def test_the_report_tells_a_monte_carlo_model_from_a_broken_one(group, generator, dtype):
    """Invariant in distribution: the change under group elements is of the size of the spread under
    fresh lift draws. A symmetry-breaking term well above that noise shows as a change well above it."""
    model = small_lieresnet(group, lift="monte-carlo", lift_samples=2, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, dtype=dtype)
    report = invariance_error(model, group, points, features, report=True)
    assert report.lift_spread > 100 * TOLERANCES[dtype].invariance * report.scale  # not round-off
    assert report.change < 4 * report.lift_spread

    def broken(x, f, mask=None, generator=None):  # plus a term that sees absolute x coordinates
        return model(x, f, mask, generator) + 10 * report.lift_spread * x[..., 0].sum(-1, keepdim=True)

    broken_report = invariance_error(broken, group, points, features, report=True)
    assert broken_report.change > 4 * broken_report.lift_spread


def test_a_model_without_a_generator_has_no_lift_spread(generator):
    model = small_lieresnet(SO2())
    points, features = point_cloud(SO2(), generator)
    report = invariance_error(lambda x, f: model(x, f), SO2(), points, features, report=True)
    assert report.lift_spread is None
    with pytest.raises(ValueError, match="lift_draws must be >= 1"):
        invariance_error(model, SO2(), points, features, report=True, lift_draws=0)


# -- phase-space states: energies are invariant, vector fields equivariant ---------------------------

def _state(generator, dim, dtype, n_systems=3, n_particles=4):
    z = torch.randn(n_systems, 2, n_particles, dim, generator=generator, dtype=F64)
    m = 0.5 + torch.rand(n_systems, n_particles, generator=generator, dtype=F64)
    k = 5 * torch.rand(n_systems, n_particles, generator=generator, dtype=F64)
    return z.to(dtype), {"m": m.to(dtype), "k": k.to(dtype)}


def test_a_state_moves_its_positions_by_the_motion_and_its_momenta_by_the_rotation(generator):
    z, _ = _state(generator, 2, F64)
    g = SE2().sample((3,), generator, F64)
    moved = act_on_state(SE2(), g, z)
    rotation, shift = g[:, :2, :2], g[:, :2, 2]
    torch.testing.assert_close(moved[:, 0], z[:, 0] @ rotation.transpose(1, 2) + shift.unsqueeze(1))
    torch.testing.assert_close(moved[:, 1], z[:, 1] @ rotation.transpose(1, 2))


@pytest.mark.parametrize("dim, group", [(2, SE2()), (3, SE3())], ids=["SE2", "SE3"])
def test_egnn_h_passes_the_invariance_check_and_a_translation_only_model_fails_it(dim, group, generator, dtype):
    z, params = _state(generator, dim, dtype)
    assert_invariant(small_model("egnn-h", dim=dim, dtype=dtype, width=16, depth=2).hamiltonian, group, z, params)
    assert energy_invariance_error(Springs(dim=dim).hamiltonian, group, z.double(), cast(params, F64)) < 1e-12
    # HLieConv over translations only: its potential is invariant under T(D), not under rotations (the
    # potential alone: the kinetic energy's size would hide a float32 change in H)
    t_only = small_model("hlieconv", dim=dim, group=f"T{dim}", dtype=dtype)
    amplify(t_only.potential_net, SENSITIVE)
    potential = lambda state, parameters: t_only.potential(state[:, 0], parameters)  # noqa: E731
    assert_invariant(potential, T(dim), z, params)
    with pytest.raises(AssertionError, match=f"energy is not invariant under {group.name}"):
        assert_invariant(potential, group, z, params)


@pytest.mark.parametrize("dim, group", [(2, SE2()), (3, SE3())], ids=["SE2", "SE3"])
def test_egnn_node_passes_the_equivariance_check_and_fc_node_fails_it(dim, group, generator, dtype):
    z, params = _state(generator, dim, dtype)
    assert_equivariant(small_model("egnn-node", dim=dim, dtype=dtype, width=16, depth=2).vector_field, group, z,
                       params)
    # the true dynamics of a rotation-invariant Hamiltonian are equivariant; an invariant energy is not
    # an equivariant field (its "field" would not rotate), which the check must see
    true_field = HamiltonianField(Springs(dim=dim), cast(params, F64))
    assert_equivariant(lambda state, _: true_field(0.0, state), group, z.double(), params)
    with pytest.raises(AssertionError, match=f"vector field is not equivariant under {group.name}"):
        assert_equivariant(small_model("fc-node", dim=dim, dtype=dtype).vector_field, group, z, params)


def test_a_state_of_the_wrong_shape_is_refused(generator):
    z, params = _state(generator, 2, F64)
    with pytest.raises(ValueError, match=r"SE3 acts on 3-dimensional points: expected a state of shape \(B, 2, N, 3\)"):
        field_equivariance_error(lambda state, _: state, SE3(), z, params)


def test_the_old_name_still_measures_invariance_and_says_it_is_deprecated(generator):
    model = small_lieresnet(SO2(), gain=SENSITIVE)
    points, features = point_cloud(SO2(), generator)
    with pytest.warns(DeprecationWarning, match="now called invariance_error"):
        old = equivariance_error(model, SE2(), points, features)
    assert old == invariance_error(model, SE2(), points, features)
