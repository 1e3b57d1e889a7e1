"""Conserved quantities as pure functions."""

import torch
from problems import rotation

from hamnet.diagnostics import angular_momentum, conservation_report, drift, energy, linear_momentum
from hamnet.systems import Springs


def test_angular_momentum_2d_is_z_component_of_3d(generator):
    z2 = torch.randn(5, 7, 2, 4, 2, generator=generator, dtype=torch.float64)
    z3 = torch.cat([z2, torch.zeros(5, 7, 2, 4, 1, dtype=torch.float64)], dim=-1)
    l3 = angular_momentum(z3)
    torch.testing.assert_close(angular_momentum(z2), l3[..., 2])
    assert l3[..., :2].abs().max() == 0


def test_momenta_are_invariant_or_equivariant_under_rotation(generator):
    z = torch.randn(3, 2, 5, 2, generator=generator, dtype=torch.float64)
    matrix = rotation(0.7)
    rotated = z @ matrix.T
    torch.testing.assert_close(angular_momentum(rotated), angular_momentum(z))
    torch.testing.assert_close(linear_momentum(rotated), linear_momentum(z) @ matrix.T)


def test_energy_along_trajectory_matches_per_state(generator):
    system = Springs(n_particles=3)
    params = system.sample_params(2, generator)
    z = torch.stack([system.sample_state(params, generator) for _ in range(4)], dim=1)
    h = energy(system.hamiltonian, z, params)
    assert h.shape == (2, 4)
    torch.testing.assert_close(h[:, 2], system.hamiltonian(z[:, 2], params))


def test_drift_and_report():
    values = torch.tensor([[1.0, 1.5, 0.5], [2.0, 2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(drift(values), torch.tensor([0.5, 0.0], dtype=torch.float64))
    z = torch.zeros(1, 3, 2, 2, 2, dtype=torch.float64)
    z[0, :, 1, 0, 0] = torch.tensor([1.0, 1.0, 1.5])  # momentum grows by 0.5 against scale 1
    report = conservation_report(z)
    assert report["linear_momentum"].item() == 0.5


def test_scores_give_each_systems_energy_change_in_its_place_and_none_where_it_diverged(generator):
    from hamnet.evaluation import score_rollout
    from hamnet.io import Trajectories
    from hamnet.rollouts import Rollout
    from hamnet.simulation import simulate

    system = Springs(n_particles=3)
    params = system.sample_params(4, generator)
    t, z, _ = simulate(system, system.sample_state(params, generator), params, steps=20, dt=0.01)
    truth = Trajectories(t, z, params, {"system": "springs", "system_config": {"n_particles": 3}, "dt": 0.01})
    rolled = z.clone()
    rolled[1, 10:, 1] *= 1.5  # system 1's momenta jump: its energy changes
    rolled[2, 5:] = rolled[2, 4]  # system 2 diverged at step 5 and is held
    scores = score_rollout(Rollout(rolled, torch.tensor([-1, -1, 5, -1])), truth, system=system)
    energy = scores["drift"]["energy"]
    expected = conservation_report(rolled, system.hamiltonian, params)["energy"]
    assert energy["per_system"][2] is None
    torch.testing.assert_close(torch.tensor([energy["per_system"][i] for i in (0, 1, 3)], dtype=torch.float64),
                               expected[[0, 1, 3]])
    assert energy["max"] == energy["per_system"][1] > 0.1 > energy["per_system"][0]
