"""Ground-truth accuracy: conservation targets, analytic and independent solutions, order."""

import math

import pytest
import torch

from hamnet.diagnostics import conservation_report
from hamnet.simulation import generate, simulate
from systems import NBody, Springs
from systems.springs import two_particle_frequency

from problems import log_log_slope, sample_batch


def test_springs_meet_accuracy_targets():
    system = Springs()  # N = 6, D = 2
    params, z0 = sample_batch(system, 500, torch.Generator().manual_seed(0))
    _, z, _ = simulate(system, z0, params, steps=500, dt=0.01)
    report = conservation_report(z, system.hamiltonian, params)
    assert report["energy"].max() <= 1e-9
    assert report["linear_momentum"].max() <= 1e-12
    assert report["angular_momentum"].max() <= 1e-12


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("family", ["central", "cluster"])
def test_nbody_meets_energy_target(family, dim):
    system = NBody(family=family, dim=dim)
    params, z0 = sample_batch(system, 16, torch.Generator().manual_seed(0))
    _, z, _ = simulate(system, z0, params, steps=500, dt=0.01)
    report = conservation_report(z, system.hamiltonian, params)
    assert report["energy"].max() <= 1e-8
    assert report["linear_momentum"].max() <= 1e-12
    assert report["angular_momentum"].max() <= 1e-12


def test_two_particle_spring_matches_analytic_solution(generator):
    # The relative coordinate r = q1 - q2 is a harmonic oscillator; with zero total momentum the
    # centre of mass stays put. r(t) = r0 cos(w t) + (v0 / w) sin(w t).
    system = Springs(n_particles=2)
    params = system.sample_params(6, generator)
    z0 = system.sample_state(params, generator)
    t, z, _ = simulate(system, z0, params, steps=300, dt=0.01)
    for b in range(6):
        m1, m2 = params["m"][b].tolist()
        omega = two_particle_frequency(m1, m2, *params["k"][b].tolist())
        r0 = z0[b, 0, 0] - z0[b, 0, 1]
        v0 = z0[b, 1, 0] / m1 - z0[b, 1, 1] / m2
        wt = (omega * t).unsqueeze(-1)
        expected = r0 * torch.cos(wt) + v0 / omega * torch.sin(wt)
        torch.testing.assert_close(z[b, :, 0, 0] - z[b, :, 0, 1], expected, rtol=0, atol=1e-9 * float(expected.abs().max()))


def _rk4_reference(system, z0, params, t_end, n_steps):
    """A separately written classical RK4 with autograd forces at a very small step."""
    def field(z):
        q, p = z[:, 0], z[:, 1]
        with torch.enable_grad():
            q = q.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(system.potential(q, params).sum(), q)
        return torch.stack([p / params["m"].unsqueeze(-1), -grad], 1)

    z, h = z0.clone(), t_end / n_steps
    for _ in range(n_steps):
        k1 = field(z)
        k2 = field(z + 0.5 * h * k1)
        k3 = field(z + 0.5 * h * k2)
        k4 = field(z + h * k3)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


@pytest.mark.parametrize("system", [Springs(), NBody(family="cluster")], ids=repr)
def test_agrees_with_independent_fine_rk4(system):
    params, z0 = sample_batch(system, 4, torch.Generator().manual_seed(0))
    _, z, _ = simulate(system, z0, params, steps=50, dt=0.01)
    reference = _rk4_reference(system, z0, params, t_end=0.5, n_steps=5000)
    scale = z0.abs().max()
    torch.testing.assert_close(z[:, -1], reference, rtol=0, atol=1e-10 * scale)


class _SpringsStepped(Springs):
    """Springs without the linear fast path: integrated kick by kick."""
    linear = False


def test_linear_fast_path_equals_stepping():
    params, z0 = sample_batch(Springs(), 64, torch.Generator().manual_seed(0))
    _, fast, _ = simulate(Springs(), z0, params, steps=200, dt=0.01)
    _, stepped, _ = simulate(_SpringsStepped(), z0, params, steps=200, dt=0.01)
    torch.testing.assert_close(fast, stepped, rtol=0, atol=1e-12 * z0.abs().max())


@pytest.mark.parametrize("method, order", [("leapfrog", 2), ("yoshida4", 4), ("yoshida6", 6), ("yoshida8", 8)])
def test_convergence_order(method, order):
    # An eccentric two-body orbit is nonlinear; compare with a much finer run of the same method.
    system = NBody(n_particles=2, softening=0.05)
    params = {"m": torch.tensor([[1.0, 0.5]], dtype=torch.float64)}
    z0 = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]], [[0.0, -0.4], [0.0, 0.4]]]], dtype=torch.float64)
    dt = 0.4
    substeps = [2, 4, 8] if order < 8 else [4, 6, 8]
    _, reference, _ = simulate(system, z0, params, steps=4, dt=dt, substeps=64, method="yoshida8")
    errors = []
    for n in substeps:
        _, z, _ = simulate(system, z0, params, steps=4, dt=dt, substeps=n, method=method)
        errors.append((z[:, -1] - reference[:, -1]).abs().max().item())
    slope = -log_log_slope(substeps, errors)
    assert abs(slope - order) < 0.5, (errors, slope)


def test_same_seed_same_trajectories_and_chunking_does_not_matter():
    params, z0 = sample_batch(NBody(family="cluster"), 6, torch.Generator().manual_seed(0))
    _, a, _ = simulate(NBody(family="cluster"), z0, params, steps=20, dt=0.01, systems_per_batch=6)
    _, b, _ = simulate(NBody(family="cluster"), z0, params, steps=20, dt=0.01, systems_per_batch=2)
    assert torch.equal(a, b)
    one = generate(Springs(), n_systems=5, steps=10, dt=0.01, seed=3)
    two = generate(Springs(), n_systems=5, steps=10, dt=0.01, seed=3)
    other = generate(Springs(), n_systems=5, steps=10, dt=0.01, seed=4)
    assert torch.equal(one.z, two.z) and one.meta == two.meta
    assert not torch.equal(one.z, other.z)


def test_exact_output_grid_and_meta():
    data = generate(Springs(), n_systems=3, steps=7, dt=0.01, seed=0)
    assert data.z.shape == (3, 8, 2, 6, 2)
    assert torch.equal(data.t, torch.arange(8, dtype=torch.float64) * 0.01)
    assert data.meta["integrator"] == "yoshida8" and data.meta["dt"] == 0.01
    assert data.meta["max_relative_energy_error"] < 1e-9


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be >= 1"),
    ({"dt": 0.0}, "dt must be a positive"),
    ({"dt": -0.1}, "dt must be a positive"),
    ({"dt": math.inf}, "dt must be a positive"),
    ({"method": "euler"}, "unknown method 'euler'"),
])
def test_bad_settings(kwargs, message):
    params, z0 = sample_batch(Springs(), 2, torch.Generator().manual_seed(0))
    settings = {"steps": 5, "dt": 0.01, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate(Springs(), z0, params, **settings)
