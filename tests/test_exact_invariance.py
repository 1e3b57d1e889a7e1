"""The exact lift (every group's default): LieResNets invariant to round-off under random group
elements, on centred points to rigid motions too, smooth through the rotation centre to second
derivatives, and, as a learned potential, keeping linear and angular momentum to round-off over a
long leapfrog rollout in 3D: Noether's theorem made exact. Invariance and smoothness run in float32
and float64 (``dtype`` fixture); the rollout in float64."""

import pytest
import torch
from conftest import TOLERANCES, assert_round_off
from problems import ALL_GROUPS, SENSITIVE, ids, point_cloud, sample_batch, small_lieresnet
from torch import nn

from hamnet.diagnostics import conservation_report
from hamnet.dynamics import potential_force
from hamnet.equivariance import invariance_error
from hamnet.groups import SE2, SE3, SO2, SO3, T
from hamnet.lieconv import centre
from hamnet.rollouts import rollout
from hamnet.systems import NBody

F64 = torch.float64
RIGID_MOTIONS = {2: SE2(), 3: SE3()}
ROTATION_GROUPS = [SO2(), SO3(), SE2(), SE3()]


@pytest.mark.parametrize("neighbours", [None, 4])
@pytest.mark.parametrize("group", ALL_GROUPS, ids=ids(ALL_GROUPS))
def test_exact_networks_are_invariant_to_round_off(group, neighbours, generator, dtype):
    model = small_lieresnet(group, neighbours, dtype=dtype, gain=SENSITIVE)
    assert model.lift == "exact" and model.lift_samples == 1
    points, features = point_cloud(group, generator, dtype=dtype)
    report = invariance_error(model, group, points, features, generator=generator, translation_scale=3.0,
                                report=True)
    assert report.relative_change <= TOLERANCES[dtype].invariance
    assert report.lift_spread == 0.0


@pytest.mark.parametrize("group", ROTATION_GROUPS, ids=ids(ROTATION_GROUPS))
def test_on_centred_points_rotation_groups_are_invariant_to_every_rigid_motion(group, generator, dtype):
    model = small_lieresnet(group, neighbours=3, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, dtype=dtype)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    reference = model(centre(points, mask), features, mask)
    motions = RIGID_MOTIONS[group.space_dim].sample((3, 1), generator, dtype, scale=3.0)  # about any point
    moved = RIGID_MOTIONS[group.space_dim].act(motions, points)
    assert_round_off(model(centre(moved, mask), features, mask), reference)


@pytest.mark.parametrize("dim", [2, 3])
def test_translation_networks_are_exactly_translation_invariant_but_not_rotation_invariant(dim, generator, dtype):
    """A T(D) network's potential keeps linear momentum only: rotations (which a rigid motion
    includes) change it far beyond round-off, which is what an ``H(Rz + c)`` check of T(3) shows."""
    group = T(dim)
    model = small_lieresnet(group, dtype=dtype, gain=SENSITIVE)
    points, features = point_cloud(group, generator, dtype=dtype)
    translations = invariance_error(model, group, points, features, translation_scale=3.0, report=True)
    rigid_motions = invariance_error(model, RIGID_MOTIONS[dim], points, features, report=True)
    assert translations.relative_change <= TOLERANCES[dtype].invariance
    assert rigid_motions.relative_change > 1e-3


def _steps_along_a_line_through_the_centre(model, group, n, dtype):
    """One point moves along ``x(s) = s d``, ``s`` in [-0.2, 0.2] in ``n`` steps, through the rotation
    centre exactly (``s = 0``). Returns the output, the force on the point and the curvature
    ``d^2 out / ds^2`` along the path (all finite), and the largest change of each between neighbours."""
    s = (torch.arange(n + 1, dtype=F64) - n // 2) * (0.4 / n)
    assert s[n // 2] == 0.0
    direction = torch.tensor([0.6, -0.8, 0.5][: group.space_dim], dtype=F64)
    others = torch.tensor([[1.0, 0.2, -0.3], [-0.4, 0.9, 0.7], [0.3, -0.6, 1.1]], dtype=F64)[:, : group.space_dim]
    path = torch.cat([(s.view(-1, 1) * direction).unsqueeze(1), others.expand(n + 1, -1, -1)], 1)
    path = path.to(dtype).requires_grad_(True)
    d = direction.to(dtype)
    out = model(path, torch.ones(n + 1, 4, 2, dtype=dtype)).sum(-1)
    (grad,) = torch.autograd.grad(out.sum(), path, create_graph=True)
    (grad_of_slope,) = torch.autograd.grad((grad[:, 0] @ d).sum(), path)
    force, curvature = grad[:, 0].detach(), grad_of_slope[:, 0] @ d
    series = (out.detach(), force, curvature)
    assert all(torch.isfinite(x).all() for x in series)
    return [x.diff(dim=0).flatten(1).norm(dim=-1).max() if x.dim() > 1 else x.diff().abs().max() for x in series]


@pytest.mark.parametrize("group", [SO2(), SO3()], ids=["SO2", "SO3"])
def test_second_derivatives_are_smooth_through_the_rotation_centre(group, dtype):
    """Halving the step halves every step of the output, the force and the curvature when each is
    smooth; a kink or jump at the centre (where a lift's rotation turns over) would not halve."""
    model = small_lieresnet(group, dtype=dtype, gain=SENSITIVE)
    coarse = _steps_along_a_line_through_the_centre(model, group, 100, dtype)
    fine = _steps_along_a_line_through_the_centre(model, group, 200, dtype)
    for c, f in zip(coarse, fine):
        assert 1.8 < c / f < 2.2


def test_the_smoothness_check_catches_the_monte_carlo_lifts_kink_at_the_centre():
    model = small_lieresnet(SO3(), lift="monte-carlo", lift_samples=2, gain=SENSITIVE)
    coarse = _steps_along_a_line_through_the_centre(model, SO3(), 100, F64)
    fine = _steps_along_a_line_through_the_centre(model, SO3(), 200, F64)
    assert min(c / f for c, f in zip(coarse, fine)) < 1.5


# -- Noether, exactly: an SE(3)-exact potential keeps both momenta in a long 3D rollout ----------------

#: stiffness of the harmonic pair potential that keeps the bodies bound whatever the network adds
CONFINEMENT = 0.5
#: the network's output scale, which makes its forces about as large as gravity's
NETWORK_SCALE = 10.0


class LearnedPlusTruePotential(nn.Module):
    """``H = sum |p|^2 / 2m + V_true(q) + CONFINEMENT / 2 sum_{i<j} |q_i - q_j|^2 + V_net(q - centroid)``.

    Separable (true kinetic energy), like HLieConv. A random network's potential does not confine,
    and the bodies would fly apart where it is nearly flat; gravity and the harmonic confinement are
    invariant to rotations and translations, so the sum has exactly the network's symmetries. Only
    the network's force comes from autograd (the rollout's time is mostly that).
    """

    separable = True

    def __init__(self, network: nn.Module, system: NBody) -> None:
        super().__init__()
        self.network, self.system = network, system

    def learned_potential(self, q, params):
        """``V_net``: the network on centred positions, with per-body features ``(m, 1)``."""
        m = params["m"].to(q.dtype)
        return self.network(centre(q), torch.stack([m, torch.ones_like(m)], -1)).squeeze(-1)

    def potential(self, q, params):
        pairs = (q.unsqueeze(1) - q.unsqueeze(2)).square().sum((1, 2, 3))
        return self.system.potential(q, params) + CONFINEMENT / 4 * pairs + self.learned_potential(q, params)

    def hamiltonian(self, z, params):
        return self.system.kinetic(z[:, 1], params) + self.potential(z[:, 0], params)

    def velocity(self, p, params):
        return self.system.velocity(p, params)

    def forces(self, q, params):
        confinement = -CONFINEMENT * q.shape[1] * centre(q)
        return self.system.forces(q, params) + confinement + potential_force(self.learned_potential, q, params,
                                                                              owner=self)


@pytest.mark.slow  # seconds of subprocesses or 10,000 steps: `make test-slow` (and CI) run it
def test_se3_exact_potential_keeps_linear_and_angular_momentum_for_10000_leapfrog_steps(generator):
    system = NBody(n_particles=4, dim=3, family="cluster")
    params, z0 = sample_batch(system, 2, generator)
    network = small_lieresnet(SE3(), width=8, depth=1, gain=SENSITIVE)
    with torch.no_grad():
        network.head.weight.mul_(NETWORK_SCALE)
    model = LearnedPlusTruePotential(network, system)
    torch.testing.assert_close(model.forces(z0[:, 0], params), potential_force(model.potential, z0[:, 0], params))
    learned_force = potential_force(model.learned_potential, z0[:, 0], params)
    assert learned_force.abs().max() > 0.1 * system.forces(z0[:, 0], params).abs().max()  # the network matters
    trajectory = rollout(model, z0, params, steps=10_000, dt=0.01, method="leapfrog")
    report = conservation_report(trajectory)
    assert report["linear_momentum"].max() < 1e-12 and report["angular_momentum"].max() < 1e-12
    assert trajectory[:, :, 0].norm(dim=-1).max() < 10.0  # stayed bound: the check means something
