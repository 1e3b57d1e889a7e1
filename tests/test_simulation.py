"""Ground-truth accuracy: conservation targets, analytic and independent solutions, order."""

import math
import time

import pytest
import torch

from hamnet.diagnostics import conservation_report
from hamnet.simulation import (MAX_SUBSTEPS, STEP_FRACTION, check_generation, choose_substeps, estimate_generation,
                               generate, simulate)
from hamnet.systems import HamiltonianSystem, NBody, Springs
from hamnet.systems.springs import two_particle_frequency

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
    ({"steps": 2.5}, "steps must be an integer, got 2.5"),
    ({"substeps": 0}, "substeps must be >= 1"),
    ({"substeps": MAX_SUBSTEPS + 1}, "substeps=10,001 is above the limit of 10,000 .* --max-substeps"),
    ({"max_substeps": 0}, "max_substeps must be >= 1"),
])
def test_bad_settings(kwargs, message):
    params, z0 = sample_batch(Springs(), 2, torch.Generator().manual_seed(0))
    settings = {"steps": 5, "dt": 0.01, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate(Springs(), z0, params, **settings)


# -- refusals: nothing runs that cannot finish, nothing is written that is not finite -----------------

def _refusal(call) -> str:
    """The one-line message of the ``ValueError`` that ``call()`` raises within a second."""
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        call()
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    assert "\n" not in message
    return message


class _NeverSampled(Springs):
    """Springs whose sampling fails the test: refusals must come before it."""

    def sample_params(self, n_systems, generator):
        raise AssertionError("sampled before the preflight check")


@pytest.mark.parametrize("system, dt, words", [
    (Springs(), 1e300, ["springs needs 1.53e+302 sub-steps", "dt = 1e+300", "timescale 0.0654"]),
    (Springs(), 1e4, ["springs needs 1,527,936 sub-steps", "dt = 10000"]),
    (NBody(softening=1e-6), 0.01, ["nbody needs 101,419,760 sub-steps", "timescale 9.86e-10", "a larger --softening"]),
], ids=["dt=1e300", "dt=1e4", "softening=1e-6"])
def test_too_many_substeps_are_refused_fast(system, dt, words):
    message = _refusal(lambda: generate(system, n_systems=4, steps=10, dt=dt, seed=0))
    for word in words + ["shortest timescale", "above the limit of 10,000", "use a smaller --dt",
                         "raise the limit with --max-substeps (max_substeps= in Python)"]:
        assert word in message, message


def test_raising_max_substeps_allows_more():
    system = Springs(n_particles=2)
    params, z0 = sample_batch(system, 1, torch.Generator().manual_seed(0))
    dt = 1.2 * MAX_SUBSTEPS * STEP_FRACTION * float(system.timescale(params))  # 12,000 sub-steps
    run = dict(steps=2, dt=dt, method="leapfrog")
    assert "above the limit of 10,000" in _refusal(lambda: simulate(system, z0, params, **run))
    t, z, settings = simulate(system, z0, params, max_substeps=2 * MAX_SUBSTEPS, **run)
    assert MAX_SUBSTEPS < settings.substeps_max <= 1.2 * MAX_SUBSTEPS + 1
    assert torch.isfinite(z).all()
    # generate passes the limit and fixed sub-steps on: nbody's defaults need 4
    assert "above the limit of 3" in _refusal(lambda: generate(NBody(), n_systems=2, steps=2, dt=0.01, seed=0,
                                                                  max_substeps=3))
    assert generate(NBody(), n_systems=2, steps=2, dt=0.01, seed=0, substeps=2).meta["substeps_max"] == 2


@pytest.mark.parametrize("system, n_systems, flag", [
    (_NeverSampled(), 10**12, "use fewer --n-systems, --steps or --n-particles"),
    (_NeverSampled(n_particles=10**9), 1, "use fewer --n-particles"),
    (NBody(n_particles=10**9), 1, "use fewer --n-particles"),
], ids=["n_systems=1e12", "n_particles=1e9 springs", "n_particles=1e9 nbody"])
def test_preflight_refuses_what_cannot_fit_before_sampling(system, n_systems, flag):
    message = _refusal(lambda: generate(system, n_systems=n_systems, steps=500, dt=0.01, seed=0))
    assert "of memory" in message and flag in message, message


def test_preflight_refuses_absurd_work_and_passes_the_defaults():
    huge = estimate_generation(NBody(n_particles=300), n_systems=10**5, steps=1000)
    with pytest.raises(ValueError, match=r"would take about 375 hours .* use fewer --n-systems, --steps or "):
        check_generation(huge, available_bytes=10**15)
    for system in (Springs(), NBody(), NBody(family="cluster")):  # the CLI's defaults
        params = system.sample_params(1000, torch.Generator().manual_seed(0))
        counts = choose_substeps(system, params, 0.01)
        estimate = estimate_generation(system, n_systems=1000, steps=500, substeps=counts)
        check_generation(estimate, available_bytes=2**30)
        assert estimate.memory_bytes < 2**28 and estimate.hours < 0.01
    with pytest.raises(ValueError, match=r"of memory .* but 976.6 KiB is available: use fewer --n-systems"):
        check_generation(estimate, available_bytes=10**6)


class _NaNEnergy(Springs):
    """Springs whose H (not its forces) is NaN: the trajectory is fine, its energy is not."""

    def hamiltonian(self, z, params):
        return torch.full(z.shape[:1], math.nan, dtype=z.dtype)


def test_non_finite_energy_is_refused_not_written():
    message = _refusal(lambda: generate(_NaNEnergy(), n_systems=3, steps=5, dt=0.01, seed=0))
    assert message.startswith("springs: the relative energy change of system 0 at step 0 (t = 0) is not finite")
    assert "H = nan" in message and "hamiltonian(z, params)" in message


def test_non_finite_trajectories_are_refused():
    params, z0 = sample_batch(Springs(), 3, torch.Generator().manual_seed(0))
    message = _refusal(lambda: simulate(Springs(), z0, params, steps=100, dt=100.0, substeps=1))
    assert message.startswith("springs: the trajectory of system 0 stops being finite at step")
    assert "use a smaller --dt, or more sub-steps per output step (--substeps N" in message
    z0[1, 0, 0, 0] = math.nan
    message = _refusal(lambda: simulate(Springs(), z0, params, steps=5, dt=0.01))
    assert message == "springs: the initial state of system 1 is not finite; check its sample_state (or z0)"


class _TensorSettings(_NeverSampled):
    def settings(self):
        return {**super().settings(), "scale": torch.tensor(2.0)}


def test_settings_must_be_json_values():
    message = _refusal(lambda: generate(_TensorSettings(), n_systems=2, steps=2, dt=0.01, seed=0))
    assert message.startswith("system springs's settings() must return JSON values (numbers, strings, lists, "
                              "dicts); got {'n_particles': 6, 'dim': 2, 'scale': tensor(2.)} (Object of type Tensor")


class _Trap(HamiltonianSystem):
    """A harmonic trap without a timescale."""

    name = "trap"

    def sample_params(self, n_systems, generator):
        return {"m": torch.ones(n_systems, self.n_particles, dtype=torch.float64)}

    def sample_state(self, params, generator):
        return torch.randn((params["m"].shape[0], 2, self.n_particles, self.dim), generator=generator,
                           dtype=torch.float64)

    def potential(self, q, params):
        return 0.5 * q.square().sum((-1, -2))


class _BadTimescale(_Trap):
    def __init__(self, tau, **settings):
        super().__init__(**settings)
        self.tau = tau

    def timescale(self, params):
        return self.tau


def test_timescale_is_needed_and_checked():
    message = _refusal(lambda: generate(_Trap(), n_systems=2, steps=2, dt=0.01, seed=0))
    assert message == ("trap has no timescale(params): define it, or give a fixed number of sub-steps "
                       "(--substeps N on the command line, substeps=N in Python)")
    data = generate(_Trap(), n_systems=2, steps=2, dt=0.01, seed=0, substeps=2)
    assert data.meta["substeps_max"] == 2 and data.meta["max_relative_energy_error"] < 1e-9
    params = {"m": torch.ones(2, 6, dtype=torch.float64)}
    for tau, words in [(torch.tensor([1.0, 0.0]), "must be positive and finite; got 0 for system 1"),
                       (torch.tensor([math.nan, 1.0]), "must be positive and finite; got nan for system 0"),
                       (torch.ones(3), "must give one time per system, shape (2,); got shape (3,)")]:
        message = _refusal(lambda: choose_substeps(_BadTimescale(tau), params, 0.01))
        assert message.startswith("trap's timescale(params) ") and words in message, message
