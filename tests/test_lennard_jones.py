"""The soft-core Lennard-Jones cluster: forces, its well, symmetry, bound clusters, ground truth, settings, CLI."""

import json
import math

import pytest
import torch
from conftest import assert_round_off
from problems import rotation, run_cli, sample_batch, transform

from hamnet import systems
from hamnet.diagnostics import conservation_report
from hamnet.groups import get_group
from hamnet.io import load_trajectories
from hamnet.simulation import generate
from hamnet.systems import LennardJones, get_system_class

F64 = torch.float64


def _pair(distance: float, dim: int = 2) -> torch.Tensor:
    """Positions ``(1, 2, dim)`` of two particles ``distance`` apart along the first axis."""
    q = torch.zeros(1, 2, dim, dtype=F64)
    q[0, 1, 0] = distance
    return q


def _random_rotation(dim: int, generator: torch.Generator) -> torch.Tensor:
    if dim == 2:
        return rotation(float(torch.rand((), generator=generator, dtype=F64)) * 2 * math.pi)
    matrix, upper = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=F64))
    matrix = matrix * upper.diagonal().sign()
    return matrix * torch.linalg.det(matrix)  # a proper rotation, det = +1


# -- the potential and its forces --------------------------------------------------------------------

@pytest.mark.parametrize("dim, softening", [(2, 0.5), (3, 0.5), (2, 0.0), (3, 0.9)])
def test_forces_are_minus_gradient_of_potential(dim, softening, generator):
    system = LennardJones(n_particles=7, dim=dim, softening=softening, epsilon=1.5, sigma=1.2, temperature=0.3)
    params, z = sample_batch(system, 6, generator)
    q = z[:, 0]
    expected = systems.gradient_force(system.potential, q, params)
    scale = expected.abs().max().item()
    torch.testing.assert_close(system.forces(q, params), expected, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(system.force_function(params)(q), expected, rtol=0, atol=1e-12 * scale)
    q_small = q[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: system.potential(x, params), (q_small,))


@pytest.mark.parametrize("epsilon, sigma, softening", [(1.0, 1.0, 0.5), (2.0, 1.5, 0.0), (0.3, 0.8, 0.7)])
def test_the_pair_minimum_is_at_the_documented_distance(epsilon, sigma, softening):
    system = LennardJones(n_particles=2, epsilon=epsilon, sigma=sigma, softening=softening)
    r_min = math.sqrt(2 ** (1 / 3) * sigma**2 - softening**2)
    assert system.minimum_distance == pytest.approx(r_min, rel=1e-15)
    if softening == 0:
        assert r_min == pytest.approx(2 ** (1 / 6) * sigma, rel=1e-15)  # the unsoftened law's minimum
    assert system.potential(_pair(r_min), {}).item() == pytest.approx(-epsilon, rel=1e-14)
    assert system.forces(_pair(r_min), {}).abs().max().item() < 1e-12 * epsilon / sigma
    # on a fine grid of distances the lowest energy is at r_min, and the pair attracts beyond it, repels inside
    r = torch.linspace(0.5 * r_min, 2 * r_min, 30001, dtype=F64)
    q = torch.zeros(len(r), 2, 2, dtype=F64)
    q[:, 1, 0] = r
    energy, push = system.potential(q, {}), system.forces(q, {})[:, 1, 0]  # push on the particle at +r
    assert abs(r[energy.argmin()].item() - r_min) <= (r[1] - r[0]).item()
    assert (push[r < r_min * (1 - 1e-9)] > 0).all() and (push[r > r_min * (1 + 1e-9)] < 0).all()
    # its curvature there, as documented, against central differences of the potential
    curvature = 72 * epsilon * r_min**2 / (2 ** (2 / 3) * sigma**4)
    assert system.pair_curvature(torch.tensor(r_min, dtype=F64)).item() == pytest.approx(curvature, rel=1e-13)
    h = 1e-4 * r_min
    second = [system.potential(_pair(r_min + d), {}).item() for d in (-h, 0.0, h)]
    assert (second[0] - 2 * second[1] + second[2]) / h**2 == pytest.approx(curvature, rel=1e-6)


def test_the_core_keeps_the_energy_finite_at_zero_distance():
    system = LennardJones(n_particles=2, sigma=1.0, softening=0.5, epsilon=2.0)
    u = 1.0 / 0.5**2
    assert system.potential(_pair(0.0), {}).item() == pytest.approx(4 * 2.0 * (u**6 - u**3), rel=1e-14)
    assert torch.equal(system.forces(_pair(0.0), {}), torch.zeros(1, 2, 2, dtype=F64))


@pytest.mark.parametrize("dim", [2, 3])
def test_potential_is_invariant_to_rotations_translations_and_permutations(dim, generator):
    system = LennardJones(n_particles=8, dim=dim, temperature=0.3)
    params, z = sample_batch(system, 16, generator)
    reference = system.hamiltonian(z, params)
    for _ in range(3):
        shift = 3 * torch.randn(dim, generator=generator, dtype=F64)
        moved = transform(z, _random_rotation(dim, generator), shift)
        assert_round_off(system.hamiltonian(moved, params), reference)
        order = torch.randperm(system.n_particles, generator=generator)
        permuted = {"m": params["m"][:, order]}
        assert_round_off(system.hamiltonian(z[:, :, order], permuted), reference)
        assert_round_off(system.potential(z[:, 0, order], {}), system.potential(z[:, 0], {}))
    assert system.symmetry == ("SE3" if dim == 3 else "SE2")
    assert get_group(system.symmetry).space_dim == dim


# -- sampling ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
def test_sampled_clusters_are_bound_and_at_rest(dim, generator):
    system = LennardJones(dim=dim)
    params, z = sample_batch(system, 2000, generator)
    q, p, m = z[:, 0], z[:, 1], params["m"]
    assert z.shape == (2000, 2, 6, dim) and z.dtype == F64
    assert (system.hamiltonian(z, params) < 0).all()
    assert ((m.unsqueeze(-1) * q).sum(1).abs().max() < 1e-14)  # centre of mass at the origin
    assert p.sum(1).abs().max() < 1e-14
    if dim == 2:
        angular = (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).sum(-1)
    else:
        angular = torch.linalg.cross(q, p, dim=-1).sum(1)
    assert angular.abs().max() < 1e-14
    # every particle has a neighbour at the pair minimum, up to the bounded jitter
    distance = (q.unsqueeze(1) - q.unsqueeze(2)).norm(dim=-1) + 1e9 * torch.eye(6, dtype=F64)
    nearest = distance.amin(-1) / system.minimum_distance
    assert (nearest - 1).abs().max() <= 2 * math.sqrt(dim) * 0.05
    # orientations are uniform: the clusters' positions have no preferred direction
    assert (q.reshape(-1, dim).T.cov() - q.square().mean() * torch.eye(dim, dtype=F64)).abs().max() < 0.02
    assert system.features(params).shape == (2000, 6, 1)


@pytest.mark.parametrize("dim", [2, 3])
def test_thermal_momenta_follow_the_temperature(dim, generator):
    n = 20
    cold, hot = LennardJones(n, dim, temperature=0.05), LennardJones(n, dim, temperature=0.2)
    params = cold.sample_params(1000, generator)
    # equipartition over what is left once total momentum (D) and angular momentum (1 in 2D, 3 in 3D) are removed
    freedom = (n - 1) * dim - (1 if dim == 2 else 3)
    for system in (cold, hot):
        kinetic = system.kinetic(system.sample_state(params, generator)[:, 1], params).mean().item()
        assert kinetic == pytest.approx(freedom / 2 * system.temperature, rel=0.02)


# -- ground truth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim, temperature", [(2, 0.1), (3, 0.1), (2, 0.5)])
def test_generate_conserves_energy_to_the_yoshida8_tolerance(dim, temperature):
    system = LennardJones(dim=dim, temperature=temperature)
    data = generate(system, n_systems=8, steps=300, dt=0.01, seed=0)
    assert data.meta["substeps_max"] <= 10  # ground truth at the defaults stays cheap
    assert data.meta["max_relative_energy_error"] <= 1e-9
    report = conservation_report(data.z, system.hamiltonian, data.params)
    assert report["energy"].max() <= 1e-9
    assert report["linear_momentum"].max() <= 1e-12 and report["angular_momentum"].max() <= 1e-12
    # the clusters visit the wall: pairs come well inside the minimum
    q = data.z[:, :, 0]
    distance = (q.unsqueeze(-2) - q.unsqueeze(-3)).norm(dim=-1) + 1e9 * torch.eye(6, dtype=F64)
    assert distance.min() < 0.9 * system.minimum_distance


def test_timescale_follows_the_lightest_pair_and_the_wall():
    params = {"m": torch.tensor([[1.0, 1.0, 1.0], [0.5, 2.0, 0.25]], dtype=F64)}
    system = LennardJones(n_particles=3, temperature=0.0)
    # at kT = 0 the wall is resolved up to pair energy 0, at r^2 + a^2 = sigma^2
    wall = system.pair_curvature(torch.tensor([1.0 - 0.5**2, 2 ** (1 / 3) - 0.5**2], dtype=F64).sqrt()).max()
    expected = torch.stack([(wall * 2).rsqrt(), (wall * (1 / 0.25 + 1 / 0.5)).rsqrt()])
    torch.testing.assert_close(system.timescale(params), expected, rtol=1e-12, atol=0)
    hotter, softer = LennardJones(n_particles=3, temperature=0.5), LennardJones(n_particles=3, softening=0.8)
    assert (hotter.timescale(params) < LennardJones(n_particles=3).timescale(params)).all()
    assert (softer.timescale(params) > LennardJones(n_particles=3).timescale(params)).all()


# -- settings, registry and command line ---------------------------------------------------------------

def test_settings_round_trip_and_refusals():
    system = LennardJones(n_particles=4, dim=3, epsilon=2.0, sigma=0.5, softening=0.1, temperature=0.2,
                          mass_range=(1, 3))
    rebuilt = LennardJones(**json.loads(json.dumps(system.settings())))
    assert rebuilt.settings() == system.settings()
    assert system.required_params() == ("m",)
    for settings, message in [({"epsilon": 0.0}, "epsilon must be a positive finite number, got 0.0"),
                              ({"epsilon": -1.0}, "epsilon must be a positive"),
                              ({"sigma": 0.0}, "sigma must be a positive"),
                              ({"sigma": math.inf}, "sigma must be a positive finite number"),
                              ({"softening": -0.1}, "softening must be a non-negative finite number, got -0.1"),
                              ({"softening": 1.2}, r"softening \(the core radius\) must be below 2\^\(1/6\) sigma"),
                              ({"temperature": -0.1}, "temperature must be a non-negative"),
                              ({"mass_range": (2.0, 1.0)}, r"mass_range must be \(low, high\) with 0 < low <= high")]:
        with pytest.raises(ValueError, match=message):
            LennardJones(**settings)


def test_registry_cli_generate_and_info(tmp_path, capsys):
    assert get_system_class("lennard-jones") is LennardJones
    out = tmp_path / "lj.npz"
    code, _, err = run_cli(["generate", "--system", "lennard-jones", "--dim", "3", "--softening", "0.4",
                            "--n-systems", "3", "--steps", "4", "--seed", "1", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    data = load_trajectories(out)
    assert data.z.shape == (3, 5, 2, 6, 3) and set(data.params) == {"m"}
    assert data.meta["system"] == "lennard-jones" and data.meta["system_settings"]["softening"] == 0.4
    assert isinstance(data.system(), LennardJones) and data.system().settings() == data.meta["system_settings"]
    code, stdout, _ = run_cli(["info", out], capsys)
    assert code == 0 and "lennard-jones" in stdout and "'softening': 0.4" in stdout


@pytest.mark.parametrize("value", ["-0.1", "2.0"])
def test_cli_refuses_a_bad_core_radius_in_one_line(tmp_path, capsys, value):
    out = tmp_path / "lj.npz"
    code, _, err = run_cli(["generate", "--system", "lennard-jones", f"--softening={value}", "--n-systems", "2",
                            "--steps", "2", "--out", out, "--quiet"], capsys)
    assert code == 1 and err.count("\n") == 1 and "softening" in err and "Traceback" not in err
    assert not out.exists()
