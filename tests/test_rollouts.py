"""hamnet.rollouts: shapes, chunking, dtype, memory, non-finite states, and conservation in practice.

Noether in practice: symmetric learned Hamiltonians rolled out with a symplectic integrator keep
the momenta of their symmetries to round-off; energy errors stay bounded with leapfrog and drift
with rk4 at the same step. All float64.
"""

import functools

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

import problems
from problems import cast, two_body_orbit

from hamnet.diagnostics import conservation_report, energy
from hamnet.dynamics import HamiltonianField
from hamnet.rollouts import DIVERGENCE_FACTOR, RolloutError, rollout, rollout_systems

F64 = torch.float64
N_PARTICLES = 4
springs_batch = functools.partial(problems.springs_batch, n_systems=2, n_particles=N_PARTICLES)
# float32, as built for training; width 16, otherwise problems.model_config
small_model = functools.partial(problems.small_model, seed=7, dtype=torch.float32, width=16)


def strong(model, force_scale=2e4):
    """The model with its output layer scaled, so that a random network's forces are O(1) (the
    default initialisation gives forces of order 1e-4, hardly different from free flight)."""
    last = [layer for layer in model.modules() if isinstance(layer, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(force_scale)
        last.bias.mul_(force_scale)
    return model


class Confined:
    """A learned Hamiltonian plus the true springs potential, in float64.

    A random network's potential does not confine: alone, particles fly apart into the region where
    it is nearly linear, and neither conservation nor its violation means much there. The springs
    keep the motion bound while the network adds O(1) forces; springs are invariant to rotations
    and translations, so the sum has exactly the network's symmetries.
    """

    def __init__(self, model, system):
        self.model, self.system = model.double(), system
        self.separable = model.separable

    def hamiltonian(self, z, params):
        return self.system.potential(z[:, 0], params) + (
            self.model.hamiltonian(z, params) if not self.separable
            else self.system.kinetic(z[:, 1], params) + self.model.potential(z[:, 0], params))

    def velocity(self, p, params):
        return self.system.velocity(p, params)

    def forces(self, q, params):
        return self.system.forces(q, params) + self.model.forces(q, params)


def momentum_changes(trajectory):
    """Largest changes of total linear and angular momentum over the rollout, relative to
    ``sum_i |p_i|`` and ``sum_i |q_i| |p_i|`` at the start (``hamnet.diagnostics``' measure)."""
    report = conservation_report(trajectory)
    return report["linear_momentum"].max().item(), report["angular_momentum"].max().item()


# -- the call itself ------------------------------------------------------------------------------

def test_rollout_matches_odeint_on_the_exact_grid(generator):
    system, params, z0 = springs_batch(generator)
    trajectory = rollout(system, z0, params, steps=30, dt=0.01, method="leapfrog")
    assert trajectory.shape == (2, 31, 2, N_PARTICLES, 2)
    assert trajectory.dtype == F64 and not trajectory.requires_grad
    t = torch.arange(31, dtype=F64) * 0.01
    expected = odeint(HamiltonianField(system, params), z0, t, method="leapfrog").transpose(0, 1)
    torch.testing.assert_close(trajectory, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("method", ["leapfrog", "rk4", "implicit_midpoint"])
def test_chunks_do_not_change_the_result(method, generator):
    system, params, z0 = springs_batch(generator)
    whole = rollout(system, z0, params, steps=25, dt=0.01, method=method)
    chunked = rollout(system, z0, params, steps=25, dt=0.01, method=method, chunk_steps=4)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-13)


def test_zero_steps_and_bad_arguments(generator):
    system, params, z0 = springs_batch(generator)
    assert torch.equal(rollout(system, z0, params, steps=0, dt=0.01)[:, 0], z0)
    for bad in ({"steps": -1}, {"steps": 2.5}, {"dt": 0.0}, {"chunk_steps": 0}):
        arguments = {"steps": 3, "dt": 0.01, **bad}
        with pytest.raises(ValueError):
            rollout(system, z0, params, **arguments)
    with pytest.raises(ValueError, match=r"\(B, 2, N, D\)"):
        rollout(system, z0[0], params, steps=3, dt=0.01)


def test_model_is_cast_without_touching_the_callers_copy(generator):
    _, params, z0 = springs_batch(generator)
    model = small_model("hlieconv")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trajectory = rollout(model, z0.float(), cast(params, torch.float32), steps=5, dt=0.01)
    assert trajectory.dtype == F64
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name, method", [("hlieconv", "leapfrog"), ("fc-hnn", "implicit_midpoint"),
                                          ("hogn", "rk4"), ("fc-node", "rk4")])
def test_every_model_rolls_out_without_keeping_graphs(name, method, generator):
    _, params, z0 = springs_batch(generator)
    model = small_model(name).double()
    trajectory = rollout(model, z0, params, steps=20, dt=0.01, method=method)
    assert torch.isfinite(trajectory).all() and not trajectory.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_separable_only_method_on_a_non_separable_model_is_refused(generator):
    _, params, z0 = springs_batch(generator)
    with pytest.raises(ValueError, match="only for separable H.*FCHNN"):
        rollout(small_model("fc-hnn"), z0, params, steps=5, dt=0.01, method="leapfrog")


def test_non_finite_state_names_the_step_and_the_system(generator):
    system, params, z0 = springs_batch(generator, n_systems=3)
    params["k"][1] *= 40.0  # system 1 is far too stiff for dt: leapfrog goes unstable
    with pytest.raises(RolloutError, match=r"non-finite at step \d+ in system 1 \(1 of 3") as caught:
        rollout(system, z0, params, steps=5000, dt=0.05, chunk_steps=64, keep_diverged=True)
    error = caught.value
    assert error.systems == [1]
    assert error.trajectory.shape[1] == error.step + 1
    assert torch.isfinite(error.trajectory[:, : error.step]).all()
    assert not torch.isfinite(error.trajectory[1, error.step]).all()


def test_a_state_growing_past_the_bound_is_reported_as_diverged_before_it_overflows(generator):
    system, params, z0 = springs_batch(generator, n_systems=3)
    params["k"][1] *= 40.0
    with pytest.raises(RolloutError, match=r"grew past 1e\+06 times its initial size \(diverged\) at step \d+ "
                       r"in system 1 \(1 of 3") as caught:
        rollout(system, z0, params, steps=5000, dt=0.05, chunk_steps=64)
    error = caught.value
    assert error.systems == [1] and torch.isfinite(error.trajectory).all()
    size = error.trajectory.flatten(2).abs().amax(-1)  # (B, steps + 1)
    assert size[1, -1] > DIVERGENCE_FACTOR * size[1, 0] and (size[1, :-1] <= DIVERGENCE_FACTOR * size[1, 0]).all()
    assert (size[[0, 2]] < 10 * size[[0, 2], :1]).all()  # the healthy systems stayed near their size


def test_a_diverging_learned_model_is_reported_as_a_rollout_error(generator):
    # the LieConv network refuses non-finite input; HLieConv must hand back a non-finite energy
    # instead, so that the rollout, not the network, reports where things went wrong
    system, params, z0 = springs_batch(generator)
    params["k"] *= 40.0
    with pytest.raises(RolloutError, match="non-finite at step"):
        rollout(Confined(small_model("hlieconv", group="SO2"), system), z0, params, steps=2000, dt=0.05,
                keep_diverged=True)


# -- conservation in practice ---------------------------------------------------------------------

def test_so2_hlieconv_with_leapfrog_keeps_both_momenta_for_10000_steps(generator):
    system, params, z0 = springs_batch(generator)
    model = Confined(strong(small_model("hlieconv", group="SO2")), system)
    linear, angular = momentum_changes(rollout(model, z0, params, steps=10_000, dt=0.01, method="leapfrog"))
    assert linear < 1e-12 and angular < 1e-12


def test_so2_hlieconv_with_rk4_loses_angular_momentum(generator):
    system, params, z0 = springs_batch(generator)
    model = Confined(strong(small_model("hlieconv", group="SO2")), system)
    linear, angular = momentum_changes(rollout(model, z0, params, steps=1_000, dt=0.01, method="rk4"))
    assert linear < 1e-12  # rk4, like every Runge-Kutta method, keeps linear invariants
    assert angular > 1e-5


@pytest.mark.slow
def test_t2_hlieconv_keeps_linear_but_not_angular_momentum(generator):
    system, params, z0 = springs_batch(generator)
    model = Confined(strong(small_model("hlieconv", group="T2")), system)
    linear, angular = momentum_changes(rollout(model, z0, params, steps=10_000, dt=0.01, method="leapfrog"))
    assert linear < 1e-12
    assert angular > 1e-2


def test_fc_hnn_keeps_neither_momentum_even_with_a_symplectic_integrator(generator):
    system, params, z0 = springs_batch(generator)
    model = Confined(strong(small_model("fc-hnn"), force_scale=10.0), system)
    linear, angular = momentum_changes(rollout(model, z0, params, steps=300, dt=0.01, method="implicit_midpoint"))
    assert linear > 1e-3 and angular > 1e-3


def energy_error_halves(system, params, z0, method, steps=10_000, dt=0.01):
    trajectory = rollout(system, z0, params, steps=steps, dt=dt, method=method)
    h = energy(system.hamiltonian, trajectory, params)
    error = ((h - h[:, :1]) / h[:, :1].abs()).abs()
    half = error.shape[1] // 2
    return error[:, :half].amax(1), error[:, half:].amax(1)


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["springs", "two-body orbit"])
def test_energy_is_bounded_with_leapfrog_and_drifts_with_rk4(problem, generator):
    system, params, z0 = springs_batch(generator, n_systems=3, n_particles=6) if problem == "springs" else two_body_orbit()
    first, second = energy_error_halves(system, params, z0, "leapfrog")
    assert (second <= 1.1 * first).all(), "leapfrog energy error must not grow"
    first, second = energy_error_halves(system, params, z0, "rk4")
    assert (second >= 1.8 * first).all(), "rk4 energy error drifts, about linearly in time"


# -- many systems, some diverge -------------------------------------------------------------------

def test_a_diverging_system_leaves_the_others_as_they_would_be_alone(generator):
    system, params, z0 = springs_batch(generator, n_systems=4)
    params["k"][1] *= 40.0  # too stiff for dt: leapfrog goes unstable in system 1 only
    model = Confined(small_model("hlieconv", group="SO2"), system)
    result = rollout_systems(model, z0, params, steps=600, dt=0.05, chunk_steps=64)
    assert result.diverged == [1] and int(result.diverged_at[1]) > 0 and (result.diverged_at[[0, 2, 3]] < 0).all()
    others = torch.tensor([0, 2, 3])
    alone = rollout(model, z0[others], {k: v[others] for k, v in params.items()}, steps=600, dt=0.05, chunk_steps=64)
    assert torch.allclose(result.z[others], alone, rtol=1e-12, atol=1e-12)
    step = int(result.diverged_at[1])  # held at the last healthy state from the divergence on, all finite
    assert torch.isfinite(result.z).all() and (result.z[1, step:] == result.z[1, step - 1]).all()


def test_a_rollout_file_delivers_the_others_and_names_the_diverged_system(generator):
    from hamnet.io import Trajectories
    from hamnet.rollouts import predicted_trajectories

    system, params, z0 = springs_batch(generator, n_systems=3)
    params["k"][2] *= 40.0
    data = Trajectories(torch.arange(2, dtype=F64) * 0.05, torch.stack([z0, z0], 1), params,
                        {"system": "springs", "system_settings": system.settings(), "dt": 0.05})
    network = small_model("hlieconv", group="SO2")
    predicted = predicted_trajectories(Confined(network, system), data, model_config=network.config.__dict__,
                                       steps=600)
    assert [entry["system"] for entry in predicted.meta["diverged"]] == [2]
    assert predicted.meta["diverged"][0]["step"] > 0 and torch.isfinite(predicted.z).all()
    with pytest.raises(RolloutError, match="every one of the 1 systems diverged"):
        predicted_trajectories(Confined(network, system), data.select(slice(2, 3)),
                               model_config=network.config.__dict__, steps=600)
