"""The charged (softened Coulomb) system: forces, conservation, symmetry, independent solutions, files."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import assert_close, assert_round_off
from problems import rotation, run_cli, sample_batch, transform

from hamnet import systems
from hamnet.diagnostics import conservation_report, energy
from hamnet.groups import get_group
from hamnet.io import TrajectoryFileError, load_trajectories, save_trajectories
from hamnet.simulation import generate, simulate
from hamnet.systems import Charged, get_system_class

F64 = torch.float64


def _two_charges(c1: float, c2: float, m1: float = 1.0, m2: float = 1.0) -> dict:
    return {"m": torch.tensor([[m1, m2]], dtype=F64), "charge": torch.tensor([[c1, c2]], dtype=F64)}


def _energy_scale(system: Charged, z: torch.Tensor, params: dict) -> torch.Tensor:
    """``T + k_e sum_{i<j} |c_i c_j| / sqrt(r_ij^2 + eps^2)`` at ``z: (B, 2, N, D)``, ``(B,)``: the size of
    the energy terms. Coulomb energy has no definite sign, so ``|H(0)|`` can be near 0 however accurate
    the trajectory; the energy change is measured against this instead."""
    unsigned = {**params, "charge": params["charge"].abs()}
    return system.kinetic(z[:, 1], params) + system.potential(z[:, 0], unsigned)


# -- the potential and its forces --------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
def test_forces_are_minus_gradient_of_potential(dim, generator):
    system = Charged(n_particles=6, dim=dim, charges=(-2.0, -1.0, 0.5, 1.0), mass_range=(0.5, 2.0))
    params, z = sample_batch(system, 4, generator)
    q = z[:, 0]
    expected = systems.gradient_force(system.potential, q, params)
    assert_close(system.forces(q, params), expected)
    assert_close(system.force_function(params)(q), expected)
    q_small, charge = q[:2].clone().requires_grad_(True), params["charge"][:2].clone().requires_grad_(True)
    m = params["m"][:2]
    assert torch.autograd.gradcheck(lambda x, c: system.potential(x, {"m": m, "charge": c}), (q_small, charge))


@pytest.mark.parametrize("c1, c2", [(1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (2.0, -0.5)])
def test_like_charges_repel_and_opposite_attract(c1, c2):
    system = Charged(n_particles=2, dim=3, softening=0.2, coulomb_constant=1.5)
    params = _two_charges(c1, c2)
    distance = 0.3
    q = torch.zeros(1, 2, 3, dtype=F64)
    q[0, 1, 0] = distance
    softened_r_sq = distance**2 + 0.2**2
    assert system.potential(q, params).item() == pytest.approx(1.5 * c1 * c2 / math.sqrt(softened_r_sq), rel=1e-14)
    force = system.forces(q, params)[0]
    magnitude = 1.5 * abs(c1 * c2) * distance / softened_r_sq**1.5
    # particle 1 sits at +x from particle 0: like charges push particle 0 towards -x, opposite pull it to +x
    away = -1.0 if c1 * c2 > 0 else 1.0
    torch.testing.assert_close(force[0], torch.tensor([away * magnitude, 0.0, 0.0], dtype=F64), rtol=1e-14, atol=0)
    torch.testing.assert_close(force[1], -force[0], rtol=0, atol=0)


@pytest.mark.parametrize("dim", [2, 3])
def test_hamiltonian_is_invariant_to_rotations_and_translations(dim, generator):
    system = Charged(dim=dim)
    params, z = sample_batch(system, 8, generator)
    reference = system.hamiltonian(z, params)
    for _ in range(3):
        if dim == 2:
            matrix = rotation(float(torch.rand((), generator=generator, dtype=F64)) * 2 * math.pi)
        else:
            matrix, upper = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=F64))
            matrix = matrix * upper.diagonal().sign()
            matrix = matrix * torch.linalg.det(matrix)  # a proper rotation, det = +1
        shift = 3 * torch.randn(dim, generator=generator, dtype=F64)
        assert_round_off(system.hamiltonian(transform(z, matrix, shift), params), reference)
    assert system.symmetry == ("SE3" if dim == 3 else "SE2")
    assert get_group(system.symmetry).space_dim == dim


# -- ground truth ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
def test_generate_meets_nbody_accuracy_targets(dim):
    system = Charged(dim=dim)
    data = generate(system, n_systems=16, steps=500, dt=0.01, seed=0)
    assert data.meta["substeps_max"] <= 8  # ground truth at the defaults stays cheap
    report = conservation_report(data.z, system.hamiltonian, data.params)
    h = energy(system.hamiltonian, data.z, data.params)
    change = (h - h[:, :1]).abs().amax(1) / _energy_scale(system, data.z[:, 0], data.params)
    assert change.max() <= 1e-8
    assert data.meta["max_relative_energy_error"] <= 1e-8  # relative to |H(0)|, as the file records it
    assert report["linear_momentum"].max() <= 1e-12
    assert report["angular_momentum"].max() <= 1e-12


def test_circular_orbit_matches_analytic_solution():
    # Opposite charges circle their centre of mass at the separation r where the softened attraction
    # is the centripetal force: mu omega^2 r = k |c1 c2| r / (r^2 + eps^2)^(3/2). omega depends on eps.
    system = Charged(n_particles=2, softening=0.3, coulomb_constant=2.0)
    m1, m2, separation = 1.0, 0.25, 0.5
    params = _two_charges(1.0, -1.0, m1, m2)
    mu, total = m1 * m2 / (m1 + m2), m1 + m2
    omega = math.sqrt(2.0 / (mu * (separation**2 + 0.3**2) ** 1.5))
    q = torch.tensor([[[m2 / total * separation, 0.0], [-m1 / total * separation, 0.0]]], dtype=F64)
    p = torch.tensor([[[0.0, mu * omega * separation], [0.0, -mu * omega * separation]]], dtype=F64)
    t, z, _ = simulate(system, torch.stack([q, p], 1), params, steps=100, dt=0.01)
    angle = omega * t
    expected = separation * torch.stack([angle.cos(), angle.sin()], -1)
    torch.testing.assert_close(z[0, :, 0, 0] - z[0, :, 0, 1], expected, rtol=0, atol=1e-12)


def _rk4_relative_orbit(r, v, acceleration_scale: float, softening: float, t_end: float, n_steps: int):
    """The relative coordinate of two bodies, ``r'' = a r / (|r|^2 + eps^2)^(3/2)``, by classical RK4
    in plain Python floats: written apart from the system's potential, forces and integrators."""
    def field(x, y, vx, vy):
        a = acceleration_scale * (x * x + y * y + softening**2) ** -1.5
        return vx, vy, a * x, a * y

    state, h = (*r, *v), t_end / n_steps
    for _ in range(n_steps):
        k1 = field(*state)
        k2 = field(*(s + 0.5 * h * k for s, k in zip(state, k1)))
        k3 = field(*(s + 0.5 * h * k for s, k in zip(state, k2)))
        k4 = field(*(s + h * k for s, k in zip(state, k3)))
        state = tuple(s + h / 6 * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(state, k1, k2, k3, k4))
    return state


def test_eccentric_orbit_agrees_with_independent_fine_rk4():
    # Half the circular speed: the pair falls to a pericentre of 0.17, inside the scale of eps = 0.1.
    system = Charged(n_particles=2)
    m1, m2 = 1.0, 0.5
    params = _two_charges(1.0, -1.0, m1, m2)
    mu, total = m1 * m2 / (m1 + m2), m1 + m2
    speed = 0.5 * math.sqrt(1 / (mu * (1 + 0.1**2) ** 1.5))
    q = torch.tensor([[[m2 / total, 0.0], [-m1 / total, 0.0]]], dtype=F64)
    p = torch.tensor([[[0.0, mu * speed], [0.0, -mu * speed]]], dtype=F64)
    _, z, _ = simulate(system, torch.stack([q, p], 1), params, steps=100, dt=0.01)
    x, y, vx, vy = _rk4_relative_orbit((1.0, 0.0), (0.0, speed), -1 / mu, 0.1, t_end=1.0, n_steps=20_000)
    r, v = torch.tensor([x, y], dtype=F64), torch.tensor([vx, vy], dtype=F64)
    expected = torch.stack([torch.stack([m2 / total * r, -m1 / total * r]), torch.stack([mu * v, -mu * v])])
    assert (z[0, :, 0, 0] - z[0, :, 0, 1]).norm(dim=-1).min() < 0.2
    torch.testing.assert_close(z[0, -1], expected, rtol=0, atol=1e-11)


# -- sampling and settings -------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
def test_sampling_follows_the_egnn_charged_set(dim, generator):
    system = Charged(dim=dim)
    params, z = sample_batch(system, 2000, generator)
    assert z.shape == (2000, 2, 5, dim) and params["charge"].shape == params["m"].shape == (2000, 5)
    assert set(params["charge"].unique().tolist()) == {-1.0, 1.0}
    assert abs(params["charge"].mean().item()) < 0.05
    assert (params["m"] == 1).all()
    assert z[:, 1].sum(1).abs().max() < 1e-15
    assert abs(z[:, 0].std().item() - 1.0) < 0.02
    # speeds of 0.5 less a shared mean velocity: relative speeds stay at most 2 x 0.5, and reach it
    v = z[:, 1] / params["m"].unsqueeze(-1)
    relative = (v.unsqueeze(1) - v.unsqueeze(2)).norm(dim=-1)
    assert 0.99 < relative.max() <= 1.0 + 1e-12
    assert system.features(params).shape == (2000, 5, 2)


def test_same_seed_gives_the_same_file(tmp_path):
    def write(seed, name):
        save_trajectories(tmp_path / name, generate(Charged(dim=3), n_systems=3, steps=5, dt=0.01, seed=seed))
        return load_trajectories(tmp_path / name)

    one, two, other = write(7, "a.npz"), write(7, "b.npz"), write(8, "c.npz")
    assert torch.equal(one.z, two.z) and one.meta == two.meta
    assert one.params.keys() == two.params.keys() == {"m", "charge"}
    assert all(torch.equal(one.params[key], two.params[key]) for key in one.params)
    assert not torch.equal(one.z, other.z)


def test_settings_round_trip_and_refusals():
    system = Charged(n_particles=4, dim=3, softening=0.2, coulomb_constant=2.0, charges=(-1, 2), mass_range=(1, 3))
    rebuilt = Charged(**json.loads(json.dumps(system.settings())))
    assert rebuilt.settings() == system.settings()
    assert system.required_params() == ("m", "charge")
    for settings, message in [({"softening": -0.1}, "softening must be a non-negative finite number"),
                              ({"coulomb_constant": -1.0}, "coulomb_constant must be a positive"),
                              ({"charges": []}, "charges must be a non-empty list"),
                              ({"charges": ["a"]}, "charges must be a list of numbers"),
                              ({"mass_range": (2.0, 1.0)}, "mass_range must be \\(low, high\\) with 0 < low <= high"),
                              ({"mass_range": (1.0,)}, "mass_range must be 2 finite numbers")]:
        with pytest.raises(ValueError, match=message):
            Charged(**settings)


def test_timescale_sets_small_substep_counts_and_shrinks_with_softening():
    params = Charged().sample_params(100, torch.Generator().manual_seed(0))
    tau = Charged().timescale(params)
    # unit charges and masses: eps / sqrt((2 s)^2 + 2 k / (mu eps)) with s = 0.5, mu = 1/2
    torch.testing.assert_close(tau, torch.full((100,), 0.1 / math.sqrt(1 + 40), dtype=F64))
    assert (Charged(softening=0.05).timescale(params) < tau).all()


# -- registry, command line and files ---------------------------------------------------------------

def test_registry_and_cli_generate(tmp_path, capsys):
    assert get_system_class("charged") is Charged
    out = tmp_path / "charged.npz"
    code, _, err = run_cli(["generate", "--system", "charged", "--dim", "3", "--n-systems", "3", "--steps", "4",
                            "--seed", "1", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    data = load_trajectories(out)
    assert data.z.shape == (3, 5, 2, 5, 3) and data.params["charge"].shape == (3, 5)
    assert data.meta["system"] == "charged" and data.meta["system_settings"]["dim"] == 3
    assert isinstance(data.system(), Charged)


def _write_raw(path, charge_shape):
    rng = np.random.default_rng(0)
    meta = {"schema_version": 1, "system": "charged", "system_settings": {"n_particles": 5, "dim": 2}, "dt": 0.01}
    np.savez(path, t=np.arange(3) * 0.01, z=rng.normal(size=(2, 3, 2, 5, 2)), m=np.ones((2, 5)),
             charge=np.ones(charge_shape), meta=np.array(json.dumps(meta)))


def test_a_charge_array_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    _write_raw(path, (2, 6))
    with pytest.raises(TrajectoryFileError) as error:
        load_trajectories(path)
    assert "parameter 'charge' has shape (2, 6); expected (2,) or (2, 5)" in str(error.value)
    assert "\n" not in str(error.value)
    _write_raw(path, (2,))  # a shape files may hold, but not one charge per particle
    with pytest.raises(ValueError) as error:
        load_trajectories(path).system()
    assert str(error.value) == (f"{path} has charges 'charge' of shape (2,); charged needs one charge per particle, "
                                "the shape (2, 5) of the masses 'm'")
