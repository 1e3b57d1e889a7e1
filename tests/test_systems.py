"""The physical systems: sampling conventions, forces, registry and user classes."""

import math
import textwrap

import pytest
import torch
from conftest import assert_close
from problems import sample_batch

from hamnet import systems
from hamnet.systems import LennardJones, NBody, Springs, get_system_class, make_system

ALL_SYSTEMS = [
    Springs(),
    Springs(n_particles=4, dim=3),
    NBody(family="central"),
    NBody(family="central", dim=3),
    NBody(family="cluster"),
    NBody(family="cluster", dim=3, n_particles=7),
    LennardJones(),
    LennardJones(n_particles=7, dim=3, softening=0.0),
]


@pytest.mark.parametrize("system", ALL_SYSTEMS, ids=repr)
def test_sampling_shapes_and_zero_momentum(system, generator):
    params, z = sample_batch(system, 50, generator)
    assert z.shape == (50, 2, system.n_particles, system.dim)
    assert z.dtype == params["m"].dtype == torch.float64
    total = z[:, 1].sum(1)
    assert total.abs().max() < 1e-14 * z[:, 1].abs().sum((1, 2)).max()


@pytest.mark.parametrize("system", ALL_SYSTEMS, ids=repr)
def test_forces_are_minus_gradient_of_potential(system, generator):
    params, z = sample_batch(system, 8, generator)
    q = z[:, 0]
    expected = systems.gradient_force(system.potential, q, params)
    assert_close(system.forces(q, params), expected)
    assert_close(system.force_function(params)(q), expected)


@pytest.mark.parametrize("system", ALL_SYSTEMS, ids=repr)
def test_sampling_is_seeded(system):
    def draw(seed):
        params, z = sample_batch(system, 5, torch.Generator().manual_seed(seed))
        return z, params

    (z1, p1), (z2, p2), (z3, _) = draw(0), draw(0), draw(1)
    assert torch.equal(z1, z2) and all(torch.equal(p1[k], p2[k]) for k in p1)
    assert not torch.equal(z1, z3)


def test_springs_potential_matches_pairwise_sum(generator):
    system = Springs(n_particles=5)
    params, z = sample_batch(system, 3, generator)
    q = z[:, 0]
    k = params["k"]
    pairwise = sum(
        k[:, i] * k[:, j] * (q[:, i] - q[:, j]).square().sum(-1)
        for i in range(5) for j in range(i + 1, 5)
    )
    torch.testing.assert_close(system.potential(q, params), pairwise)


def test_springs_parameter_ranges(generator):
    params = Springs().sample_params(2000, generator)
    assert 0.1 <= params["m"].min() and params["m"].max() <= 3.1
    assert 0.0 <= params["k"].min() and params["k"].max() <= 5.0


def test_springs_timescale_is_fastest_mode(generator):
    # A two-particle spring has one mode; its frequency is known in closed form.
    system = Springs(n_particles=2)
    params = system.sample_params(4, generator)
    m, k = params["m"], params["k"]
    expected = torch.tensor([
        1 / systems.springs.two_particle_frequency(*m[b].tolist(), *k[b].tolist()) for b in range(4)
    ], dtype=torch.float64)
    torch.testing.assert_close(system.timescale(params), expected)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("family", ["central", "cluster"])
def test_nbody_centre_of_mass_frame(family, dim, generator):
    system = NBody(family=family, dim=dim)
    params, z = sample_batch(system, 20, generator)
    m = params["m"].unsqueeze(-1)
    assert (m * z[:, 0]).sum(1).abs().max() < 1e-14
    assert z[:, 1].sum(1).abs().max() < 1e-15


@pytest.mark.parametrize("dim", [2, 3])
def test_nbody_cluster_is_bound(dim, generator):
    system = NBody(family="cluster", dim=dim)
    params, z = sample_batch(system, 100, generator)
    energy = system.hamiltonian(z, params)
    assert (energy < 0).all()


def test_nbody_central_orbits_are_near_circular(generator):
    # A light body on a circular orbit has kinetic energy close to half its binding energy.
    system = NBody(family="central", n_particles=2)
    params, z = sample_batch(system, 200, generator)
    kinetic = system.kinetic(z[:, 1], params)
    virial = 2 * kinetic / system.potential(z[:, 0], params).abs()
    assert (virial - 1).abs().median() < 0.1


def test_nbody_softening_is_in_potential_and_force():
    system = NBody(n_particles=2, softening=0.5)
    params = {"m": torch.tensor([[1.0, 2.0]], dtype=torch.float64)}
    q = torch.zeros(1, 2, 2, dtype=torch.float64)
    q[0, 1, 0] = 0.3
    assert system.potential(q, params).item() == pytest.approx(-2.0 / math.sqrt(0.09 + 0.25))
    force = system.forces(q, params)[0, 0, 0].item()
    assert force == pytest.approx(2.0 * 0.3 / (0.09 + 0.25) ** 1.5)


@pytest.mark.parametrize("settings, message", [
    ({"n_particles": 1}, "n_particles must be an integer >= 2"),
    ({"dim": 4}, "dim must be 2 or 3"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        Springs(**settings)


def test_check_params_names_what_is_missing():
    ones = torch.ones(2, 6, dtype=torch.float64)
    Springs().check_params({"m": ones, "k": ones}, "data.npz")
    with pytest.raises(ValueError, match=r"^data\.npz lacks the parameter 'k' that springs needs$"):
        Springs().check_params({"m": ones}, "data.npz")
    with pytest.raises(ValueError, match=r"^data\.npz lacks the parameters 'm', 'k' that springs needs$"):
        Springs().check_params({}, "data.npz")
    assert NBody(family="cluster").required_params() == ("m",)


def test_registry():
    assert get_system_class("springs") is Springs
    assert isinstance(make_system("nbody", dim=3, family="cluster"), NBody)
    with pytest.raises(ValueError, match="unknown system 'spring'; choose one of charged, lennard-jones, nbody, springs"):
        get_system_class("spring")


USER_SYSTEM = textwrap.dedent('''
    import torch
    from hamnet.systems import HamiltonianSystem

    class Trap(HamiltonianSystem):
        """Particles in a shared harmonic trap, coupled by nothing else."""
        name = "trap"
        symmetry = "SO3"

        def sample_params(self, n_systems, generator):
            return {"m": torch.ones(n_systems, self.n_particles, dtype=torch.float64)}

        def sample_state(self, params, generator):
            shape = (params["m"].shape[0], 2, self.n_particles, self.dim)
            return torch.randn(shape, generator=generator, dtype=torch.float64)

        def potential(self, q, params):
            return 0.5 * q.square().sum((-1, -2))

        def timescale(self, params):
            return torch.ones(params["m"].shape[0], dtype=torch.float64)
''')


def test_user_system_from_file(tmp_path, generator):
    path = tmp_path / "trap.py"
    path.write_text(USER_SYSTEM)
    system = make_system(f"{path}:Trap", n_particles=3)
    params, z = sample_batch(system, 2, generator)
    assert system.hamiltonian(z, params).shape == (2,)


@pytest.mark.parametrize("content, spec_suffix, message", [
    (None, ":Trap", "does not exist"),
    ("def broken(:\n", ":Trap", "failed to import: SyntaxError"),
    (USER_SYSTEM, ":Missing", "has no class 'Missing'"),
    ("class Trap:\n    pass\n", ":Trap", "must be a concrete subclass"),
])
def test_user_system_errors(tmp_path, content, spec_suffix, message):
    path = tmp_path / "user.py"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        get_system_class(f"{path}{spec_suffix}")
