"""The training recipe for frame data: sub-steps, warm-up, clipping, selection on a rollout metric."""

import json
import math

import pytest
import torch

from hamnet.checkpoint import load_checkpoint, model_from_checkpoint
from hamnet.cli import main
from hamnet.data import SUBSTEP_FRACTION, Windows, split_systems, suggest_substeps
from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.loss import WindowLoss, particle_weights
from hamnet.models import ModelConfig
from hamnet.optimisation import learning_rate_factor
from hamnet.rollouts import rollout, rollout_systems
from hamnet.simulation import generate, simulate
from hamnet.systems import Springs
from hamnet.optimisation import TrainingStep
from hamnet.training import TrainConfig, train
from problems import jump_at

TINY = ModelConfig(name="hlieconv", group="T2", width=8, depth=1, kernel_width=8, kernel_channels=4, n_particles=4,
                   feature_keys=("m", "k"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Springs stored every 0.1 time units (frames far apart, as the peers' N-body sets store them)."""
    path = tmp_path_factory.mktemp("frames") / "frames.npz"
    save_trajectories(path, generate(Springs(n_particles=4), n_systems=20, steps=10, dt=0.1, seed=3))
    return path


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(model=TINY, epochs=3, batch_size=16, max_windows=48, validation_windows=16,
                                 validation=0.2, test=0.0), **changes})


def test_window_loss_converges_at_second_order_in_the_substep(frames):
    """The true Hamiltonian through leapfrog with K sub-steps misses accurate frames 0.1 apart by O((0.1 / K)^2):
    doubling K quarters the position error."""
    data = load_trajectories(frames)
    z = data.z[:6, :4].double()
    params = {k: v[:6].double() for k, v in data.params.items()}
    errors = [math.sqrt(float(WindowLoss(Springs(n_particles=4), 0.1, "leapfrog", k)(z, params))) for k in (4, 8, 16)]
    for coarse, fine in zip(errors, errors[1:]):
        assert 3.6 < coarse / fine < 4.4, errors


def test_rollout_substeps_equal_the_fine_rollout_every_kth_state(frames):
    data = load_trajectories(frames)
    z0, params = data.z[:3, 0].double(), {k: v[:3].double() for k, v in data.params.items()}
    system = Springs(n_particles=4)
    coarse = rollout(system, z0, params, 6, 0.1, substeps=4)
    fine = rollout(system, z0, params, 24, 0.025)
    torch.testing.assert_close(coarse, fine[:, ::4], rtol=0, atol=1e-13)
    healthy = rollout_systems(system, z0, params, 6, 0.1, substeps=4)
    assert torch.equal(healthy.z, coarse) and bool((healthy.diverged_at < 0).all())


def test_an_adaptive_rollout_with_substeps_holds_one_chunk_of_fine_states(frames, monkeypatch):
    """odeint keeps every state of its grid: with K sub-steps a chunk is cut to chunk_steps / K output steps,
    so its grid holds at most chunk_steps + 1 states, and the result is the same as in one long chunk."""
    import hamnet.stepping as stepping

    data = load_trajectories(frames)
    z0, params = data.z[:2, 0].double(), {k: v[:2].double() for k, v in data.params.items()}
    grids = []
    odeint = stepping.odeint
    monkeypatch.setattr(stepping, "odeint", lambda f, y, t, **kw: grids.append(len(t)) or odeint(f, y, t, **kw))
    system = Springs(n_particles=4)
    chunked = rollout(system, z0, params, 12, 0.1, "dopri5", substeps=5, chunk_steps=10)
    assert max(grids) <= 11 and sum(grid - 1 for grid in grids) == 12 * 5
    whole = rollout(system, z0, params, 12, 0.1, "dopri5", substeps=5, chunk_steps=60)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)  # dopri5 to its tolerance on either grid


def two_bodies(distance: float, speed: float, dt: float) -> Trajectories:
    """Two unit masses ``distance`` apart closing at ``speed``, in every one of 3 stored states."""
    z = torch.zeros(2, 3, 2, 2, 2, dtype=torch.float64)
    z[:, :, 0, 1, 0] = distance
    z[:, :, 1, 1, 0] = -speed
    return Trajectories(torch.arange(3) * dt, z, {"m": torch.ones(2, 2, dtype=torch.float64)}, {"dt": dt})


def test_suggested_substeps_resolve_the_closest_approaches():
    # approach time r / |dv| = 1: a sub-step of at most a quarter of it
    assert suggest_substeps(two_bodies(1.0, 1.0, 0.6)) == math.ceil(0.6 / SUBSTEP_FRACTION) == 3
    assert suggest_substeps(two_bodies(1.0, 3.0, 0.6)) == 8  # three times faster: 7.2 rounded up
    assert suggest_substeps(two_bodies(1.0, 0.0, 0.6)) == 1  # nothing moves
    assert suggest_substeps(two_bodies(1.0, 1.0, 0.001)) == 1  # states already close in time


def test_warmup_rises_linearly_then_decays_by_a_cosine():
    total, warm = 20, 5
    factors = [learning_rate_factor(step, total, warm) for step in range(total + 1)]
    assert factors[:warm] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[warm] == 1.0 and factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[warm:], factors[warm + 1:]))
    step = TrainingStep(tiny(dtype="float64", warmup=0.25, lr=1e-2), 0.1, total)
    data = generate(Springs(n_particles=4), n_systems=4, steps=4, dt=0.1, seed=0)
    z, params = data.z[:, :3].double(), {k: v.double() for k, v in data.params.items()}
    seen = []
    for _ in range(total):
        seen.append(step.optimizer.param_groups[0]["lr"])
        step(z, params, scale=1.0)
    assert seen == pytest.approx([1e-2 * f for f in factors[:total]])


def test_clipping_bounds_the_gradient_norm_of_every_step():
    data = generate(Springs(n_particles=4), n_systems=4, steps=4, dt=0.1, seed=0)
    z, params = data.z[:, :3].double(), {k: v.double() for k, v in data.params.items()}
    for clip in (None, 1e-4):
        step = TrainingStep(tiny(dtype="float64", clip_grad=clip), 0.1, 10)
        step(z, params, scale=1.0)
        norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in step.model.parameters()
                                                           if p.grad is not None])))
        if clip is None:
            assert norm > 1e-3  # the unclipped gradient is far larger than the clip below
        else:
            assert norm <= clip * (1 + 1e-9)


def test_selection_on_the_rollout_keeps_the_epoch_with_the_lowest_rollout_error(frames, tmp_path):
    train(tiny(select="rollout", select_steps=6, epochs=4, lr=3e-2), frames, tmp_path / "run")
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rolled = [e["validation_rollout_mse"] for e in epochs]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 1 + rolled.index(min(rolled))
    # the figure is the position MSE of the validation systems rolled out 6 steps from each start
    model, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    data = load_trajectories(frames)
    validation = split_systems(data.n_systems, 0.2, 0.0, 0).validation
    windows = Windows(data, 7, validation, 16, seed=0)
    z, params = windows[torch.arange(len(windows))]
    predicted = rollout(model, z[:, 0], params, 6, 0.1, dtype=torch.float32)
    expected = float((predicted[:, 1:, 0] - z[:, 1:, 0]).square().mean())
    assert rolled[-1] == pytest.approx(expected, rel=1e-4)


def test_auto_substeps_are_chosen_from_the_data_recorded_and_kept_by_a_second_phase(frames, tmp_path):
    data = load_trajectories(frames)
    small = dict(max_windows=16, validation_windows=4)
    train(tiny(substeps="auto", epochs=2, **small), frames, tmp_path / "first", stop_after_epochs=1)
    training = split_systems(data.n_systems, 0.2, 0.0, 0).train
    windows = Windows(data, 5, training, 16, seed=0)
    chosen = suggest_substeps(data, windows.system_index.unique())
    assert chosen > 1  # frames 0.1 apart of these springs need sub-steps
    recorded = json.loads((tmp_path / "first" / "config.json").read_text())["train_config"]["substeps"]
    assert recorded == chosen == load_checkpoint(tmp_path / "first" / "best.pt")["train_config"]["substeps"]
    train(tiny(substeps="auto", epochs=2, **small), frames, tmp_path / "first", resume=True)  # "auto" resumes the same run
    # a second phase starting from it keeps its sub-steps, whatever its own data would suggest
    train(tiny(substeps="auto", epochs=1, chunk=3, init_from=str(tmp_path / "first" / "best.pt"), **small),
          frames, tmp_path / "second")
    assert load_checkpoint(tmp_path / "second" / "best.pt")["train_config"]["substeps"] == chosen


def test_rollout_and_evaluate_use_the_substeps_the_model_was_trained_with(frames, tmp_path):
    train(tiny(substeps=3, epochs=1), frames, tmp_path / "run")
    checkpoint = tmp_path / "run" / "best.pt"
    model, _ = model_from_checkpoint(checkpoint)
    data = load_trajectories(frames)
    out = tmp_path / "r.npz"
    assert main(["rollout", "--checkpoint", str(checkpoint), "--data", str(frames), "--out", str(out), "--steps", "4",
                 "--n-systems", "2", "--threads", "1"]) == 0
    rolled = load_trajectories(out)
    expected = rollout(model, data.z[:2, 0], {k: v[:2] for k, v in data.params.items()}, 4, 0.1, substeps=3)
    assert rolled.meta["substeps"] == 3 and torch.equal(rolled.z, expected)
    assert main(["rollout", "--checkpoint", str(checkpoint), "--data", str(frames), "--out", str(tmp_path / "one.npz"),
                 "--steps", "4", "--n-systems", "2", "--substeps", "1", "--threads", "1"]) == 0
    assert load_trajectories(tmp_path / "one.npz").meta["substeps"] == 1
    metrics = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(frames), "--out", str(metrics),
                 "--threads", "1"]) == 0
    assert json.loads(metrics.read_text())["substeps"] == 3
    # in Python too: a model read from its checkpoint rolls out with the sub-steps it was trained with
    z0, params = data.z[:2, 0], {k: v[:2] for k, v in data.params.items()}
    assert model.trained_substeps == 3 and torch.equal(rollout(model, z0, params, 4, 0.1), expected)
    assert not torch.equal(rollout(model, z0, params, 4, 0.1, substeps=1), expected)


def test_a_run_with_warmup_clipping_and_rollout_selection_resumes_bitwise(frames, tmp_path):
    config = tiny(substeps=2, warmup=0.3, clip_grad=0.5, select="rollout", select_steps=4, epochs=3)
    train(config, frames, tmp_path / "whole")
    train(config, frames, tmp_path / "parts", stop_after_epochs=1)
    train(config, frames, tmp_path / "parts", resume=True)
    for name in ("last.pt", "best.pt"):
        whole, parts = load_checkpoint(tmp_path / "whole" / name), load_checkpoint(tmp_path / "parts" / name)
        assert whole["epoch"] == parts["epoch"]
        assert all(torch.equal(whole["model"][key], parts["model"][key]) for key in whole["model"])


@pytest.mark.parametrize("draw", [{"batch_size": 24}, {"batch_size": 12, "epoch_windows": 24}])
@pytest.mark.parametrize("how", ["far", "nan"])
def test_rollback_undoes_an_epoch_that_jumps_and_halves_the_learning_rate(frames, tmp_path, monkeypatch, how, draw):
    """With ``rollback``, an epoch whose validation MSE jumps past r times the lowest (or stops being finite)
    ends with the previous epoch's weights and Adam state and half the learning rate; the run goes on,
    best.pt keeps the good epoch, and the next epochs train at half the rate an undisturbed run has (also
    where each epoch draws 24 of the 48 windows: the schedule counts an epoch's steps, undone or not)."""
    config = tiny(epochs=4, rollback=10.0, warmup=0.3, select="rollout", select_steps=4, **draw)  # 2 batches
    train(config, frames, tmp_path / "calm")
    monkeypatch.setattr(torch.optim.Adam, "step", jump_at(3, how))
    train(config, frames, tmp_path / "whole")  # the same jump, in one uninterrupted run
    monkeypatch.undo()
    train(config, frames, tmp_path / "run", stop_after_epochs=1)
    first = load_checkpoint(tmp_path / "run" / "last.pt")
    # epoch 2's first step jumps; after "nan" the second batch's loss is not finite, and no step is taken with it
    monkeypatch.setattr(torch.optim.Adam, "step", jump_at(1, how))
    train(config, frames, tmp_path / "run", resume=True, stop_after_epochs=1)
    undone = load_checkpoint(tmp_path / "run" / "last.pt")
    assert undone["epoch"] == 2 and load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 1
    assert all(torch.equal(undone["model"][key], first["model"][key]) for key in first["model"])
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in first["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for pair, state in zip(moments, undone["optimizer"]["state"].values())
               for a, b in zip(pair, (state["exp_avg"], state["exp_avg_sq"])))
    monkeypatch.undo()
    train(config, frames, tmp_path / "run", resume=True)
    calm, run = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                 for name in ("calm", "run"))
    assert [row.get("rolled_back", False) for row in run] == [False, True, False, False]
    assert [math.isnan(row["validation_rollout_mse"]) for row in run] == [False, True, False, False]
    jumped = run[1]["validation_mse"]
    assert (jumped > 10 * run[0]["validation_mse"]) if how == "far" else math.isnan(run[1]["train_loss"])
    assert [row["lr"] for row in run[1:]] == pytest.approx([row["lr"] / 2 for row in calm[1:]], rel=1e-12)
    assert run[3]["validation_mse"] < 10 * run[0]["validation_mse"]  # it trained on from the good weights
    whole, parts = (load_checkpoint(tmp_path / name / "last.pt") for name in ("whole", "run"))
    assert all(torch.equal(whole["model"][key], parts["model"][key]) for key in whole["model"])


@pytest.mark.parametrize("undo", [{"rollback": 10.0}, {"rollback_train": 3.0}])
def test_rollback_undoes_a_first_epoch_whose_validation_is_not_finite(frames, tmp_path, monkeypatch, undo):
    """No lowest figure yet: a non-finite validation MSE is undone all the same, back to the initial weights
    (with either factor: each turns undoing on)."""
    import hamnet.training as training
    real, calls = training.window_mse, [0]

    def first_infinite(*args, **kwargs):
        calls[0] += 1
        return {"mse": math.inf} if calls[0] == 1 else real(*args, **kwargs)
    monkeypatch.setattr(training, "window_mse", first_infinite)
    train(tiny(epochs=2, **undo), frames, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row.get("rolled_back", False) for row in rows] == [True, False] and math.isfinite(rows[1]["validation_mse"])


def test_rollback_train_undoes_an_epoch_whose_training_loss_jumps_without_validation(frames, tmp_path, monkeypatch):
    """``rollback_train`` watches the epoch's training loss, so it works with no validation systems at all; the
    lowest loss is checkpointed, so a run resumed just before the jump undoes it as the whole run does."""
    config = tiny(epochs=3, batch_size=24, validation=0.0, rollback_train=3.0)  # 2 batches an epoch
    train(config, frames, tmp_path / "calm")
    monkeypatch.setattr(torch.optim.Adam, "step", jump_at(3))
    train(config, frames, tmp_path / "whole")
    monkeypatch.undo()
    train(config, frames, tmp_path / "parts", stop_after_epochs=1)
    monkeypatch.setattr(torch.optim.Adam, "step", jump_at(1))
    train(config, frames, tmp_path / "parts", resume=True)
    calm, whole, parts = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                          for name in ("calm", "whole", "parts"))
    assert not any(row.get("rolled_back") for row in calm)
    assert [row.get("rolled_back", False) for row in parts] == [False, True, False]
    assert parts[1]["train_loss"] > 3 * parts[0]["train_loss"] and parts[2]["train_loss"] < 3 * parts[0]["train_loss"]
    assert [row["lr"] for row in parts[1:]] == pytest.approx([row["lr"] / 2 for row in calm[1:]], rel=1e-12)
    untimed = [json.dumps({k: v for k, v in row.items() if k not in ("seconds", "windows_per_second")})
               for row in whole + parts]  # as text: NaN (no validation) equals NaN
    assert untimed[:3] == untimed[3:]
    ends = [load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("whole", "parts")]
    assert all(torch.equal(ends[0][key], ends[1][key]) for key in ends[0])


def test_without_rollback_the_same_jump_is_kept(frames, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.optim.Adam, "step", jump_at(3, "far"))
    train(tiny(epochs=2, batch_size=24), frames, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["validation_mse"] > 10 * rows[0]["validation_mse"] and "rolled_back" not in rows[1]


@pytest.mark.parametrize("changes, flag", [({"substeps": 0}, "--substeps"), ({"substeps": "some"}, "--substeps"),
                                           ({"warmup": 1.0}, "--warmup"), ({"clip_grad": 0.0}, "--clip-grad"),
                                           ({"select": "best"}, "--select"), ({"select_steps": 4}, "--select-steps"),
                                           ({"weight_floor": 0.0}, "--weight-floor"),
                                           ({"weight_floor": 1.5}, "--weight-floor"),
                                           ({"rollback": 1.0}, "--rollback"), ({"rollback": math.inf}, "--rollback"),
                                           ({"rollback": 10.0, "validation": 0.0}, "--rollback"),
                                           ({"rollback_train": 1.0}, "--rollback-train"),
                                           ({"rollback_train": math.nan}, "--rollback-train")])
def test_impossible_recipe_settings_are_refused_naming_the_flag(changes, flag):
    with pytest.raises(ValueError, match=flag):
        tiny(**changes)


def spring_windows(n_systems: int = 3, steps: int = 4, dt: float = 1e-3, free: bool = True):
    """float64 windows of the true spring motion ``(B, steps + 1, 2, 4, 2)``; particle 0 feels no force when
    ``free`` (its ``k`` is 0)."""
    system, generator = Springs(n_particles=4), torch.Generator().manual_seed(0)
    params = system.sample_params(n_systems, generator)
    if free:
        params["k"][:, 0] = 0.0
    _, z, _ = simulate(system, system.sample_state(params, generator), params, steps=steps, dt=dt)
    return system, z, params


def test_particle_weights_follow_each_particles_force_and_lift_a_free_one_to_the_floor():
    """The weights agree with the forces themselves (mean / (|F_i|^2 + f^2 mean) over the window, to the
    O(dt) the window's momentum changes differ from them by), and a particle with no force gets 1 / f^2."""
    system, z, params = spring_windows()
    weights = particle_weights(z, 0.1)
    torch.testing.assert_close(weights[:, 0], torch.full((3,), 100.0, dtype=torch.float64), rtol=1e-12, atol=0)
    forces = system.forces(z[:, :-1, 0].flatten(0, 1), {k: v.repeat_interleave(4, 0) for k, v in params.items()})
    own = forces.square().sum(-1).unflatten(0, (3, 4)).mean(1)  # (B, N): |F_i|^2 over the window's steps
    mean = own.mean(-1, keepdim=True)
    torch.testing.assert_close(weights, mean / (own + 0.01 * mean), rtol=2e-2, atol=0)
    assert bool((weights[:, 1:] < 10).all())  # the held particles stay far below the floor's weight


def test_particle_weights_are_unchanged_by_rotations_translations_scale_and_order():
    _, z, _ = spring_windows(free=False)
    weights = particle_weights(z, 0.2)
    angle = torch.tensor(0.7, dtype=torch.float64)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    moved = 3.0 * (z @ rotation.T)
    moved[:, :, 0] += torch.tensor([5.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(particle_weights(moved, 0.2), weights, rtol=1e-12, atol=0)
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(particle_weights(z[:, :, :, order], 0.2), weights[:, order], rtol=1e-12, atol=0)
    still = torch.zeros_like(z)
    assert torch.equal(particle_weights(still, 0.2), torch.ones(3, 4, dtype=torch.float64))


def test_the_weighted_loss_counts_a_free_particles_error_at_the_floors_weight():
    """A model wrong only about particle 0's force (a spring on it) misses by that particle's error alone (and
    the integrator's); weighted, that error counts 1 / f^2 times, since the true particle 0 feels nothing."""
    system, z, params = spring_windows(steps=6, dt=0.01)

    class PulledFree:  # the true springs, plus a weak spring pulling particle 0 to the origin
        def hamiltonian(self, z, params):
            return system.hamiltonian(z, params) + 0.05 * z[:, 0, 0].square().sum(-1)

    loss = lambda floor: float(WindowLoss(PulledFree(), 0.01, "rk4", weight_floor=floor)(z, params))  # noqa: E731
    assert loss(None) > 0
    assert loss(0.25) == pytest.approx(16 * loss(None), rel=1e-6)  # the others' rk4 error: 1e-8 of it


def test_weighted_training_is_scored_unweighted_and_recorded(frames, tmp_path):
    """The weights change what is fitted, not what is reported: at a learning rate too small to move a weight,
    the weighted run's training loss is its own but its validation MSE is the unweighted run's; the checkpoint
    names the floor."""
    metrics, saved = {}, {}
    for floor in (None, 0.1):
        train(tiny(weight_floor=floor, epochs=1, lr=1e-30), frames, tmp_path / str(floor))
        metrics[floor] = json.loads((tmp_path / str(floor) / "metrics.jsonl").read_text().splitlines()[-1])
        saved[floor] = load_checkpoint(tmp_path / str(floor) / "last.pt")
    assert all(torch.equal(saved[None]["model"][key], saved[0.1]["model"][key]) for key in saved[None]["model"])
    assert metrics[0.1]["validation_mse"] == metrics[None]["validation_mse"]
    assert not math.isclose(metrics[0.1]["train_loss"], metrics[None]["train_loss"], rel_tol=1e-4)
    assert saved[0.1]["train_config"]["weight_floor"] == 0.1
