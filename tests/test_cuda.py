"""The GPU path: training, resume, rollouts and symmetry on ``cuda``, in float32 and float64.

Every test here is marked ``cuda`` and skipped on a machine without a CUDA device, so the default
run stays CPU-only; ``benchmarks/gpu_check.sh`` runs them (``pytest -m cuda``) on a GPU machine.
"""

import math

import pytest
import torch

import problems
from hamnet.checkpoint import load_checkpoint, model_from_checkpoint
from hamnet.diagnostics import conservation_report
from hamnet.equivariance import invariance_error
from hamnet.io import save_trajectories
from hamnet.models import ModelConfig, build_model
from hamnet.rollouts import rollout
from hamnet.simulation import generate
from hamnet.training import TrainConfig, train
from hamnet.systems import Springs

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

MODEL = ModelConfig(name="hlieconv", group="SO2", width=16, depth=2, kernel_width=16, kernel_channels=8,
                    n_particles=4, feature_keys=("m", "k"))


@pytest.fixture(scope="module")
def springs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "springs.npz"
    save_trajectories(path, generate(Springs(n_particles=4), n_systems=40, steps=20, dt=0.01, seed=0))
    return path


def config(**changes) -> TrainConfig:
    settings = dict(model=MODEL, epochs=3, batch_size=32, max_windows=256, validation_windows=64, lr=3e-3)
    return TrainConfig(**{**settings, **changes})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_on_cuda_lowers_the_loss_and_saves_finite_weights(springs_file, tmp_path, dtype):
    metrics = train(config(dtype=dtype, epochs=4), springs_file, tmp_path / "run", device="cuda")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and math.isfinite(metrics["train_loss"])
    first, last = (float(line.split('"train_loss": ')[1].split(",")[0]) for line in (lines[0], lines[-1]))
    assert last < first
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(value).all() for value in state["model"].values())
    assert state["model_config"]["kernel_bound"] > 0  # the default bound, measured on the device's windows
    model, _ = model_from_checkpoint(tmp_path / "run" / "best.pt")  # loads on the CPU, wherever it was trained
    assert next(model.parameters()).device.type == "cpu"


def test_resume_on_cuda_matches_an_uninterrupted_run(springs_file, tmp_path):
    train(config(), springs_file, tmp_path / "straight", device="cuda")
    train(config(), springs_file, tmp_path / "resumed", device="cuda", stop_after_epochs=1)
    train(config(), springs_file, tmp_path / "resumed", device="cuda", resume=True)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    # CUDA kernels may sum in a different order from run to run; anything beyond that is a resume bug
    largest = max(float((straight[name] - resumed[name]).abs().max()) for name in straight)
    assert largest < 1e-5, largest


@pytest.mark.parametrize("bound", [None, 1.5], ids=["unbounded", "bounded"])
def test_cuda_rollout_matches_the_cpu_and_keeps_both_momenta(generator, bound):
    system, params, z0 = problems.springs_batch(generator, n_systems=8, n_particles=4)
    model = build_model(ModelConfig(**{**MODEL.__dict__, "kernel_bound": bound}), torch.Generator().manual_seed(0))
    model = model.double()
    on_cpu = rollout(model, z0, params, steps=300, dt=0.01, method="leapfrog")
    cuda_params = {k: v.cuda() for k, v in params.items()}
    on_gpu = rollout(model.cuda(), z0.cuda(), cuda_params, steps=300, dt=0.01, method="leapfrog")
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), on_cpu, rtol=1e-9, atol=1e-11)
    report = conservation_report(on_gpu, system.hamiltonian, cuda_params)
    assert float(report["linear_momentum"].max()) < 1e-12 and float(report["angular_momentum"].max()) < 1e-12


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_hlieconv_potential_is_invariant_on_cuda(generator, dtype, tolerance):
    model = build_model(MODEL, torch.Generator().manual_seed(0)).to(device="cuda", dtype=dtype)
    _, params, z0 = problems.springs_batch(generator, n_systems=4, n_particles=4)
    features = model.features({k: v.cuda() for k, v in params.items()}, z0[:, 0].cuda().to(dtype))
    points = z0[:, 0].cuda().to(dtype)
    error = invariance_error(model.potential_net, model.group, points, features,
                               generator=torch.Generator().manual_seed(0))
    assert error < tolerance, error


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DistributedDataParallel over NCCL needs two GPUs")
def test_two_gpus_with_nccl_match_one(springs_file, tmp_path):  # pragma: no cover - needs two GPUs
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "hamnet.cli", "train",
               "--data", str(springs_file), "--out", str(tmp_path / "ddp"), "--device", "cuda", "--epochs", "2",
               "--width", "16", "--depth", "2", "--batch-size", "32", "--max-windows", "256", "--quiet"]
    subprocess.run(command, check=True)
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["epoch"] == 2


def test_compiled_training_on_cuda_is_the_eager_training(springs_file, tmp_path):
    """CUDA graphs and fused kernels (compile="on"): an epoch ends at the eager epoch's weights to float32
    round-off, and compiled rollouts give the eager states."""
    eager = train(config(epochs=1), springs_file, tmp_path / "eager", device="cuda")
    compiled = train(config(epochs=1, compile="on"), springs_file, tmp_path / "compiled", device="cuda")
    assert math.isclose(compiled["train_loss"], eager["train_loss"], rel_tol=1e-4)
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("eager", "compiled"))
    assert all(torch.allclose(a[name], b[name], rtol=0, atol=1e-4) for name in a)
    model = model_from_checkpoint(tmp_path / "compiled" / "last.pt")[0].double().cuda()
    _, params, z0 = problems.springs_batch(torch.Generator().manual_seed(0), n_systems=8, n_particles=4)
    z0, params = z0.cuda(), {k: v.cuda() for k, v in params.items()}
    assert torch.allclose(rollout(model, z0, params, 50, 0.01, compile=True), rollout(model, z0, params, 50, 0.01),
                          rtol=1e-10, atol=1e-12)


def test_an_ensemble_on_cuda_trains_each_member_as_alone(springs_file, tmp_path):
    """hamnet.ensemble's joint step on the GPU: each member's weights as its lone run's (float64: batched
    GPU kernels round differently, so the comparison is at float64 round-off scaled by three epochs)."""
    from hamnet.ensemble import train_ensemble

    configs = [config(dtype="float64", seed=seed, lr=lr) for seed, lr in ((0, 3e-3), (1, 1e-3), (2, 3e-3))]
    train_ensemble(configs, springs_file, [tmp_path / f"together{k}" for k in range(3)], device="cuda")
    for k, member in enumerate(configs):
        train(member, springs_file, tmp_path / f"alone{k}", device="cuda")
        together = load_checkpoint(tmp_path / f"together{k}" / "last.pt")["model"]
        alone = load_checkpoint(tmp_path / f"alone{k}" / "last.pt")["model"]
        for name in alone:
            torch.testing.assert_close(together[name], alone[name], rtol=1e-9, atol=1e-10)
