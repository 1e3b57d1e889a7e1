"""LieConv and LieResNet: invariance (exact or in distribution), smoothness across the angle wrap,
second derivatives, masks, neighbourhoods, and clear errors for bad input, for both lifts (the exact
one, every group's default, and the paper's Monte Carlo lift of the groups with a stabilizer;
tests/test_exact_invariance.py has the exact lift's own checks). Invariance, smoothness and second
derivatives, masks and the neighbour search run in float32 and float64 (``dtype`` fixture), the rest
in float64."""

import copy
import functools
import math

import pytest
import torch
from conftest import TOLERANCES, assert_round_off
from problems import (ALL_GROUPS, STABILIZED_GROUPS, SENSITIVE, assert_double_backward_matches_float64,
                      ids, lift_samples, point_cloud, small_lieresnet)

from hamnet import lieconv
from hamnet.groups import SE2, SE3, SO2, SO3, LieGroup, T, get_group
from hamnet.lieconv import LieResNet, invariant_neighbourhood, nearest, neighbourhood

F64 = torch.float64
#: the paper's lift: two random stabilizer samples per point (keeps tests small)
monte_carlo = functools.partial(small_lieresnet, lift="monte-carlo", lift_samples=2)
#: every (group, lift) a network can be built with: exact for every group, Monte Carlo where there is a stabilizer
LIFTED = [(group, "exact") for group in ALL_GROUPS] + [(group, "monte-carlo") for group in STABILIZED_GROUPS]
LIFTED_IDS = [f"{group!r}-{lift}" for group, lift in LIFTED]


def network(group, lift, **settings):
    """A small LieResNet over ``group`` with ``lift`` ("exact" or "monte-carlo", two samples)."""
    return (monte_carlo if lift == "monte-carlo" else small_lieresnet)(group, **settings)


@pytest.mark.parametrize("neighbours", [None, 5])
@pytest.mark.parametrize("group", STABILIZED_GROUPS, ids=ids(STABILIZED_GROUPS))
def test_layers_are_exactly_equivariant_given_transformed_lifts(group, neighbours, generator, dtype):
    model = monte_carlo(group, neighbours, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, dtype=dtype)
    elements, orbits, mask = group.lift(points, n_samples=3, generator=generator)
    lifted_features = features.repeat_interleave(3, 1)
    g = group.sample((points.shape[0], 1), generator, dtype)
    out = model.forward_lifted(elements, orbits, lifted_features, mask)
    moved = model.forward_lifted(group.compose(g, elements), orbits, lifted_features, mask)
    assert_round_off(moved, out)


@pytest.mark.parametrize("group", STABILIZED_GROUPS, ids=ids(STABILIZED_GROUPS))
def test_sampled_lifts_are_invariant_in_distribution(group, generator, dtype):
    """The spread of the output under random transformations matches its spread under resampling."""
    model = monte_carlo(group, dtype=dtype)
    points, features = point_cloud(group, generator, B=1, N=5, dtype=dtype)
    draws = 64
    with torch.no_grad():
        resampled = torch.cat([model(points, features, generator=torch.Generator().manual_seed(s))
                               for s in range(draws)])
        g = group.sample((draws, 1), generator, dtype)
        moved = group.act(g, points.expand(draws, -1, -1))
        # lift samples are shared across a batch, so each transformed copy gets its own draw
        transformed = torch.cat([model(moved[i:i + 1], features, generator=torch.Generator().manual_seed(10_000 + i))
                                 for i in range(draws)])
    sd_r, sd_t = resampled.std(), transformed.std()
    assert sd_r > 0 and 0.6 < sd_t / sd_r < 1.6
    assert (resampled.mean() - transformed.mean()).abs() < 4 * math.sqrt((sd_r**2 + sd_t**2) / draws)


@pytest.mark.parametrize("group", STABILIZED_GROUPS, ids=ids(STABILIZED_GROUPS))
def test_a_systems_output_does_not_depend_on_its_batch_position(group, generator, dtype):
    model = monte_carlo(group, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, B=3, N=5, dtype=dtype)
    with torch.no_grad():
        together = model(points, features)
        alone = torch.cat([model(points[i:i + 1], features[i:i + 1]) for i in range(3)])
    assert_round_off(alone, together)


def _largest_steps(group, model, n, dtype=F64):
    """Largest change of the output and of its gradient between neighbouring inputs on a path of
    ``n`` steps: one point circles past another's antipode, so their relative angle crosses pi."""
    phi = torch.linspace(math.pi - 0.2, math.pi + 0.2, n + 1, dtype=F64)
    moving = torch.zeros(n + 1, group.space_dim, dtype=F64)
    moving[:, 0], moving[:, 1] = torch.cos(phi), torch.sin(phi)
    fixed = torch.zeros(n + 1, group.space_dim, dtype=F64)
    fixed[:, 0] = 1.0
    other = torch.full((n + 1, group.space_dim), 0.3, dtype=F64)
    path = torch.stack([fixed, moving, other], 1).to(dtype).requires_grad_(True)
    # one batch: stabilizer samples are shared by every system of a batch (checked above), so each
    # point of the path is lifted with the same samples
    out = model(path, torch.ones(n + 1, 3, 2, dtype=dtype)).sum(-1)
    (grad,) = torch.autograd.grad(out.sum(), path)
    return out.diff().abs().max(), (grad[1:] - grad[:-1]).flatten(1).norm(dim=-1).max()


WRAPPING = [(SO2(), "exact"), (SE2(), "exact"), (SO3(), "exact"), (SE2(), "monte-carlo"), (SO3(), "monte-carlo")]


@pytest.mark.parametrize("group, lift", WRAPPING, ids=[f"{g!r}-{lift}" for g, lift in WRAPPING])
def test_output_and_force_are_smooth_across_the_wrap(group, lift, dtype):
    """Halving the step halves every step of a smooth function; a jump would stay the same size."""
    model = network(group, lift, dtype=dtype, gain=SENSITIVE)
    coarse, fine = _largest_steps(group, model, 100, dtype), _largest_steps(group, model, 200, dtype)
    for c, f in zip(coarse, fine):
        assert 1.8 < c / f < 2.2


class _RawAngleSO2(SO2):
    """SO(2) whose kernel sees the raw angle log(u^-1 v), which wraps at pi (what not to do)."""

    pair_invariants = LieGroup.pair_invariants  # the lifts' kernel inputs, hence the raw angle below

    def relative(self, u, v):
        angle = self.log(self.compose(self.inv(u), v))
        return torch.cat([angle, torch.zeros_like(angle)], -1)


def test_the_smoothness_check_catches_a_raw_angle_kernel():
    model = small_lieresnet(_RawAngleSO2(), gain=SENSITIVE)
    coarse, fine = _largest_steps(SO2(), model, 100), _largest_steps(SO2(), model, 200)
    assert min(c / f for c, f in zip(coarse, fine)) < 1.5


@pytest.mark.parametrize("group, lift", LIFTED, ids=LIFTED_IDS)
@pytest.mark.parametrize("spread", [1.0, 1e-4], ids=["random", "near-identity"])
def test_second_derivatives_through_the_network(group, lift, spread, generator, dtype):
    model = network(group, lift, width=8, depth=1, dtype=dtype, gain=SENSITIVE)
    base = torch.randn(1, 1, group.space_dim, generator=generator, dtype=F64) + 0.5
    points = (base + spread * torch.randn(1, 3, group.space_dim, generator=generator, dtype=F64)).to(dtype)
    features = torch.rand(1, 3, 2, generator=generator, dtype=dtype)
    if dtype == F64:
        assert torch.autograd.gradgradcheck(lambda x: model(x, features), (points.requires_grad_(True),))
        return
    model64 = copy.deepcopy(model).double()  # the same float32 weights, evaluated in float64
    assert_double_backward_matches_float64(lambda x: model(x, features), lambda x: model64(x, features.double()),
                                           points, *TOLERANCES[dtype].second_derivative)


CENTRED = [(SO2(), "exact"), (SO3(), "exact"), (SO3(), "monte-carlo")]
CENTRED_IDS = [f"{g!r}-{lift}" for g, lift in CENTRED]


@pytest.mark.parametrize("group, lift", CENTRED, ids=CENTRED_IDS)
def test_a_point_at_the_rotation_centre_gives_finite_forces(group, lift, generator, dtype):
    points, features = point_cloud(group, generator, B=1, N=4, dtype=dtype)
    points[0, 0] = 0.0
    points.requires_grad_(True)
    model = network(group, lift, dtype=dtype)
    out = model(points, features)
    (force,) = torch.autograd.grad(out.sum(), points, create_graph=True)
    second = torch.autograd.grad(force.square().sum(), [points, *model.parameters()], allow_unused=True)
    assert torch.isfinite(out).all() and torch.isfinite(force).all()
    assert all(torch.isfinite(d).all() for d in second if d is not None)  # d force / d (points, parameters)


@pytest.mark.parametrize("group, lift", CENTRED, ids=CENTRED_IDS)
def test_force_stays_bounded_as_a_point_passes_the_rotation_centre(group, lift, generator, dtype):
    # The lift's rotation turns abruptly through the centre; a kernel fed the relative rotation
    # alone gives a force growing like 1 / (miss distance). The largest force along a straight pass
    # must not grow as the pass gets closer to the centre.
    model = network(group, lift, dtype=dtype)
    points, features = point_cloud(group, generator, B=1, N=4, dtype=dtype)
    along = torch.linspace(-1e-2, 1e-2, 101, dtype=dtype)

    def largest_force(miss):
        path = points.repeat(101, 1, 1)
        offset = [torch.full_like(along, miss)] * (group.space_dim - 1)
        path[:, 0] = torch.stack([along, *offset], -1)
        path.requires_grad_(True)
        (force,) = torch.autograd.grad(model(path, features.expand(101, -1, -1)).sum(), path)
        return force[:, 0].norm(dim=-1).max().item()

    far, near = largest_force(1e-2), largest_force(1e-6)
    assert near < 2 * far


PADDED = [(T(2), "exact"), (SE3(), "exact"), (SE3(), "monte-carlo")]


@pytest.mark.parametrize("group, lift", PADDED, ids=[f"{g!r}-{lift}" for g, lift in PADDED])
def test_padded_points_do_not_change_the_output(group, lift, generator, dtype):
    model = network(group, lift, neighbours=3, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, B=1, N=4, dtype=dtype)
    padded_points = torch.cat([points, torch.full((1, 2, group.space_dim), float("nan"), dtype=dtype)], 1)
    padded_features = torch.cat([features, torch.full((1, 2, 2), 5.0, dtype=dtype)], 1)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    assert_round_off(model(padded_points, padded_features, mask), model(points, features))


ALL_OR_NEAREST = [(SO2(), "exact"), (SE2(), "exact"), (SO3(), "exact"), (SE2(), "monte-carlo")]


@pytest.mark.parametrize("group, lift", ALL_OR_NEAREST, ids=[f"{g!r}-{lift}" for g, lift in ALL_OR_NEAREST])
def test_all_neighbours_equals_k_nearest_with_k_all(group, lift, generator, dtype):
    points, features = point_cloud(group, generator, dtype=dtype)
    M = 6 * (lift_samples(group) if lift == "monte-carlo" else 1)
    dense, knn = (network(group, lift, neighbours=k, dtype=dtype) for k in (None, M))
    rtol, atol = TOLERANCES[dtype].network
    torch.testing.assert_close(knn(points, features), dense(points, features), rtol=rtol, atol=atol)


def brute_force_distances(group, elements, orbits, mask, rows=64):
    """Every distance the search ranks by, from the definitions, in float64: ``sqrt(|chart(u^-1 v)|^2 +
    |o_u - o_v|^2)``, infinite towards padded elements. ``elements: (B, M, n, n)``, ``orbits: (B, M, O)``,
    ``mask: (B, M)`` -> ``(B, M, M)``, computed ``rows`` at a time to bound memory."""
    elements, orbits = elements.double(), orbits.double()
    blocks = []
    for start in range(0, mask.shape[1], rows):
        # u^-1 v for every pair: composition is the matrix product
        pairs = torch.einsum("buij,bvjk->buvik", group.inv(elements[:, start:start + rows]), elements)
        o_u = orbits[:, start:start + rows].unsqueeze(2)
        blocks.append((group.chart(pairs).square().sum(-1) + (o_u - orbits.unsqueeze(1)).square().sum(-1)).sqrt())
    return torch.cat(blocks, 1).masked_fill(~mask.unsqueeze(1), float("inf"))


def test_nearest_matches_a_brute_force_search(generator):
    group = SE3()
    points = torch.randn(2, 40, 3, generator=generator, dtype=F64)
    elements, orbits, mask = group.lift(points, n_samples=2, generator=generator)
    mask[1, 70:] = False
    index = nearest(group, elements, orbits, mask, 5)
    d = brute_force_distances(group, elements, orbits, mask)
    chosen = d.gather(-1, index).sort(-1).values
    torch.testing.assert_close(chosen, d.topk(5, largest=False).values, rtol=0, atol=TOLERANCES[F64].search)
    nbhd = neighbourhood(group, elements, orbits, mask, 5)
    assert nbhd.kernel_inputs.shape == (2, 80, 5, group.embed_dim)
    torch.testing.assert_close(nbhd.weights.sum(-1), torch.ones(2, 80, dtype=F64))


@pytest.mark.parametrize("group", ALL_GROUPS, ids=ids(ALL_GROUPS))
def test_the_exact_neighbourhood_is_the_nearest_points_pair_invariants(group, generator):
    """Exact lift: the k nearest in ``point_distance`` (padded points last), kernel inputs the pair invariants."""
    points = torch.randn(2, 40, group.space_dim, generator=generator, dtype=F64)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 35:] = False
    nbhd = invariant_neighbourhood(group, points, mask, 5)
    d = group.point_distance(points, points).masked_fill(~mask.unsqueeze(1), float("inf"))
    chosen = d.gather(-1, nbhd.index).sort(-1).values
    torch.testing.assert_close(chosen, d.topk(5, largest=False).values, rtol=0, atol=TOLERANCES[F64].search)
    neighbours = points[torch.arange(2).view(2, 1, 1), nbhd.index]
    torch.testing.assert_close(nbhd.kernel_inputs, group.pair_invariants(points.unsqueeze(2), neighbours))
    assert nbhd.kernel_inputs.shape == (2, 40, 5, group.invariant_dim)
    torch.testing.assert_close(nbhd.weights.sum(-1), torch.ones(2, 40, dtype=F64))


@pytest.mark.parametrize("group", [SO2(), SO3()], ids=["SO2", "SO3"])
def test_nearest_with_orbits_over_several_chunks_matches_a_brute_force_search(group, generator, dtype):
    """Rotations about a centre have orbits (radii), so the search ranks by group and orbit distance
    together; 2 x 2100 elements take three row chunks. Padded particles copy real ones (distance 0 to
    them), so a search that ignored the mask would choose them; system 2 has fewer real elements than k."""
    B, M, k = 3, 1200, 6
    samples = lift_samples(group) or 1
    N = M // samples
    rows = max(1, lieconv._SEARCH_CHUNK_ELEMENTS // (B * M))  # the rows nearest() searches at once
    assert math.ceil(M / rows) >= 2, "the search no longer needs several chunks for this size"
    real = torch.tensor([[N], [2 * N // 3], [2]])  # real particles per system; the rest is padding
    copies = torch.arange(N) % real  # a padded particle copies a real one
    points = torch.randn(B, N, group.space_dim, generator=generator, dtype=dtype)
    points = points.gather(1, copies.unsqueeze(-1).expand(-1, -1, group.space_dim))
    elements, orbits, mask = group.lift(points, torch.arange(N) < real, samples, generator)
    index = nearest(group, elements, orbits, mask, k)
    assert index.shape == (B, M, k)
    d = brute_force_distances(group, elements, orbits, mask)
    chosen = d.gather(-1, index).sort(-1).values
    torch.testing.assert_close(chosen, d.topk(k, largest=False).values, rtol=0, atol=TOLERANCES[dtype].search)
    real_chosen = mask.unsqueeze(1).expand(-1, M, -1).gather(-1, index).sum(-1)
    assert (real_chosen == (real * samples).clamp(max=k)).all()


@pytest.mark.parametrize("lift", ["exact", "monte-carlo"])
def test_deterministic_and_float32(lift, generator):
    group = SE2()
    points, features = point_cloud(group, generator)
    model = network(group, lift, neighbours=4)
    torch.testing.assert_close(model(points, features), model(points, features), rtol=0, atol=0)
    other = model(points, features, generator=torch.Generator().manual_seed(99))
    # the generator draws the Monte Carlo lift's samples; the exact lift draws nothing
    assert torch.equal(other, model(points, features)) == (lift == "exact")
    model32 = network(group, lift, neighbours=4, dtype=torch.float32)
    out32 = model32(points.float(), features.float())
    rtol, atol = TOLERANCES[torch.float32].network
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), model(points, features), rtol=rtol, atol=atol)


def test_bad_inputs_have_clear_messages(generator):
    model = small_lieresnet(SO2(), neighbours=4)
    points, features = point_cloud(SO2(), generator)
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


def test_bad_lifts_have_clear_messages(generator):
    with pytest.raises(ValueError, match="lift_samples must be 1 for SE3 with the exact lift.*lift='monte-carlo'"):
        LieResNet(SE3(), 1, lift_samples=4)
    with pytest.raises(ValueError, match="lift must be one of exact, monte-carlo"):
        LieResNet(SO3(), 1, lift="sampled")
    with pytest.raises(ValueError, match="SO2 acts freely, so its one lift per point is already exact"):
        LieResNet(SO2(), 1, lift="monte-carlo")
    with pytest.raises(ValueError, match="an exact SE2 network takes points, not lifted elements"):
        model = small_lieresnet(SE2())
        points, features = point_cloud(SE2(), generator)
        model.forward_lifted(*SE2().lift(points, n_samples=1), features)
    assert LieResNet(SO3(), 1, lift_samples=1).lift == "exact"  # one sample per point is the exact lift's own
    assert monte_carlo(SE3()).lift_samples == 2 and LieResNet(SE3(), 1, lift="monte-carlo").lift_samples == 4


class _SampledOnly(SO3):
    """SO(3) as a group that only knows the Monte Carlo lift (as a user's group with a stabilizer might)."""

    has_exact_lift = False


def test_a_group_without_pair_invariants_defaults_to_the_monte_carlo_lift():
    assert LieResNet(_SampledOnly(), 1).lift == "monte-carlo"
    with pytest.raises(ValueError, match="SO3 has no exact lift"):
        LieResNet(_SampledOnly(), 1, lift="exact")
