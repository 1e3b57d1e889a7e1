"""The kernel bound: ``LieResNet(kernel_bound=c)`` passes every kernel input through ``c tanh(x / c)``,
so a learned potential is a bounded function of the points however far they go. By conservation of
the learned energy that bounds the momenta a rollout can reach, which is what keeps a particle that
leaves the training data from running away (``benchmarks/results/divergence_escape.md``). Checked here:
the potential and its force settle as a point moves off (and do not without the bound), the bound
changes nothing well inside ``c``, invariance stays exact, derivatives are right (float64
``gradcheck``), and a bad bound is refused in one line."""

import pytest
import torch
from conftest import TOLERANCES
from problems import ALL_GROUPS, SENSITIVE, ids, point_cloud, small_lieresnet

from hamnet.equivariance import invariance_error
from hamnet.groups import SO2, T
from hamnet.lieconv import centre
from hamnet.models import ModelConfig, build_model

F64 = torch.float64
DISTANCES = (1e2, 1e4, 1e6)


def potential_and_force_along_a_departure(model, group, generator, distances=DISTANCES):
    """The output, and the force on the departing point, as one point of a centred cloud moves out
    along a fixed direction to each of ``distances`` (the others stay): two lists of floats."""
    points, features = point_cloud(group, generator, B=1, N=5, dtype=F64)
    direction = torch.nn.functional.normalize(torch.randn(group.space_dim, generator=generator, dtype=F64), dim=0)
    values, forces = [], []
    for distance in distances:
        moved = points.clone()
        moved[0, 0] = distance * direction
        moved.requires_grad_(True)
        out = model(centre(moved), features).sum()
        (grad,) = torch.autograd.grad(out, moved)
        values.append(out.item())
        forces.append(grad[0, 0].norm().item())
    return values, forces


@pytest.mark.parametrize("group", ALL_GROUPS, ids=ids(ALL_GROUPS))
def test_a_bounded_potential_settles_as_a_point_moves_off(group, generator):
    bounded = small_lieresnet(group, gain=SENSITIVE, kernel_bound=2.0)
    (near, mid, far), (_, mid_force, far_force) = potential_and_force_along_a_departure(bounded, group, generator)
    assert abs(far - mid) <= 1e-6 * max(1.0, abs(near))
    assert mid_force < 1e-6 and far_force < 1e-6
    # the same weights without the bound keep changing: the property the bound adds
    unbounded = small_lieresnet(group, gain=SENSITIVE)
    (_, mid, far), _ = potential_and_force_along_a_departure(unbounded, group, torch.Generator().manual_seed(0))
    assert abs(far - mid) > 1e-3 * max(1.0, abs(mid))


@pytest.mark.parametrize("group", ALL_GROUPS, ids=ids(ALL_GROUPS))
def test_well_inside_the_bound_the_network_is_unchanged(group, generator):
    points, features = point_cloud(group, generator, dtype=F64)
    bounded = small_lieresnet(group, gain=SENSITIVE, kernel_bound=1e5)
    plain = small_lieresnet(group, gain=SENSITIVE)
    # c tanh(x / c) = x (1 - x^2 / 3c^2 + ...): inputs of order 10 move by ~1e-8 relative
    torch.testing.assert_close(bounded(points, features), plain(points, features), rtol=1e-6, atol=0)


@pytest.mark.parametrize("group", ALL_GROUPS, ids=ids(ALL_GROUPS))
def test_bounded_networks_stay_exactly_invariant(group, generator, dtype):
    model = small_lieresnet(group, dtype=dtype, gain=SENSITIVE, kernel_bound=1.5)
    points, features = point_cloud(group, generator, dtype=dtype)
    report = invariance_error(model, group, points, features, generator=generator, translation_scale=3.0,
                                report=True)
    assert report.relative_change <= TOLERANCES[dtype].invariance


@pytest.mark.parametrize("group", [T(2), SO2()], ids=ids([T(2), SO2()]))
def test_bounded_network_gradients(group, generator):
    model = small_lieresnet(group, width=8, depth=1, gain=SENSITIVE, kernel_bound=0.7)
    points, features = point_cloud(group, generator, B=1, N=3, dtype=F64)
    assert torch.autograd.gradcheck(lambda x: model(x, features), (points.requires_grad_(True),))
    assert torch.autograd.gradgradcheck(lambda x: model(x, features), (points.requires_grad_(True),))


def test_the_model_config_carries_the_bound_to_the_network():
    config = ModelConfig(name="hlieconv", n_particles=4, width=8, depth=1, kernel_bound=3.0)
    model = build_model(config, torch.Generator().manual_seed(0))
    assert model.potential_net.kernel_bound == 3.0
    assert ModelConfig.from_dict({**config.__dict__}).kernel_bound == 3.0


@pytest.mark.parametrize("settings, message", [
    ({"name": "hlieconv", "kernel_bound": -2.0}, "kernel_bound must be a positive finite number"),
    ({"name": "hogn", "kernel_bound": 2.0}, "kernel_bound applies to hlieconv"),
])
def test_a_config_with_an_impossible_bound_is_refused_before_any_build(settings, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(n_particles=4, **settings)


@pytest.mark.parametrize("bound", [0.0, -1.0, float("nan"), float("inf")])
def test_a_bad_bound_is_refused_in_one_line(bound):
    with pytest.raises(ValueError, match="kernel_bound must be a positive finite number") as error:
        small_lieresnet(T(2), kernel_bound=bound)
    assert "\n" not in str(error.value)
