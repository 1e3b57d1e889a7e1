"""Lie groups: axioms, exp/log against an independent matrix exponential, stability near angle 0 and pi,
lift equivariance, second derivatives, and the name registry. Axioms, invariance, smoothness across the
wrap and second derivatives run in float32 and float64 (``dtype`` fixture); the rest in float64."""

import math
import pathlib
import re

import pytest
import torch
from conftest import TOLERANCES, assert_close, assert_round_off
from problems import ALL_GROUPS, assert_double_backward_matches_float64, ids

from hamnet.groups import GROUPS, SE2, SE3, SO2, SO3, LieGroup, T, Trivial, get_group

F64 = torch.float64
ALL = [Trivial(3), *ALL_GROUPS]
ROTATING = [SO2(), SE2(), SO3(), SE3()]
# algebra coordinates of the rotation part of each rotating group (the angle is their norm)
ROTATION_SLICE = {"SO2": slice(0, 1), "SE2": slice(0, 1), "SO3": slice(0, 3), "SE3": slice(0, 3)}
# rotation angles exercising the series branches, their edges, and the wrap
ANGLES = [1e-9, 1e-6, 1e-3, 0.49, 0.51, 1.0, 2.0, 2.2, math.pi - 1e-3, math.pi - 1e-6]


def algebra(group: LieGroup, n: int, generator: torch.Generator, angle: float | None = None,
            dtype: torch.dtype = F64) -> torch.Tensor:
    """Random algebra elements ``(n, lie_dim)``; rotation angle in (0, pi) or exactly ``angle`` (set in
    float64, then rounded to ``dtype``)."""
    a = torch.randn(n, group.lie_dim, generator=generator, dtype=F64)
    if group.name in ROTATION_SLICE:
        rot = a[:, ROTATION_SLICE[group.name]]
        target = angle if angle is not None else torch.rand(n, 1, generator=generator, dtype=F64) * (math.pi - 0.1)
        a[:, ROTATION_SLICE[group.name]] = rot / rot.norm(dim=-1, keepdim=True) * target
    return a.to(dtype)


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
def test_group_axioms(group, generator, dtype):
    g, h, k = (group.sample((16,), generator, dtype) for _ in range(3))
    e = group.identity((16,), dtype)
    assert_close(group.compose(e, g), g)
    assert_close(group.compose(g, e), g)
    assert_close(group.compose(g, group.inv(g)), e)
    assert_close(group.compose(group.inv(g), g), e)
    assert_close(group.compose(group.compose(g, h), k), group.compose(g, group.compose(h, k)))
    x = torch.randn(16, group.space_dim, generator=generator, dtype=dtype)
    assert_close(group.act(group.compose(g, h), x), group.act(g, group.act(h, x)))
    assert_close(group.act(e, x), x)


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
def test_exp_log_round_trips(group, generator):
    a = algebra(group, 64, generator)
    assert_close(group.log(group.exp(a)), a)
    g = group.sample((64,), generator)
    assert_close(group.exp(group.log(g)), g)


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
def test_exp_agrees_with_matrix_exponential(group, generator):
    for angle in [None, *ANGLES]:
        a = algebra(group, 16, generator, angle)
        assert_close(group.exp(a), torch.linalg.matrix_exp(group.hat(a)))


@pytest.mark.parametrize("group", ROTATING, ids=ids(ROTATING))
@pytest.mark.parametrize("angle", ANGLES)
def test_log_near_zero_and_pi(group, angle, generator):
    a = algebra(group, 16, generator, angle)
    # independent exponential, so log is not only checked against its own exp
    assert_close(group.log(torch.linalg.matrix_exp(group.hat(a))), a, "wrap")
    assert_close(group.exp(group.log(group.exp(a))), group.exp(a))


@pytest.mark.parametrize("group", ROTATING, ids=ids(ROTATING))
def test_embedding_is_continuous_across_the_wrap(group, generator, dtype):
    # log jumps as the angle passes pi; embed(log(.)) must not, and must equal relative(u, v)
    for delta in [1e-6, -1e-6]:
        a = algebra(group, 8, generator, math.pi + delta, dtype)
        g = group.exp(a)
        assert_close(group.embed(group.log(g)), group.embed(a), "wrap")
    u, v = group.sample((32,), generator, dtype), group.sample((32,), generator, dtype)
    assert_close(group.relative(u, v), group.embed(group.log(group.compose(group.inv(u), v))), "wrap")


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
def test_distance_is_left_invariant_and_matches_the_search(group, generator, dtype):
    u, v, g = (group.sample((2, 5), generator, dtype) for _ in range(3))
    d = group.distance(u, v)
    assert_close(group.distance(group.compose(g, u), group.compose(g, v)), d)
    assert_close(group.pairwise_distance(u, v).diagonal(dim1=-2, dim2=-1), d)
    assert torch.all(group.distance(u, u) <= TOLERANCES[dtype].close[1])


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
def test_lift_is_equivariant(group, generator, dtype):
    x = torch.randn(3, 5, group.space_dim, generator=generator, dtype=dtype)
    g = group.sample((3,), generator, dtype)
    samples = 3 if group.stabilizer_dim else 1
    lifted, orbits, mask = group.lift(x, n_samples=samples, generator=torch.Generator().manual_seed(7))
    lifted_g, orbits_g, _ = group.lift(group.act(g[:, None], x), n_samples=samples,
                                       generator=torch.Generator().manual_seed(7))
    moved = group.compose(g[:, None], lifted)
    assert mask.shape == (3, 5 * samples) and mask.all()
    assert_close(orbits_g, orbits)
    # the lifted element carries its orbit's reference point to the point itself
    assert_close(group.act(lifted, reference_point(group, orbits)), x.repeat_interleave(samples, 1))
    if group.stabilizer_dim == 0:
        assert_close(lifted_g, moved)  # deterministic lift: exactly the transformed element
    else:  # same point, another stabilizer sample: (g u)^-1 u' fixes the reference point
        reference = reference_point(group, orbits)
        assert_close(group.act(group.compose(group.inv(moved), lifted_g), reference), reference)


def reference_point(group: LieGroup, orbits: torch.Tensor) -> torch.Tensor:
    """The point of each orbit that the identity lifts: the origin, (r, 0), (0, 0, r), or the point."""
    if isinstance(group, Trivial):
        return orbits
    if group.orbit_dim == 0:
        return orbits.new_zeros(*orbits.shape[:-1], group.space_dim)
    axis = torch.zeros(group.space_dim, dtype=orbits.dtype)
    axis[0 if group.space_dim == 2 else 2] = 1.0
    return orbits * axis


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
def test_pair_invariants_and_point_distances_are_invariant(group, generator, dtype):
    x, y = (torch.randn(3, 5, group.space_dim, generator=generator, dtype=dtype) for _ in range(2))
    g = group.sample((3, 1), generator, dtype, scale=3.0)
    moved_x, moved_y = group.act(g, x), group.act(g, y)
    invariants = group.pair_invariants(x.unsqueeze(2), y.unsqueeze(1))
    assert invariants.shape == (3, 5, 5, group.invariant_dim) and group.has_exact_lift
    assert_round_off(group.pair_invariants(moved_x.unsqueeze(2), moved_y.unsqueeze(1)), invariants)
    assert_round_off(group.point_distance(moved_x, moved_y), group.point_distance(x, y))


# how the pair invariants of a group with a stabilizer read off the Monte Carlo lift's kernel inputs
# (radius-weighted chart entries, then both radii squared for SO(3); chart of R_u^T R_v, then
# R_u^T (t_v - t_u) for SE(D)), whatever stabilizer elements the lift drew
FROM_LIFTED_INPUTS = {
    "SO3": lambda inputs: torch.cat([inputs[..., 8:9], inputs[..., 9:]], -1),  # r_u r_v (R_u^T R_v)_33, r_u^2, r_v^2
    "SE2": lambda inputs: inputs[..., -2:].square().sum(-1, keepdim=True),
    "SE3": lambda inputs: inputs[..., -3:].square().sum(-1, keepdim=True),
}


@pytest.mark.parametrize("group", ALL, ids=ids(ALL))
def test_pair_invariants_are_what_every_lift_of_the_pair_sees(group, generator, dtype):
    """Free actions: the kernel inputs of the one lift. With a stabilizer: the part of the lifted kernel
    inputs that redrawing the stabilizer samples leaves unchanged (a function on double cosets)."""
    x = torch.randn(2, 6, group.space_dim, generator=generator, dtype=dtype)
    invariants = group.pair_invariants(x.unsqueeze(2), x.unsqueeze(1))
    for seed in range(3 if group.stabilizer_dim else 1):
        elements, orbits, _ = group.lift(x, n_samples=1, generator=torch.Generator().manual_seed(seed))
        relative = group.relative(elements.unsqueeze(2), elements.unsqueeze(1))
        inputs = group.kernel_inputs(relative, orbits.unsqueeze(2).expand(-1, -1, 6, -1),
                                     orbits.unsqueeze(1).expand(-1, 6, -1, -1))
        assert_close(FROM_LIFTED_INPUTS.get(group.name, lambda i: i)(inputs), invariants)


def test_pair_invariants_of_the_rotations_are_polynomials_in_the_points(generator):
    x, y = torch.randn(2, 4, 3, generator=generator, dtype=F64).unbind(0)
    dot, rx, ry = SO3().pair_invariants(x, y).unbind(-1)
    assert_close(dot, (x * y).sum(-1))
    assert_close(rx, x.square().sum(-1))
    assert_close(ry, y.square().sum(-1))
    assert_close(SE3().pair_invariants(x, y).squeeze(-1), (x - y).square().sum(-1))
    assert_close(SO2().pair_invariants(x[:, :2], y[:, :2])[:, 1], x[:, 0] * y[:, 1] - x[:, 1] * y[:, 0])


@pytest.mark.parametrize("group", [SO2(), SO3()], ids=["SO2", "SO3"])
def test_lift_at_the_rotation_centre_is_finite(group, dtype):
    x = torch.zeros(1, 2, group.space_dim, dtype=dtype)
    x[0, 1, 0] = 1.0
    x.requires_grad_(True)
    lifted, orbits, _ = group.lift(x, n_samples=2 if group.stabilizer_dim else 1)
    total = (group.chart(lifted).sum() + orbits.sum())
    (grad,) = torch.autograd.grad(total, x, create_graph=True)
    (grad2,) = torch.autograd.grad(grad.square().sum(), x)
    assert torch.isfinite(lifted).all() and torch.isfinite(grad).all() and torch.isfinite(grad2).all()
    assert orbits[0, 0].item() == 0.0


@pytest.mark.parametrize("group", [g for g in ALL if g.lie_dim], ids=ids([g for g in ALL if g.lie_dim]))
@pytest.mark.parametrize("angle", [None, 1e-6, 0.5])
def test_second_derivatives_through_exp_and_log(group, angle, generator, dtype):
    a = algebra(group, 2, generator, angle, dtype)
    g = group.exp(a)
    if dtype == F64:
        assert torch.autograd.gradgradcheck(group.exp, (a.requires_grad_(True),))
        assert torch.autograd.gradgradcheck(group.log, (g.requires_grad_(True),))
        assert torch.autograd.gradgradcheck(group.embed, (a,))
        return
    rtol, atol = TOLERANCES[dtype].second_derivative
    for function, x in ((group.exp, a), (group.log, g), (group.embed, a)):
        assert_double_backward_matches_float64(function, function, x, rtol, atol)


def test_get_group_names():
    assert isinstance(get_group("se3"), SE3) and isinstance(get_group("SO2"), SO2)
    assert repr(get_group("T", dim=3)) == "T(3)" and repr(get_group("t2")) == "T(2)"
    assert repr(get_group("Trivial", dim=2)) == "Trivial(2)"
    assert isinstance(get_group("SO", dim=3), SO3)
    assert set(GROUPS) == {"Trivial", "T", "SO2", "SE2", "SO3", "SE3"}
    with pytest.raises(ValueError, match="unknown group 'SU2'; valid groups: Trivial, T2, T3, SO2, SE2, SO3, SE3"):
        get_group("SU2")
    with pytest.raises(ValueError, match="needs a dimension"):
        get_group("T")
    with pytest.raises(ValueError, match="acts in 2 dimensions, but dim=3"):
        get_group("SE2", dim=3)


def test_lift_rejects_points_of_the_wrong_dimension():
    with pytest.raises(ValueError, match="SO2 acts on 2-dimensional points"):
        SO2().lift(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="acts freely"):
        T(2).lift(torch.zeros(1, 4, 2), n_samples=3)


def test_the_docs_example_group_is_a_working_group(generator):
    """The one-class group of docs/groups.md runs and satisfies the axioms (so the docs cannot rot)."""
    text = (pathlib.Path(__file__).parents[1] / "docs" / "groups.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/groups.md", "exec"), namespace)
    group = namespace["ScaledRotations"]()
    a = torch.randn(8, 2, generator=generator, dtype=F64) * torch.tensor([0.5, 1.0], dtype=F64)
    assert_close(group.log(group.exp(a)), a)
    g, h = group.exp(a), group.exp(a.flip(0))
    assert_close(group.compose(g, group.inv(g)), group.identity((8,)))
    x = torch.randn(1, 8, 2, generator=generator, dtype=F64)
    lifted, _, _ = group.lift(x)
    assert_close(group.act(lifted, torch.tensor([1.0, 0.0], dtype=F64)), x)
    assert_close(group.relative(g, h), group.embed(group.log(group.compose(group.inv(g), h))))
