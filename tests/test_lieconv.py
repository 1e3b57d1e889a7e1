"""LieConv and LieResNet: invariance (exact or in distribution), smoothness across the angle wrap,
second derivatives, masks, neighbourhoods, and clear errors for bad input. float64 unless said."""

import math

import pytest
import torch
from conftest import TOLERANCES

from hamnet.equivariance import equivariance_error
from hamnet.groups import SE2, SE3, SO2, SO3, T, Trivial, get_group
from hamnet.lieconv import LieResNet, centre, nearest, neighbourhood

F64 = torch.float64
EXACT = [Trivial(2), T(2), T(3), SO2()]
SAMPLED = [SE2(), SO3(), SE3()]
ALL = EXACT + SAMPLED
EXACT_TOL = 1e-10  # the bound for deterministic lifts


def ids(groups):
    return [repr(g) for g in groups]


def samples(group):
    """Two lift samples where the action has a stabilizer (keeps tests small), else the default."""
    return 2 if group.stabilizer_dim else None


def small_model(group, neighbours=None, width=16, depth=2, dtype=F64, seed=0, **kwargs):
    torch.manual_seed(seed)  # parameter init only; tests never rely on global randomness elsewhere
    return LieResNet(group, in_features=2, width=width, depth=depth, neighbours=neighbours,
                     kernel_width=16, kernel_channels=4, **kwargs).to(dtype)


def inputs(group, generator, B=3, N=6, dtype=F64):
    points = torch.randn(B, N, group.space_dim, generator=generator, dtype=dtype)
    features = torch.rand(B, N, 2, generator=generator, dtype=dtype)
    return points, features


@pytest.mark.parametrize("neighbours", [None, 4])
@pytest.mark.parametrize("group", EXACT, ids=ids(EXACT))
def test_deterministic_lifts_give_exact_invariance(group, neighbours, generator):
    model = small_model(group, neighbours)
    points, features = inputs(group, generator)
    assert equivariance_error(model, group, points, features, generator=generator) <= EXACT_TOL


@pytest.mark.parametrize("neighbours", [None, 5])
@pytest.mark.parametrize("group", SAMPLED, ids=ids(SAMPLED))
def test_layers_are_exactly_equivariant_given_transformed_lifts(group, neighbours, generator):
    model = small_model(group, neighbours)
    points, features = inputs(group, generator)
    elements, orbits, mask = group.lift(points, n_samples=3, generator=generator)
    lifted_features = features.repeat_interleave(3, 1)
    g = group.sample((points.shape[0], 1), generator)
    out = model.forward_lifted(elements, orbits, lifted_features, mask)
    moved = model.forward_lifted(group.compose(g, elements), orbits, lifted_features, mask)
    torch.testing.assert_close(moved, out, rtol=0, atol=EXACT_TOL)


@pytest.mark.parametrize("group", SAMPLED, ids=ids(SAMPLED))
def test_sampled_lifts_are_invariant_in_distribution(group, generator):
    """The spread of the output under random transformations matches its spread under resampling."""
    model = small_model(group, lift_samples=2)
    points, features = inputs(group, generator, B=1, N=5)
    draws = 64
    with torch.no_grad():
        resampled = torch.cat([model(points, features, generator=torch.Generator().manual_seed(s))
                               for s in range(draws)])
        g = group.sample((draws, 1), generator)
        moved = group.act(g, points.expand(draws, -1, -1))
        # lift samples are shared across a batch, so each transformed copy gets its own draw
        transformed = torch.cat([model(moved[i:i + 1], features, generator=torch.Generator().manual_seed(10_000 + i))
                                 for i in range(draws)])
    sd_r, sd_t = resampled.std(), transformed.std()
    assert sd_r > 0 and 0.6 < sd_t / sd_r < 1.6
    assert (resampled.mean() - transformed.mean()).abs() < 4 * math.sqrt((sd_r**2 + sd_t**2) / draws)


@pytest.mark.parametrize("group", SAMPLED, ids=ids(SAMPLED))
def test_a_systems_output_does_not_depend_on_its_batch_position(group, generator):
    model = small_model(group, lift_samples=2)
    points, features = inputs(group, generator, B=3, N=5)
    with torch.no_grad():
        together = model(points, features)
        alone = torch.cat([model(points[i:i + 1], features[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(alone, together, rtol=0, atol=EXACT_TOL)


def test_so2_on_centred_points_is_exactly_se2_invariant(generator):
    group, model = SO2(), small_model(SO2())
    points, features = inputs(group, generator)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    reference = model(centre(points, mask), features, mask)
    motions = SE2().sample((3, 1), generator, scale=3.0)  # rotations about arbitrary points + translations
    moved = SE2().act(motions, points)
    torch.testing.assert_close(model(centre(moved, mask), features, mask), reference, rtol=0, atol=EXACT_TOL)


def _largest_steps(group, model, n):
    """Largest change of the output and of its gradient between neighbouring inputs on a path of
    ``n`` steps: one point circles past another's antipode, so their relative angle crosses pi."""
    phi = torch.linspace(math.pi - 0.2, math.pi + 0.2, n + 1, dtype=F64)
    moving = torch.zeros(n + 1, group.space_dim, dtype=F64)
    moving[:, 0], moving[:, 1] = torch.cos(phi), torch.sin(phi)
    fixed = torch.zeros(n + 1, group.space_dim, dtype=F64)
    fixed[:, 0] = 1.0
    other = torch.full((n + 1, group.space_dim), 0.3, dtype=F64)
    path = torch.stack([fixed, moving, other], 1).requires_grad_(True)
    # one system per call: stabilizer samples are drawn per system, so a batch would mix samples
    out = torch.cat([model(x.unsqueeze(0), torch.ones(1, 3, 2, dtype=F64)) for x in path]).sum(-1)
    (grad,) = torch.autograd.grad(out.sum(), path)
    return out.diff().abs().max(), (grad[1:] - grad[:-1]).flatten(1).norm(dim=-1).max()


@pytest.mark.parametrize("group", [SO2(), SE2(), SO3()], ids=["SO2", "SE2", "SO3"])
def test_output_and_force_are_smooth_across_the_wrap(group):
    """Halving the step halves every step of a smooth function; a jump would stay the same size."""
    model = small_model(group, lift_samples=samples(group))
    coarse, fine = _largest_steps(group, model, 100), _largest_steps(group, model, 200)
    for c, f in zip(coarse, fine):
        assert 1.8 < c / f < 2.2


class _RawAngleSO2(SO2):
    """SO(2) whose kernel sees the raw angle log(u^-1 v), which wraps at pi (what not to do)."""

    def relative(self, u, v):
        angle = self.log(self.compose(self.inv(u), v))
        return torch.cat([angle, torch.zeros_like(angle)], -1)


def test_the_smoothness_check_catches_a_raw_angle_kernel():
    model = small_model(_RawAngleSO2())
    coarse, fine = _largest_steps(SO2(), model, 100), _largest_steps(SO2(), model, 200)
    assert min(c / f for c, f in zip(coarse, fine)) < 1.5


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
@pytest.mark.parametrize("spread", [1.0, 1e-4], ids=["random", "near-identity"])
def test_second_derivatives_through_the_network(group, spread, generator):
    model = small_model(group, width=8, depth=1, lift_samples=samples(group))
    base = torch.randn(1, 1, group.space_dim, generator=generator, dtype=F64) + 0.5
    points = (base + spread * torch.randn(1, 3, group.space_dim, generator=generator, dtype=F64)).requires_grad_(True)
    features = torch.rand(1, 3, 2, generator=generator, dtype=F64)
    assert torch.autograd.gradgradcheck(lambda x: model(x, features), (points,))


@pytest.mark.parametrize("group", [SO2(), SO3()], ids=["SO2", "SO3"])
def test_a_point_at_the_rotation_centre_gives_finite_forces(group, generator):
    points, features = inputs(group, generator, B=1, N=4)
    points[0, 0] = 0.0
    points.requires_grad_(True)
    model = small_model(group, lift_samples=samples(group))
    out = model(points, features)
    (force,) = torch.autograd.grad(out.sum(), points, create_graph=True)
    second = torch.autograd.grad(force.square().sum(), [points, *model.parameters()], allow_unused=True)
    assert torch.isfinite(out).all() and torch.isfinite(force).all()
    assert all(torch.isfinite(d).all() for d in second if d is not None)  # d force / d (points, parameters)


@pytest.mark.parametrize("group", [SO2(), SO3()], ids=["SO2", "SO3"])
def test_force_stays_bounded_as_a_point_passes_the_rotation_centre(group, generator):
    # The lift's rotation turns abruptly through the centre; a kernel fed the relative rotation
    # alone gives a force growing like 1 / (miss distance). The largest force along a straight pass
    # must not grow as the pass gets closer to the centre.
    model = small_model(group, lift_samples=samples(group))
    points, features = inputs(group, generator, B=1, N=4)
    along = torch.linspace(-1e-2, 1e-2, 101, dtype=F64)

    def largest_force(miss):
        path = points.repeat(101, 1, 1)
        offset = [torch.full_like(along, miss)] * (group.space_dim - 1)
        path[:, 0] = torch.stack([along, *offset], -1)
        path.requires_grad_(True)
        (force,) = torch.autograd.grad(model(path, features.expand(101, -1, -1)).sum(), path)
        return force[:, 0].norm(dim=-1).max().item()

    far, near = largest_force(1e-2), largest_force(1e-6)
    assert near < 2 * far


@pytest.mark.parametrize("group", [T(2), SE3()], ids=["T2", "SE3"])
def test_padded_points_do_not_change_the_output(group, generator):
    model = small_model(group, neighbours=3)
    points, features = inputs(group, generator, B=1, N=4)
    padded_points = torch.cat([points, torch.full((1, 2, group.space_dim), float("nan"), dtype=F64)], 1)
    padded_features = torch.cat([features, torch.full((1, 2, 2), 5.0, dtype=F64)], 1)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    torch.testing.assert_close(model(padded_points, padded_features, mask), model(points, features),
                               rtol=0, atol=EXACT_TOL)


@pytest.mark.parametrize("group", [SO2(), SE2()], ids=["SO2", "SE2"])
def test_all_neighbours_equals_k_nearest_with_k_all(group, generator):
    points, features = inputs(group, generator)
    M = 6 * (samples(group) or 1)
    dense, knn = (small_model(group, neighbours=k, lift_samples=samples(group)) for k in (None, M))
    torch.testing.assert_close(knn(points, features), dense(points, features), rtol=1e-10, atol=1e-12)


def test_nearest_matches_a_brute_force_search(generator):
    group = SE3()
    points = torch.randn(2, 40, 3, generator=generator, dtype=F64)
    elements, orbits, mask = group.lift(points, n_samples=2, generator=generator)
    mask[1, 70:] = False
    index = nearest(group, elements, orbits, mask, 5)
    d = group.distance(elements.unsqueeze(2), elements.unsqueeze(1)).masked_fill(~mask.unsqueeze(1), float("inf"))
    chosen = d.gather(-1, index).sort(-1).values
    torch.testing.assert_close(chosen, d.sort(-1).values[..., :5])
    nbhd = neighbourhood(group, elements, orbits, mask, 5)
    assert nbhd.kernel_inputs.shape == (2, 80, 5, group.embed_dim)
    torch.testing.assert_close(nbhd.weights.sum(-1), torch.ones(2, 80, dtype=F64))


def test_deterministic_and_float32(generator):
    group = SE2()
    points, features = inputs(group, generator)
    model = small_model(group, neighbours=4)
    torch.testing.assert_close(model(points, features), model(points, features), rtol=0, atol=0)
    other = model(points, features, generator=torch.Generator().manual_seed(99))
    assert not torch.equal(other, model(points, features))
    model32 = small_model(group, neighbours=4, dtype=torch.float32)
    out32 = model32(points.float(), features.float())
    rtol, atol = TOLERANCES[torch.float32]
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), model(points, features), rtol=100 * rtol, atol=100 * atol)


def test_bad_inputs_have_clear_messages(generator):
    model = small_model(SO2(), neighbours=4)
    points, features = inputs(SO2(), generator)
    with pytest.raises(ValueError, match=r"SO2 acts on 2-dimensional points: expected points of shape \(B, N, 2\), got \(3, 6, 3\)"):
        model(torch.zeros(3, 6, 3, dtype=F64), features)
    with pytest.raises(ValueError, match="neighbours=4 is larger than the number of points per system"):
        model(points[:, :3], features[:, :3])
    bad = points.clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="points contain NaN or infinite values"):
        model(bad, features)
    with pytest.raises(ValueError, match=r"features must have shape \(B, N, in_features\) = \(3, 6, 2\), got \(3, 6, 1\)"):
        model(points, features[..., :1])
    with pytest.raises(ValueError, match="convert one of them"):
        model(points.float(), features.float())
    with pytest.raises(ValueError, match="unknown group 'SE4'; valid groups"):
        get_group("SE4")
    with pytest.raises(ValueError, match="lift_samples must be 1 for T2"):
        LieResNet(T(2), 1, lift_samples=4)
