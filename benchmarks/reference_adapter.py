"""The reference implementation's side of ``benchmarks/reference_side_by_side.py``, run from its own checkout.

Note to the reader: the reference is the paper authors' code (github mfinzi/LieConv, package
``lie_conv``, with its trainer library mfinzi/olive-oil-ml, package ``oil``). It is never copied
into hamnet, never installed into hamnet's environment and never a dependency: this module puts the
two checkouts given by path on ``sys.path`` of a separate interpreter (the reference's own
environment, see the side-by-side script's docstring) and runs one job there::

    PYTHON benchmarks/reference_adapter.py JOB SPEC.json

``SPEC.json`` holds the job's settings and ``out``, the JSON file the job writes its result to
(atomically); ``JOB`` is one of ``probe``, ``train``, ``evaluate``, ``timing`` and ``memory``. The
jobs ``evaluate`` and ``timing`` import hamnet too (from this repository, on ``sys.path``): the
evaluator is hamnet's, one function for both models (``pieces.score_model``, beside this module, which
the ablations score with too), and the timing interleaves both sides' training steps in one process.
``memory`` imports only the side it measures. No script imports this module: it is run.

Data: a *windows file* is a hamnet trajectory file (``.npz``, schema 1) whose every system is one
training window of ``chunk`` states, ``z: (W, chunk, 2, N, D)`` at times ``0, dt, ...``. The
reference takes each window as its ``DynamicsDataset.__getitem__`` gives it, ``((z0, sys_params,
ts), zs)`` with ``zs: (chunk, 2 N D)`` (``[q, p]`` flattened, which is ``z`` reshaped),
``sys_params: (N, 2)`` (``[m, k]``) and ``ts: (chunk,)``.

Compatibility shims (the reference's code is run unchanged; only what it imports is steered):
``oil.model_trainers/__init__.py`` imports oil's GAN and image trainers, which need torchvision,
and ``lie_conv.dynamicsTrainer`` imports ``lie_conv.moleculeTrainer`` (molecule data: torchvision,
h5py) only for ``BottleBlock`` and ``GlobalPool``, which live in ``lie_conv.lieConv``. Both modules
are given to the import system as stand-ins holding exactly those names, so neither torchvision
(whose PyPI build does not load against torch's CPU build) nor h5py is needed. The scheduler's
``step(epoch)`` call, deprecated in torch 2, still works; its warnings are silenced.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import random
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPOSITORY = Path(__file__).resolve().parents[1]
#: minutes between the reference trainer's log lines: never (its logging evaluates extra batches and
#: is no part of training; its example script spends up to a quarter of the time on it)
NEVER = math.inf
#: hamnet's group names -> the reference's group objects (``lie_conv.lieGroups``)
REFERENCE_GROUPS = {"T2": lambda groups: groups.T(2), "SO2": lambda groups: groups.SO2()}


# -- the reference, imported from its checkouts ---------------------------------------------------
def import_reference(reference: str | os.PathLike, oil: str | os.PathLike) -> types.SimpleNamespace:
    """The reference's classes, imported from the checkouts ``reference`` (holding ``lie_conv/``) and
    ``oil`` (holding ``oil/``). A path that is not such a checkout is refused in one line."""
    reference, oil = Path(reference).resolve(), Path(oil).resolve()
    if not (reference / "lie_conv" / "dynamicsTrainer.py").is_file():
        raise ValueError(f"--reference {reference} is not a checkout of mfinzi/LieConv "
                         "(no lie_conv/dynamicsTrainer.py)")
    if not (oil / "oil" / "model_trainers" / "trainer.py").is_file():
        raise ValueError(f"--oil {oil} is not a checkout of mfinzi/olive-oil-ml (no oil/model_trainers/trainer.py)")
    sys.path[:0] = [str(reference), str(oil)]
    trainers = types.ModuleType("oil.model_trainers")
    trainers.__path__ = [str(oil / "oil" / "model_trainers")]
    sys.modules["oil.model_trainers"] = trainers
    trainers.Trainer = importlib.import_module("oil.model_trainers.trainer").Trainer
    lieconv = importlib.import_module("lie_conv.lieConv")
    molecule = types.ModuleType("lie_conv.moleculeTrainer")
    molecule.BottleBlock, molecule.GlobalPool = lieconv.BottleBlock, lieconv.GlobalPool
    sys.modules["lie_conv.moleculeTrainer"] = molecule
    dynamics = importlib.import_module("lie_conv.dynamicsTrainer")
    hamiltonian = importlib.import_module("lie_conv.hamiltonian")
    groups = importlib.import_module("lie_conv.lieGroups")
    utils = importlib.import_module("oil.utils.utils")
    warnings.filterwarnings("ignore", message="The epoch parameter in `scheduler.step()`")
    warnings.filterwarnings("ignore", message="To get the last learning rate computed by the scheduler")
    return types.SimpleNamespace(HLieResNet=dynamics.HLieResNet, Trainer=dynamics.IntegratedDynamicsTrainer,
                                 EuclideanK=hamiltonian.EuclideanK, groups=groups, LoaderTo=utils.LoaderTo,
                                 cosLr=utils.cosLr, Eval=utils.Eval, paths=(reference, oil))


def build_network(ref: types.SimpleNamespace, group: str, width: int, depth: int, dim: int) -> nn.Module:
    """The reference's ``HLieResNet`` for springs features ``(m, k)``, with every other setting its own
    default (no batch norm, all-pairs neighbourhoods with fill 1, centring, Swish), in float32."""
    if group not in REFERENCE_GROUPS:
        raise ValueError(f"group {group!r}: the side by side runs {', '.join(REFERENCE_GROUPS)}")
    return ref.HLieResNet(d=dim, sys_dim=2, k=width, num_layers=depth, group=REFERENCE_GROUPS[group](ref.groups))


def revision(path: Path) -> str:
    """The checkout's git commit, or (no ``.git``) a sha256 over its Python files."""
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        digest = hashlib.sha256()
        for file in sorted(path.rglob("*.py")):
            digest.update(file.read_bytes())
        return "files-sha256:" + digest.hexdigest()[:16]


# -- windows in the reference's layout ------------------------------------------------------------
def load_windows(path: str | os.PathLike) -> dict:
    """A windows file read with numpy alone: ``z: (W, chunk, 2, N, D)``, ``m``, ``k: (W, N)``, ``dt``."""
    with np.load(path) as file:
        meta = json.loads(str(file["meta"]))
        return {"z": torch.from_numpy(file["z"]), "m": torch.from_numpy(file["m"]),
                "k": torch.from_numpy(file["k"]), "dt": float(meta["dt"])}


class ReferenceWindows(torch.utils.data.Dataset):
    """Windows as the reference's ``DynamicsDataset.__getitem__`` returns them:
    ``((zs[0], sys_params, ts), zs)`` with ``zs: (chunk, 2 N D)``, ``sys_params: (N, 2)``, ``ts: (chunk,)``.
    Times start at 0 in every window (its own data used absolute times, which in float32 perturb the
    rk4 step by up to 1e-5 relative)."""

    def __init__(self, windows: dict) -> None:
        z = windows["z"]
        self.zs = z.reshape(z.shape[0], z.shape[1], -1)
        self.sys_params = torch.stack([windows["m"], windows["k"]], dim=-1)
        self.ts = torch.arange(z.shape[1], dtype=torch.float64) * windows["dt"]

    def __len__(self) -> int:
        return self.zs.shape[0]

    def __getitem__(self, i: int):
        return (self.zs[i, 0], self.sys_params[i], self.ts), self.zs[i]


def reference_trainer(ref, network: nn.Module, windows: dict, *, lr: float, epochs: int, batch_size: int,
                      batches: list[list[int]] | None = None):
    """The reference's ``IntegratedDynamicsTrainer`` as its ``examples/train_springs.py`` builds it (Adam,
    ``cosLr(epochs)``, a shuffled ``DataLoader`` of ``min(batch_size, W)`` moved by ``LoaderTo`` to float32),
    on ``windows`` only (no validation or test loaders) and with its logging switched off through its own
    option. ``batches`` fixes the batches (index lists) instead of shuffling, for timing."""
    dataset = ReferenceWindows(windows)
    if batches is None:
        loader = torch.utils.data.DataLoader(dataset, batch_size=min(batch_size, len(dataset)), num_workers=0,
                                             shuffle=True)
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=0)
    loaders = {"train": ref.LoaderTo(loader, device=torch.device("cpu"), dtype=torch.float32)}
    return ref.Trainer(network, loaders, lambda params: torch.optim.Adam(params, lr=lr), ref.cosLr(epochs),
                       log_args={"timeFrac": 1 / 4, "minPeriod": NEVER, "no_print": True})


def seed_everything(seed: int) -> None:
    """The reference draws its initial weights, batch order and neighbourhood noise from the global RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# -- the reference's learned Hamiltonian, as a hamnet model ---------------------------------------
class ReferenceHamiltonian(nn.Module):
    """The reference's trained ``HLieResNet`` behind hamnet's model protocol (``hamnet.dynamics``):
    ``H = EuclideanK(p, m) + compute_V(q)``, its own functions, so hamnet's evaluator integrates it as
    it integrates hamnet's models. Separable: ``velocity = p / m`` (its kinetic energy's gradient) and
    ``forces = -dV/dq`` by autograd, which is the reference's own field split in two. ``V`` is NaN for a
    system whose positions are not finite and only for it, as hamnet's models do, so a diverging
    rollout never poisons the rest of its batch. Put it in eval mode: in training mode the reference
    adapts its neighbourhood radius at every call."""

    separable = True

    def __init__(self, network: nn.Module, euclidean_kinetic) -> None:
        super().__init__()
        self.network = network
        self._kinetic = euclidean_kinetic

    def _sys_params(self, params: dict, like: torch.Tensor) -> torch.Tensor:
        return torch.stack([params["m"], params["k"]], dim=-1).to(like.dtype)

    def potential(self, q: torch.Tensor, params: dict) -> torch.Tensor:
        """``V(q)``; ``q: (B, N, D)`` -> ``(B,)``."""
        sys_params = self._sys_params(params, q)
        finite = torch.isfinite(q).flatten(1).all(-1)
        if bool(finite.all()):
            return self.network.compute_V((q, sys_params))
        values = torch.where(finite, q.sum((1, 2)) * 0, math.nan)
        if bool(finite.any()):
            kept = finite.nonzero().squeeze(-1)
            values = values.index_put((kept,), self.network.compute_V((q[kept], sys_params[kept])))
        return values

    def hamiltonian(self, z: torch.Tensor, params: dict) -> torch.Tensor:
        """``H(z)``; ``z: (B, 2, N, D)`` -> ``(B,)``."""
        return self._kinetic(z[:, 1], params["m"].to(z.dtype)) + self.potential(z[:, 0], params)

    def velocity(self, p: torch.Tensor, params: dict) -> torch.Tensor:
        return p / params["m"].to(p.dtype).unsqueeze(-1)

    def forces(self, q: torch.Tensor, params: dict) -> torch.Tensor:
        from hamnet.dynamics import potential_force

        return potential_force(self.potential, q, params, owner=self)


def load_reference_model(ref, spec: dict) -> nn.Module:
    """A trained reference network from the ``train`` job's ``model.pt``, wrapped and in eval mode."""
    saved = torch.load(spec["path"], weights_only=True)
    network = build_network(ref, saved["group"], saved["width"], saved["depth"], saved["dim"])
    network.load_state_dict(saved["state_dict"])
    return ReferenceHamiltonian(network, ref.EuclideanK).eval()


# -- jobs -----------------------------------------------------------------------------------------
def job_probe(spec: dict) -> dict:
    """Versions and revisions: the interpreter, torch, and both checkouts (importing them proves they run)."""
    ref = import_reference(spec["reference"], spec["oil"])
    return {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
            "numpy": np.__version__, "reference_checkout": str(ref.paths[0]), "oil_checkout": str(ref.paths[1]),
            "reference_revision": revision(ref.paths[0]), "oil_revision": revision(ref.paths[1])}


def job_train(spec: dict) -> dict:
    """Train the reference's HLieResNet on a windows file with its own trainer, loss, optimiser and
    schedule; writes ``model.pt`` (state dict and settings). Timed: ``trainer.train(epochs)`` alone."""
    torch.set_num_threads(spec["threads"])
    ref = import_reference(spec["reference"], spec["oil"])
    windows = load_windows(spec["windows"])
    seed_everything(spec["seed"])
    dim = windows["z"].shape[-1]
    network = build_network(ref, spec["group"], spec["width"], spec["depth"], dim)
    trainer = reference_trainer(ref, network, windows, lr=spec["lr"], epochs=spec["epochs"],
                                batch_size=spec["batch_size"])
    started = time.perf_counter()
    trainer.train(spec["epochs"])
    seconds = time.perf_counter() - started
    finite = all(bool(torch.isfinite(value).all()) for value in network.state_dict().values()
                 if value.is_floating_point())
    saved = {"group": spec["group"], "width": spec["width"], "depth": spec["depth"], "dim": dim,
             "state_dict": network.state_dict()}
    _atomic_torch_save(saved, Path(spec["model"]))
    radii = [float(module.r) for module in network.modules() if hasattr(module, "r")]
    return {"train_seconds": seconds, "epochs": spec["epochs"], "windows": len(windows["z"]),
            "parameters": sum(p.numel() for p in network.parameters()), "finite_weights": finite,
            "neighbourhood_radii": radii, "threads": torch.get_num_threads(),
            "reference_revision": revision(ref.paths[0]), "oil_revision": revision(ref.paths[1])}


def job_evaluate(spec: dict) -> dict:
    """Score every model in ``spec["models"]`` with ``hamnet.evaluation.evaluate`` on the test file (one
    evaluator for both sides); each score is written to its own file (skipped when present). For the
    reference's models also its own ``get_rollout_mse`` over the evaluator's test windows, a check
    that the wrapped model is the reference's."""
    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, str(REPOSITORY))
    from hamnet.checkpoint import model_from_checkpoint
    from hamnet.io import load_trajectories
    from pieces import score_model  # beside this script, so on sys.path; the ablations score with it too

    ref = import_reference(spec["reference"], spec["oil"])
    test = load_trajectories(spec["test"])
    done = []
    for entry in spec["models"]:
        out = Path(entry["out"])
        if out.exists():
            continue
        if entry["kind"] == "reference":
            model = load_reference_model(ref, entry)
        else:
            model = model_from_checkpoint(entry["path"])[0]
        started = time.perf_counter()
        score = score_model(model, test, spec["rollout_method"])
        if entry["kind"] == "reference":
            score["reference_own_window_mse"] = reference_own_window_mse(ref, model.network, test)
        score["evaluate_seconds"] = round(time.perf_counter() - started, 1)
        _atomic_write_json(out, score)
        done.append(entry["label"])
    return {"scored": done}


def reference_own_window_mse(ref, network: nn.Module, test, batch_size: int = 500) -> float:
    """The reference's own figure, ``IntegratedDynamicsTrainer.get_rollout_mse`` (its odeint rk4 in float32,
    the initial state averaged in), over the windows the evaluator scores (the same seeded subset)."""
    from hamnet.data import DEFAULT_CHUNK, Windows
    from hamnet.evaluation import EVALUATION_WINDOWS

    many = test.n_systems * (test.n_times - DEFAULT_CHUNK + 1) > EVALUATION_WINDOWS
    windows = Windows(test, DEFAULT_CHUNK, max_windows=EVALUATION_WINDOWS if many else None, seed=0)
    network = network.float()
    trainer = ref.Trainer(network, {}, lambda params: torch.optim.Adam(params), ref.cosLr(1),
                          log_args={"minPeriod": NEVER, "no_print": True})
    total, count = 0.0, 0
    for index in windows.batches(batch_size):
        z, params = windows[index]
        zs = z.reshape(z.shape[0], z.shape[1], -1).float()
        ts = (torch.arange(z.shape[1], dtype=torch.float32) * float(test.meta["dt"])).expand(z.shape[0], -1)
        sys_params = torch.stack([params["m"], params["k"]], dim=-1).float()
        total += trainer.get_rollout_mse((ts, zs, sys_params)) * len(index)
        count += len(index)
    return total / count


def job_timing(spec: dict) -> dict:
    """Both sides' training steps interleaved in this process, on the same batches of the same windows:
    per repetition every batch runs on one side and then the other (the order flips each repetition),
    each side timed on its own steps. A step is what each side's training loop does per batch, data
    included: the reference's ``DataLoader``/``LoaderTo`` batch, ``trainer.step`` and its scheduler step;
    hamnet's batch cut and ``hamnet.optimisation.TrainingStep`` (``WindowLoss`` forward and backward, the loss
    read and checked, Adam step and scheduler step). Not timed:
    logging, checkpoints, validation. One warm-up batch per side first."""
    torch.set_num_threads(spec["threads"])
    windows = load_windows(spec["windows"])
    n = min(spec["windows_per_repeat"], len(windows["z"]))
    batches = [list(range(i, min(i + spec["batch_size"], n))) for i in range(0, n, spec["batch_size"])]
    total_steps = (1 + spec["repeats"]) * len(batches)
    steps = {"reference": reference_stepper(spec, windows, batches, 1 + spec["repeats"]),
             "hamnet": hamnet_stepper(spec, batches, total_steps)}
    for step in steps.values():
        step(0)
    wall = {side: [0.0] * spec["repeats"] for side in steps}
    cpu = {side: [0.0] * spec["repeats"] for side in steps}
    for repeat in range(spec["repeats"]):
        order = ("reference", "hamnet") if repeat % 2 == 0 else ("hamnet", "reference")
        for number in range(len(batches)):
            for side in order:
                started, started_cpu = time.perf_counter(), time.process_time()
                steps[side](number)
                wall[side][repeat] += time.perf_counter() - started
                cpu[side][repeat] += time.process_time() - started_cpu
    per_1000 = 1000 / n
    return {"width": spec["width"], "group": spec["group"], "windows_per_repeat": n, "batch_size": spec["batch_size"],
            "repeats": spec["repeats"], "threads": torch.get_num_threads(),
            "seconds_per_1000_windows": {side: [t * per_1000 for t in wall[side]] for side in steps},
            "cpu_seconds_per_1000_windows": {side: [t * per_1000 for t in cpu[side]] for side in steps}}


def reference_stepper(spec: dict, windows: dict, batches: list[list[int]], epochs: int):
    """``step(number)``: one batch of the reference's training loop (``Trainer.train``'s body without its
    logging), over ``batches`` in order, epoch after epoch."""
    ref = import_reference(spec["reference"], spec["oil"])
    seed_everything(spec["seed"])
    network = build_network(ref, spec["group"], spec["width"], spec["depth"], windows["z"].shape[-1])
    trainer = reference_trainer(ref, network, windows, lr=spec["lr"], epochs=epochs,
                                batch_size=spec["batch_size"], batches=batches)
    loader, state = trainer.dataloaders["train"], {"iterator": None, "step": 0}

    def step(number: int) -> None:
        if number == 0:
            state["iterator"] = iter(loader)
        trainer.step(next(state["iterator"]))
        for scheduler in trainer.lr_schedulers:  # as Trainer.train: the index of the step just taken
            scheduler.step(state["step"] / len(batches))
        state["step"] += 1
    return step


def hamnet_stepper(spec: dict, batches: list[list[int]], total_steps: int):
    """``step(number)``: one batch of ``hamnet.train``'s loop on one process (the batch cut, then
    ``hamnet.optimisation.TrainingStep``, the step ``train`` takes) with the model ``spec["hamnet_config"]``
    describes, over the same windows."""
    sys.path.insert(0, str(REPOSITORY))
    from hamnet.data import Windows
    from hamnet.io import load_trajectories
    from hamnet.loss import to_device
    from hamnet.optimisation import DTYPES, TrainingStep
    from hamnet.training import TrainConfig

    config = TrainConfig.from_dict(spec["hamnet_config"])
    data = load_trajectories(spec["windows"])
    windows = Windows(data, config.chunk)
    train_step = TrainingStep(config, float(data.meta["dt"]), total_steps)
    elements_per_window = (windows.chunk - 1) * math.prod(data.z.shape[2:])
    indices = [torch.tensor(batch) for batch in batches]

    def step(number: int) -> None:
        z, params = to_device(windows[indices[number]], DTYPES[config.dtype], torch.device("cpu"))
        train_step(z, params, scale=1 / (len(indices[number]) * elements_per_window))
    return step


def job_memory(spec: dict) -> dict:
    """Peak resident memory of one side's training in this fresh process: ``VmRSS`` once the model,
    optimiser and data are set up, then ``spec["batches"]`` training steps, then the peak ``VmHWM``."""
    torch.set_num_threads(spec["threads"])
    windows = load_windows(spec["windows"])
    n = min(spec["batches"] * spec["batch_size"], len(windows["z"]))
    batches = [list(range(i, min(i + spec["batch_size"], n))) for i in range(0, n, spec["batch_size"])]
    if spec["side"] == "reference":
        step = reference_stepper(spec, windows, batches, 1)
    else:
        step = hamnet_stepper(spec, batches, len(batches))
    before = _status_bytes("VmRSS")
    for number in range(len(batches)):
        step(number)
    peak = _status_bytes("VmHWM")
    return {"side": spec["side"], "width": spec["width"], "group": spec["group"], "batches": len(batches),
            "batch_size": spec["batch_size"], "rss_before_training_bytes": before, "peak_rss_bytes": peak,
            "training_growth_bytes": peak - before}


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} is not in /proc/self/status (peak memory is read from Linux's /proc)")


# -- files ----------------------------------------------------------------------------------------
def _atomic_write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


def _atomic_torch_save(value: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(value, temporary)
    os.replace(temporary, path)


JOBS = {"probe": job_probe, "train": job_train, "evaluate": job_evaluate, "timing": job_timing, "memory": job_memory}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in JOBS:
        raise SystemExit(f"usage: {Path(sys.argv[0]).name} {{{','.join(JOBS)}}} SPEC.json")
    spec = json.loads(Path(sys.argv[2]).read_text())
    with contextlib.redirect_stdout(sys.stderr):  # the reference prints; stdout stays clean
        result = JOBS[sys.argv[1]](spec)
    _atomic_write_json(Path(spec["out"]), result)


if __name__ == "__main__":
    main()
