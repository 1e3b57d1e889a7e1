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
from hamnet.optimisation import COMPILE_PAYS_STEPS, TrainingStep, compile_choice
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
    # a batch of another size takes the eager loss, bitwise
    assert torch.equal(step.loss(z[:3], {k: v[:3] for k, v in params.items()}),
                       step.loss_module(z[:3], {k: v[:3] for k, v in params.items()}))


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


def test_auto_compiles_on_cuda_and_long_cpu_runs_only():
    assert compile_choice("auto", "cuda", 10) == "on"
    assert compile_choice("auto", "cpu", COMPILE_PAYS_STEPS - 1) == "off"
    assert compile_choice("auto", "cpu", COMPILE_PAYS_STEPS) == "on"
    assert compile_choice("off", "cuda", 10**6) == "off"
    assert compile_choice("auto", "cuda", 10, world_size=2) == "off"
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
