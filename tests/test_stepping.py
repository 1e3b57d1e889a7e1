"""hamnet.stepping: the fixed-grid loop gives odeint's states bit for bit, reads nothing on the host per
step, and rollouts through it (sub-steps, chunks, divergence) are those of the odeint path."""

import functools

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torchdiffeq import odeint

import problems

from hamnet.dynamics import HamiltonianField
from hamnet.integrate import INTEGRATORS, solver_key
from hamnet.rollouts import DIVERGENCE_FACTOR, rollout, rollout_systems
from hamnet.stepping import integrate_every, integrate_fixed_grid, steps_on_the_grid

F64 = torch.float64
springs_batch = functools.partial(problems.springs_batch, n_particles=4)
FIXED_STEP = sorted(name for name in INTEGRATORS.names() if INTEGRATORS.get(name).fixed_step)
HOST_READS = ("aten::_local_scalar_dense", "aten::is_nonzero")


def old_rollout(model, z0, params, steps, dt, method, chunk_steps, substeps=1):
    """What hamnet.rollout computed before the loop: odeint over each chunk's fine grid, every
    ``substeps``-th state kept (no system diverges here)."""
    field, states, done = HamiltonianField(model, params), [z0], 0
    while done < steps:
        n = min(chunk_steps, steps - done)
        t = torch.arange(n * substeps + 1, dtype=z0.dtype) * (dt / substeps)
        states += list(odeint(field, states[-1], t, method=solver_key(method))[::substeps][1:])
        done += n
    return torch.stack(states, 1)


def host_reads(function) -> int:
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as trace:
        function()
    return sum(event.count for event in trace.key_averages() if event.key in HOST_READS)


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("method", FIXED_STEP)
def test_the_loop_gives_odeints_states_bit_for_bit(method, dtype, every, generator):
    system, params, z0 = springs_batch(generator)
    params, z0 = problems.cast(params, dtype), z0.to(dtype)
    field = HamiltonianField(system, params)
    t = torch.arange(6 * every + 1, dtype=dtype) * (0.03 / every)
    expected = odeint(field, z0, t, method=solver_key(method))[::every]
    states = integrate_fixed_grid(field, z0, t, solver_key(method), every=every)
    assert states.shape == (7, *z0.shape) and torch.equal(states, expected)


@pytest.mark.parametrize("name, method", [("hlieconv", "leapfrog"), ("hlieconv", "yoshida4"),
                                          ("fc-hnn", "rk4"), ("fc-node", "rk4")])
def test_learned_fields_step_bit_for_bit(name, method, generator):
    model = problems.small_model(name, group="SO2") if name == "hlieconv" else problems.small_model(name)
    _, params, z0 = springs_batch(generator)
    field = HamiltonianField(model, params)
    t = torch.arange(9, dtype=F64) * 0.01
    with torch.no_grad():
        assert torch.equal(integrate_fixed_grid(field, z0, t, solver_key(method)),
                           odeint(field, z0, t, method=solver_key(method)))


def test_no_tensor_is_read_on_the_host_inside_the_loop(generator):
    system, params, z0 = springs_batch(generator)
    field = HamiltonianField(system, params)
    grid = functools.partial(torch.arange, dtype=F64)
    loop = [host_reads(lambda: integrate_fixed_grid(field, z0, grid(steps + 1) * 0.01, "leapfrog"))
            for steps in (5, 45)]
    through_odeint = [host_reads(lambda: odeint(field, z0, grid(steps + 1) * 0.01, method="leapfrog"))
                      for steps in (5, 45)]
    assert loop[0] == loop[1]  # the reads of the set-up only
    assert through_odeint[1] - through_odeint[0] >= 40  # odeint's loop asks after every step


def test_options_that_move_the_grid_go_to_odeint(generator):
    system, params, z0 = springs_batch(generator)
    field = HamiltonianField(system, params)
    t = torch.arange(5, dtype=F64) * 0.02
    assert steps_on_the_grid("leapfrog", None) and steps_on_the_grid("rk4", {})
    assert steps_on_the_grid("implicit_midpoint", {"max_iters": 50})
    assert not steps_on_the_grid("dopri5", None) and not steps_on_the_grid("no-such-solver", None)
    for options in ({"step_size": 0.005}, {"interp": "cubic"}, {"perturb": True}):
        assert not steps_on_the_grid("rk4", options)
        with pytest.raises(ValueError, match="does not step on the output grid; use odeint"):
            integrate_fixed_grid(field, z0, t, "rk4", options)
        assert torch.equal(integrate_every(field, z0, t, "rk4", options), odeint(field, z0, t, method="rk4",
                                                                                 options=options))
    with pytest.raises(ValueError, match="not a whole number of 3-step outputs"):
        integrate_fixed_grid(field, z0, t, "leapfrog", every=3)


@pytest.mark.parametrize("substeps", [1, 3])
def test_rollouts_are_the_odeint_paths_bit_for_bit(substeps, generator):
    _, params, z0 = springs_batch(generator)
    model = problems.small_model("hlieconv", group="SO2")
    expected = old_rollout(model, z0, params, 23, 0.01, "leapfrog", chunk_steps=10, substeps=substeps)
    assert torch.equal(rollout(model, z0, params, 23, 0.01, chunk_steps=10, substeps=substeps), expected)


@pytest.mark.parametrize("substeps", [1, 2])
def test_divergence_is_reported_at_the_step_of_the_odeint_path(substeps, generator):
    system, params, z0 = springs_batch(generator)
    params["k"][1] *= 40.0  # far too stiff for dt: leapfrog goes unstable
    result = rollout_systems(system, z0, params, 400, 0.1, chunk_steps=64, substeps=substeps)
    reference = old_rollout(system, z0, params, 400, 0.1, "leapfrog", chunk_steps=64, substeps=substeps)[1]
    size = reference.flatten(1).abs().amax(1)
    first = int(((size > DIVERGENCE_FACTOR * size[0]) | size.isnan()).int().argmax())
    assert first > 0 and result.diverged == [1] and int(result.diverged_at[1]) == first
    assert result.diverged_at[[0, 2]].tolist() == [-1, -1]
    assert torch.equal(result.z[1, :first], reference[:first])
