"""The compiled training step (``TrainConfig.compile``): the eager step's numbers, for every kind of model.

Compiling takes tens of seconds per model on a CPU, so the comparisons are marked slow (CI runs them);
the choices and refusals are fast.
"""

import math

import pytest
import torch

from hamnet.cli import main
from hamnet.checkpoint import load_checkpoint
from hamnet.io import save_trajectories
from hamnet.models import ModelConfig, build_model
from hamnet.optimisation import COMPILE_MEASURED_STEPS, COMPILE_PAYS_STEPS, TrainingStep, compile_choice
from hamnet.simulation import generate
from hamnet.systems import Springs
from hamnet.training import TrainConfig, train

N = 4
MODELS = {  # one of each kind: separable (leapfrog), Hamiltonian but not separable (rk4), not Hamiltonian
    "hlieconv": ModelConfig(name="hlieconv", group="SO2", width=8, depth=1, kernel_width=8, kernel_channels=4,
                            n_particles=N, dim=2, feature_keys=("m", "k")),
    "egnn-h": ModelConfig(name="egnn-h", width=8, depth=1, n_particles=N, dim=2, feature_keys=("m", "k")),
    "fc-hnn": ModelConfig(name="fc-hnn", width=16, depth=2, n_particles=N, dim=2, feature_keys=("m", "k")),
    "fc-node": ModelConfig(name="fc-node", width=16, depth=2, n_particles=N, dim=2, feature_keys=("m", "k")),
}


@pytest.fixture(scope="module")
def springs():
    return generate(Springs(n_particles=N), n_systems=12, steps=8, dt=0.01, seed=0)


def windows(data, b=6, chunk=4):
    z = data.z[:b, :chunk].float()
    return z, {key: value[:b].float() for key, value in data.params.items()}


def loss_and_gradients(step: TrainingStep, z, params, *, compiled: bool):
    loss = step.loss(z, params) if compiled else step.loss_module(z, params)
    weights = [w for w in step.model.parameters()]
    gradients = torch.autograd.grad(loss, weights, allow_unused=True)
    return loss.detach(), [g if g is not None else torch.zeros_like(w) for g, w in zip(gradients, weights)]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_compiled_loss_and_gradients_are_the_eager_ones(name, springs):
    z, params = windows(springs)
    config = TrainConfig(model=MODELS[name], batch_size=z.shape[0], substeps=2, compile="on")
    step = TrainingStep(config, 0.01, total_steps=1)
    eager_loss, eager_gradients = loss_and_gradients(step, z, params, compiled=False)
    loss, gradients = loss_and_gradients(step, z, params, compiled=True)
    assert math.isclose(float(loss), float(eager_loss), rel_tol=1e-5)
    scale = max(float(g.abs().max()) for g in eager_gradients)
    assert scale > 0
    assert max(float((g - e).abs().max()) for g, e in zip(gradients, eager_gradients)) < 1e-4 * scale


@pytest.mark.parametrize("name, weight_floor", [*((name, None) for name in MODELS), ("hlieconv", 0.1)])
def test_the_window_loss_traces_as_one_graph(name, weight_floor, springs):
    """No graph break (a host read, an untraceable call) anywhere in a window's loss and its gradient, for
    every kind of model with the integrator it trains with: what makes the compiled step one graph, and on
    CUDA one CUDA graph. Traced without the C++ compiler (aot_eager), so it takes seconds."""
    from hamnet.loss import WindowLoss
    from hamnet.rollouts import default_method

    z, params = windows(springs)
    model = build_model(MODELS[name])
    loss = WindowLoss(model, 0.01, default_method(model), 2, weight_floor=weight_floor)
    traced = torch.compile(loss, backend="aot_eager", fullgraph=True, dynamic=False)
    value = traced(z, params)
    assert math.isclose(float(value.detach()), float(loss(z, params).detach()), rel_tol=1e-5)
    assert all(g is None or g.isfinite().all() for g in torch.autograd.grad(value, list(model.parameters()),
                                                                            allow_unused=True))


def test_batches_of_the_compiled_size_take_the_compiled_loss(springs, monkeypatch):
    calls = []

    def recording(module, **options):
        def call(*args):
            calls.append(args[0].shape[0])
            return module(*args)
        return call

    monkeypatch.setattr(torch, "compile", recording)
    z, params = windows(springs)
    step = TrainingStep(TrainConfig(model=MODELS["hlieconv"], batch_size=4, compile="on"), 0.01, 1)
    step.loss(z[:4], {k: v[:4] for k, v in params.items()})
    step.loss(z[:3], {k: v[:3] for k, v in params.items()})  # an epoch's shorter last batch: eager
    assert calls == [4]


@pytest.mark.slow
def test_compiled_loss_keeps_the_invariance(springs):
    """HLieConv SO(2) with centring is invariant to rotations and translations: so is its compiled
    window loss, to float32 round-off."""
    z, params = windows(springs)
    step = TrainingStep(TrainConfig(model=MODELS["hlieconv"], batch_size=z.shape[0], compile="on"), 0.01, 1)
    angle = torch.tensor(0.7)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    moved = z @ rotation.T
    moved[:, :, 0] += torch.tensor([0.3, -1.1])
    with torch.no_grad():
        assert math.isclose(float(step.loss(moved, params)), float(step.loss(z, params)), rel_tol=1e-4)


@pytest.mark.slow
def test_compiled_training_is_the_eager_training_and_resumes(tmp_path, springs):
    """An epoch of compiled steps ends at the eager epoch's weights to float32 round-off; a compiled run
    stopped and resumed ends bitwise where an uninterrupted compiled run does."""
    path = tmp_path / "springs.npz"
    save_trajectories(path, springs)
    settings = dict(model=MODELS["hlieconv"], epochs=2, batch_size=8, lr=1e-3, max_windows=40, validation_windows=8)
    eager = train(TrainConfig(**settings), path, tmp_path / "eager", stop_after_epochs=1)
    compiled = train(TrainConfig(**settings, compile="on"), path, tmp_path / "compiled", stop_after_epochs=1)
    assert math.isclose(compiled["train_loss"], eager["train_loss"], rel_tol=1e-5)
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("eager", "compiled"))
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-5), name
    assert load_checkpoint(tmp_path / "compiled" / "last.pt")["train_config"]["compile"] == "on"
    train(TrainConfig(**settings, compile="on"), path, tmp_path / "compiled", resume=True)
    train(TrainConfig(**settings, compile="on"), path, tmp_path / "whole")
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("compiled", "whole"))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_auto_compiles_long_cpu_runs_of_measured_windows_only():
    assert compile_choice("auto", "cpu", COMPILE_PAYS_STEPS - 1) == "off"
    assert compile_choice("auto", "cpu", COMPILE_PAYS_STEPS) == "on"
    assert compile_choice("auto", "cpu", 10**6, window_steps=COMPILE_MEASURED_STEPS + 1) == "off"
    assert compile_choice("auto", "cuda", 10**6) == "off"  # not measured on a GPU yet
    assert compile_choice("on", "cuda", 10) == "on" and compile_choice("off", "cpu", 10**6) == "off"
    assert compile_choice("auto", "cpu", 10**6, world_size=2) == "off"
    with pytest.raises(ValueError, match="--compile on compiles the step of one process"):
        compile_choice("on", "cpu", 10, world_size=2)
    with pytest.raises(ValueError, match="compile must be one of auto, on, off"):
        TrainConfig(compile="yes")


def test_a_compiler_that_fails_is_one_line_and_writes_nothing(tmp_path, springs, monkeypatch, capsys):
    def broken(module, **options):
        def call(*args):
            raise RuntimeError("no working C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    path = tmp_path / "springs.npz"
    save_trajectories(path, springs)
    flags = ["train", "--data", str(path), "--width", "8", "--depth", "1", "--epochs", "1", "--batch-size", "4",
             "--quiet"]
    assert main([*flags, "--out", str(tmp_path / "run"), "--compile", "on"]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no working C++ compiler found" in error[0] and "--compile off" in error[0]
    assert not (tmp_path / "run").exists()
    # auto turns it off and trains eagerly (a CPU run this short would not compile anyway: force it)
    monkeypatch.setattr("hamnet.optimisation.COMPILE_PAYS_STEPS", 1)
    assert main([*flags, "--out", str(tmp_path / "auto"), "--compile", "auto"]) == 0
    assert load_checkpoint(tmp_path / "auto" / "last.pt")["train_config"]["compile"] == "off"


def identity_compile(function, **options):
    return function


def test_rollout_and_evaluate_compile_flags_end_to_end(tmp_path, springs, monkeypatch, capsys):
    """``--compile`` reaches the rollout (recorded in the file and the metrics; compiling itself stubbed
    out, so this runs in seconds) and is refused with a rollout file."""
    import json

    from hamnet.io import load_trajectories

    monkeypatch.setattr(torch, "compile", identity_compile)
    path = tmp_path / "springs.npz"
    save_trajectories(path, springs)
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--out", str(run), "--width", "8", "--depth", "1", "--epochs", "1",
                 "--quiet"]) == 0
    common = ["--checkpoint", str(run / "best.pt"), "--data", str(path)]
    assert main(["rollout", *common, "--out", str(tmp_path / "roll.npz"), "--compile"]) == 0
    assert load_trajectories(tmp_path / "roll.npz").meta["compiled"] is True
    assert main(["evaluate", *common, "--out", str(tmp_path / "m.json"), "--compile"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["compiled"] is True
    capsys.readouterr()
    assert main(["evaluate", "--rollout", str(tmp_path / "roll.npz"), "--data", str(path), "--out",
                 str(tmp_path / "r.json"), "--compile"]) != 0
    assert "--compile concern a model" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_run_resumes_compiled_or_not(tmp_path, springs, monkeypatch):
    """Compiling is no setting of the run's result: one started eagerly (or before the switch existed, with no
    ``compile`` in its config) resumes compiled and the other way round."""
    monkeypatch.setattr(torch, "compile", identity_compile)
    path = tmp_path / "springs.npz"
    save_trajectories(path, springs)
    settings = dict(model=MODELS["hlieconv"], epochs=3, batch_size=8, max_windows=40, validation_windows=8)
    train(TrainConfig(**settings), path, tmp_path / "run", stop_after_epochs=1)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    del state["train_config"]["compile"]  # as a checkpoint from before the switch
    torch.save(state, tmp_path / "run" / "last.pt")
    train(TrainConfig(**settings, compile="on"), path, tmp_path / "run", resume=True, stop_after_epochs=1)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_config"]["compile"] == "on"
    metrics = train(TrainConfig(**settings), path, tmp_path / "run", resume=True)
    assert metrics["epoch"] == 3


def test_models_without_host_reads_under_compile_tracing(springs, monkeypatch):
    """What the compiled path relies on: under tracing, HLieConv's potential skips its finiteness test
    and the force is torch.func.grad's, which equals autograd's."""
    model = build_model(MODELS["hlieconv"]).double()
    q = springs.z[:5, 0, 0]
    params = {k: v[:5] for k, v in springs.params.items()}
    eager = model.forces(q, params)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.allclose(model.forces(q, params), eager, rtol=1e-12, atol=1e-14)
    q = q.clone()
    q[0, 0, 0] = math.nan
    values = model.potential(q, params)  # no host read, and still NaN in that system alone
    assert values[0].isnan() and values[1:].isfinite().all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hlieconv", "fc-hnn"])
def test_compiled_rollout_is_the_eager_rollout(name, springs):
    """Float64 rollouts with the forces (HLieConv, leapfrog) or the vector field (FC-HNN, rk4) compiled:
    the eager states to round-off; HLieConv SO(2)'s momenta kept as eagerly; a second batch size is
    followed."""
    from hamnet.diagnostics import angular_momentum, linear_momentum
    from hamnet.rollouts import default_method, rollout, rollout_systems

    model = build_model(MODELS[name], torch.Generator().manual_seed(1)).double()
    z0, params = springs.z[:, 0], springs.params
    method = default_method(model)
    eager = rollout(model, z0, params, 40, 0.01, method=method)
    compiled = rollout(model, z0, params, 40, 0.01, method=method, compile=True)
    assert torch.allclose(compiled, eager, rtol=1e-10, atol=1e-12)
    if name == "hlieconv":
        for quantity in (linear_momentum, angular_momentum):
            drift = (quantity(compiled) - quantity(compiled[:, :1])).abs().max()
            assert float(drift) < 1e-12
        # another batch size (as when a diverged system leaves the batch): the compiled code follows it
        result = rollout_systems(model, z0[:7], {k: v[:7] for k, v in params.items()}, 20, 0.01, method=method,
                                 compile=True)
        assert torch.allclose(result.z, eager[:7, :21], rtol=1e-10, atol=1e-12)
