"""hamnet.equivariance: the invariance check users run on their own models tells an invariant model
(round-off, in float32 and float64) from one that is not, tells a Monte Carlo model's invariance in
distribution from a broken symmetry, is reproducible, and honours masks."""

import pytest
import torch
from conftest import TOLERANCES
from problems import SENSITIVE, point_cloud, small_lieresnet

from hamnet.equivariance import InvarianceReport, equivariance_error
from hamnet.groups import SE2, SE3, SO2, SO3

F64 = torch.float64


def test_an_invariant_model_gives_round_off_and_a_broken_symmetry_shows(generator, dtype):
    """An SO(2) network is invariant to rotations about the origin, not to translations: SE(2) motions show it."""
    model = small_lieresnet(SO2(), dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(SO2(), generator, dtype=dtype)
    scale = model(points, features).abs().max().item()
    assert equivariance_error(model, SO2(), points, features) <= TOLERANCES[dtype].invariance * scale
    assert equivariance_error(model, SE2(), points, features) > 1e-3 * scale


def test_the_group_elements_come_from_the_generator(generator):
    model = small_lieresnet(SO2(), gain=SENSITIVE)
    points, features = point_cloud(SO2(), generator)

    def error(seed=None, n_transforms=8):
        draws = None if seed is None else torch.Generator().manual_seed(seed)
        return equivariance_error(model, SE2(), points, features, n_transforms=n_transforms, generator=draws)

    assert error() == error()  # no generator: a fixed seed
    assert error(1) == error(1) and error(1) != error(2)
    assert error(1, n_transforms=2) <= error(1)  # the first two draws of eight


def test_padded_points_are_left_to_the_model(generator):
    model = small_lieresnet(SO2(), gain=SENSITIVE)
    points, features = point_cloud(SO2(), generator, N=4)
    padded_points = torch.cat([points, torch.full((3, 2, 2), float("nan"), dtype=points.dtype)], 1)
    padded_features = torch.cat([features, torch.full((3, 2, 2), 5.0, dtype=points.dtype)], 1)
    mask = torch.tensor([[True] * 4 + [False] * 2] * 3)
    padded = equivariance_error(model, SE2(), padded_points, padded_features, mask)
    scale = model(points, features).abs().max().item()
    assert abs(padded - equivariance_error(model, SE2(), points, features)) <= TOLERANCES[F64].invariance * scale


def test_points_of_the_wrong_dimension_are_refused(generator):
    points, features = point_cloud(SO2(), generator)
    with pytest.raises(ValueError, match=r"SO3 acts on 3-dimensional points: expected points of shape \(B, N, 3\)"):
        equivariance_error(small_lieresnet(SO2()), SO3(), points, features)


@pytest.mark.parametrize("group", [SO2(), SO3(), SE3()], ids=["SO2", "SO3", "SE3"])
def test_the_report_of_an_exact_model_is_round_off_with_no_lift_spread(group, generator, dtype):
    model = small_lieresnet(group, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, dtype=dtype)
    report = equivariance_error(model, group, points, features, report=True)
    assert isinstance(report, InvarianceReport) and report.lift_spread == 0.0
    assert report.change == equivariance_error(model, group, points, features)
    assert report.relative_change <= TOLERANCES[dtype].invariance
    assert report.scale == model(points, features).abs().max().item()


@pytest.mark.parametrize("group", [SE2(), SO3(), SE3()], ids=["SE2", "SO3", "SE3"])
def test_the_report_tells_a_monte_carlo_model_from_a_broken_one(group, generator, dtype):
    """Invariant in distribution: the change under group elements is of the size of the spread under
    fresh lift draws. A symmetry-breaking term well above that noise shows as a change well above it."""
    model = small_lieresnet(group, lift="monte-carlo", lift_samples=2, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, dtype=dtype)
    report = equivariance_error(model, group, points, features, report=True)
    assert report.lift_spread > 100 * TOLERANCES[dtype].invariance * report.scale  # not round-off
    assert report.change < 4 * report.lift_spread

    def broken(x, f, mask=None, generator=None):  # plus a term that sees absolute x coordinates
        return model(x, f, mask, generator) + 10 * report.lift_spread * x[..., 0].sum(-1, keepdim=True)

    broken_report = equivariance_error(broken, group, points, features, report=True)
    assert broken_report.change > 4 * broken_report.lift_spread


def test_a_model_without_a_generator_has_no_lift_spread(generator):
    model = small_lieresnet(SO2())
    points, features = point_cloud(SO2(), generator)
    report = equivariance_error(lambda x, f: model(x, f), SO2(), points, features, report=True)
    assert report.lift_spread is None
    with pytest.raises(ValueError, match="lift_draws must be >= 1"):
        equivariance_error(model, SO2(), points, features, report=True, lift_draws=0)
