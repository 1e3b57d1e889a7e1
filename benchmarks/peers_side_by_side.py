"""SEGNO's own code on hamnet's protocol files, scored by hamnet's evaluator beside hamnet's models.

The question: on identical N-body data, how do hamnet's learned Hamiltonians compare with the best
equivariant graph network's own implementation? Published figures are not enough (the peers' trackers
report re-runs far from them), so this runs the peer's public code, from its own checkout given by path
(yliukj/SEGNO at ``SEGNO_COMMIT``; never vendored, never a dependency), on the files
``benchmarks/nbody_peers.py`` trains hamnet on: the same training trajectories, validation trajectories
and test states (the same generator, seeds and sizes, in the same cache folder by default).

What each side sees. SEGNO (``peers_adapter.py`` says exactly which parts are its code): one model per
horizon, trained on one (start frame, target frame) pair per training trajectory, its best validation
epoch kept, at its README's settings (500 epochs, 8 layers of width 64, batch 100, lr 5e-3, weight decay
1e-12). hamnet (``nbody_peers.py``): one model for every horizon, trained on windows of 5 consecutive
frames of the same training trajectories. Both are scored on the same test states by one evaluator:
position MSE over test systems, particles and coordinates, in float64, at 1000, 1500 and 2000 protocol
steps from the start frame (EGNN's frame 30, hamnet's frame 31, on the charged set; the initial state on
SEGNO's gravity set). Conversion: SEGNO reads positions and velocities (``p / m``), charges and their
outer product as edges; on the charged set EGNN's stored frame ``k`` is the state after ``100 (k + 1)``
steps, so hamnet's frame 0 is dropped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers_side_by_side.py --segno PATH --scale small &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers_side_by_side.py --segno PATH --scale small &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers_side_by_side.py --segno PATH --scale small --report

``PATH`` is a git checkout of SEGNO (a work tree or a bare repository); its ``N-body`` folder is
extracted at ``SEGNO_COMMIT`` into the work folder. Several processes share the runs (``pieces.py``);
each run (one protocol, horizon and seed: about 2.5 minutes at the small scale on one thread) is kept
under ``<work>/runs/`` and skipped once done. Writes ``benchmarks/results/peers_side_by_side_<scale>.{md,json}``.
EGNN's own code (vgsatorras/egnn) is not run yet; ``egnn_against_its_code.md`` compares hamnet's EGNN with it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import subprocess
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.protocols import PROTOCOLS, Protocol, check_protocol, generate_protocol
from hamnet.runs import file_sha256

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pieces import add_piece_arguments, my_runs, run_script, start_pieces, write_json, write_result_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ADAPTER = Path(__file__).resolve().parent / "peers_adapter.py"
#: the commit of yliukj/SEGNO whose code is run (its README's commands are at this commit)
SEGNO_COMMIT = "46e748b"
#: seeds of the data splits: nbody_peers.py's, so both benchmarks use the same files
DATA_SEEDS = {"train": 43, "valid": 44, "test": 45}
#: SEGNO's dataset files: the loader's suffix and folder per protocol, and its target names per horizon
SEGNO_SETS = {"egnn-charged5": ("charged", "charged5_initvel1small", "dataset"),
              "segno-gravity5": ("gravity", "gravity5_initvel1small", "dataset_gravity")}


@dataclass(frozen=True)
class Scale:
    """Data sizes per split and SEGNO's training settings (its README's, but for the data size)."""

    train: int
    valid: int
    test: int
    epochs: int = 500
    layers: int = 8
    hidden: int = 64
    batch_size: int = 100
    lr: float = 5e-3
    weight_decay: float = 1e-12
    test_interval: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)


SCALES = {
    "small": Scale(train=300, valid=200, test=300),
    "full": Scale(train=3000, valid=2000, test=2000),
    "smoke": Scale(train=100, valid=100, test=100, epochs=2, layers=2, test_interval=1, seeds=(0,)),
}


class PeerCheckoutError(ValueError):
    """A peer checkout that is missing, not a git repository, or at another commit."""


def segno_commit(checkout: Path, commit: str = SEGNO_COMMIT) -> str:
    """The full hash of ``commit`` in ``checkout`` once the checkout is shown to be SEGNO's at that commit
    (a work tree or a bare repository); a one-line :class:`PeerCheckoutError` otherwise."""
    if not checkout.is_dir():
        raise PeerCheckoutError(f"--segno {checkout}: no such folder; give a git checkout of yliukj/SEGNO")
    head = _git(checkout, "rev-parse", "HEAD")
    if head is None:
        raise PeerCheckoutError(f"--segno {checkout}: not a git checkout; clone yliukj/SEGNO there "
                                f"(commit {SEGNO_COMMIT})")
    wanted = _git(checkout, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if wanted != head:
        raise PeerCheckoutError(f"--segno {checkout}: HEAD is {head[:7]}, not SEGNO's {commit}; check out {commit} "
                                "(the figures are for that commit's code)")
    if _git(checkout, "cat-file", "-e", f"{wanted}:N-body/main.py") is None:
        raise PeerCheckoutError(f"--segno {checkout}: commit {wanted[:7]} has no N-body/main.py; is it yliukj/SEGNO?")
    return wanted


def _git(checkout: Path, *args: str) -> str | None:
    done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def extract_nbody(checkout: Path, commit: str, work: Path) -> Path:
    """SEGNO's ``N-body`` folder at ``commit``, extracted once into ``work`` (its whole archive fails on a
    missing large file elsewhere in the repository, so only this folder is taken)."""
    target = work / f"segno-{commit[:7]}"
    if not (target / "N-body" / "main.py").exists():
        archive = subprocess.run(["git", "-C", str(checkout), "archive", "--format=tar", commit, "N-body"],
                                 capture_output=True, check=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target / "N-body"


# -- data -------------------------------------------------------------------------------------------------

def protocol_file(data: Path, protocol: Protocol, split: str, n_systems: int) -> Path:
    """nbody_peers.py's cached split (its name holds every generation parameter), generated on first use."""
    path = data / f"{protocol.name}_{split}_n{n_systems}_seed{DATA_SEEDS[split]}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_trajectories(path, generate_protocol(protocol.name, split, n_systems, seed=DATA_SEEDS[split]))
    return path


def load_split(path: Path, protocol: Protocol, split: str) -> Trajectories:
    """A protocol file, refused in one line unless it is ``split`` of ``protocol``."""
    data = load_trajectories(path)
    check_protocol(data, protocol.name, str(path))
    made = data.meta["protocol"].get("split")
    if made != split:
        raise ValueError(f"{path} holds the {made!r} split of {protocol.name}, not {split!r}; "
                         f"generate it with `hamnet generate --protocol {protocol.name} --split {split}`")
    return data


def segno_arrays(data: Trajectories, protocol: Protocol) -> dict[str, np.ndarray]:
    """The arrays SEGNO's loader reads, from a hamnet protocol file. Charged: ``loc`` and ``vel``
    ``(B, T - 1, 3, N)`` (EGNN's layout, hamnet's frame 0 dropped), ``charges`` ``(B, N, 1)``, ``edges``
    ``(B, N, N)`` (products of charges). Gravity: ``loc`` and ``vel`` ``(B, T, N, 3)`` (SEGNN's layout)."""
    velocity = data.z[:, :, 1] / data.params["m"][:, None, :, None]
    positions = data.z[:, :, 0]
    if protocol.name == "egnn-charged5":
        charge = data.params["charge"]
        return {"loc": positions[:, 1:].transpose(2, 3).numpy(), "vel": velocity[:, 1:].transpose(2, 3).numpy(),
                "charges": charge[..., None].numpy(), "edges": (charge[:, :, None] * charge[:, None, :]).numpy()}
    return {"loc": positions.numpy(), "vel": velocity.numpy()}


def segno_interval(protocol: Protocol, horizon: int) -> list[int]:
    """SEGNO's ``interval``: the start and target frame in the arrays of :func:`segno_arrays`."""
    dropped = 1 if protocol.name == "egnn-charged5" else 0
    return [protocol.frame_of(protocol.start_step) - dropped, protocol.frame_of(protocol.start_step + horizon) - dropped]


def write_segno_dataset(nbody: Path, protocol: Protocol, splits: dict[str, Trajectories]) -> None:
    _, suffix, folder = SEGNO_SETS[protocol.name]
    target = nbody / "nbody" / folder
    target.mkdir(parents=True, exist_ok=True)
    for split, data in splits.items():
        for key, array in segno_arrays(data, protocol).items():
            np.save(target / f"{key}_{split}_{suffix}.npy", array)


# -- runs ---------------------------------------------------------------------------------------------------

def run_name(protocol: str, horizon: int, seed: int) -> str:
    return f"segno_{protocol}_h{horizon}_seed{seed}"


def run_segno(work: Path, nbody: Path, protocol: Protocol, horizon: int, seed: int, scale: Scale,
              test: Trajectories, data_sha: dict[str, str]) -> dict:
    """One SEGNO model trained by its own code (in a fresh process), scored here; cached by name, and a
    cached run of other settings refused in one line."""
    name = run_name(protocol.name, horizon, seed)
    path, settings = work / "runs" / f"{name}.json", {**asdict(scale), "seeds": None, "data_sha256": data_sha}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("settings") != settings:
            raise ValueError(f"{path} holds a run of other settings; delete it or give another --work")
        return cached
    folder = work / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    dataset, _, dataset_dir = SEGNO_SETS[protocol.name]
    spec = {"nbody": str(nbody), "dataset": dataset, "dataset_dir": dataset_dir,
            "interval": segno_interval(protocol, horizon), "epochs": scale.epochs, "batch_size": scale.batch_size,
            "lr": scale.lr, "weight_decay": scale.weight_decay, "layers": scale.layers, "hidden": scale.hidden,
            "max_samples": scale.train, "test_interval": scale.test_interval, "seed": seed, "out": str(folder),
            "threads": torch.get_num_threads()}
    (folder / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    subprocess.run([sys.executable, str(ADAPTER), str(folder / "spec.json")], check=True, cwd=nbody)
    result = json.loads((folder / "result.json").read_text())
    predicted = torch.from_numpy(np.load(folder / "predictions.npy"))
    truth = test.z[:, protocol.frame_of(protocol.start_step + horizon), 0]
    result |= {"protocol": protocol.name, "horizon": horizon, "seed": seed, "settings": settings,
               "position_mse": float((predicted - truth).square().mean())}
    write_json(path, result)
    return result


# -- report -------------------------------------------------------------------------------------------------

def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for run in runs:
        summary.setdefault(run["protocol"], {}).setdefault(str(run["horizon"]), []).append(run["position_mse"])
    return {protocol: {horizon: {"mean": statistics.mean(values), "std": statistics.pstdev(values), "n": len(values)}
                       for horizon, values in horizons.items()} for protocol, horizons in summary.items()}


def hamnet_side(scale_name: str) -> dict:
    """hamnet's figures on the same files, from nbody_peers.py's results at this scale (empty if absent)."""
    path = RESULTS / f"nbody_peers_{scale_name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def report(scale_name: str, scale: Scale, runs: list[dict], commit: str, command: str) -> None:
    summary, hamnet = summarise(runs), hamnet_side(scale_name)
    lines = [f"# SEGNO's own code against hamnet, on identical N-body files ({scale_name} scale)", "",
             f"`{command}`; SEGNO at {commit[:7]}, {scale.train} / {scale.valid} / {scale.test} trajectories, "
             f"{scale.epochs} epochs, seeds {', '.join(map(str, scale.seeds))}, one thread. Position MSE at "
             "1000 / 1500 / 2000 steps, mean ± std over seeds; hamnet's rows are `nbody_peers.py`'s on the same "
             "files.", ""]
    for protocol, horizons in summary.items():
        lines += [f"## {protocol}", "", "| model | 1000 steps | 1500 steps | 2000 steps |", "|---|---|---|---|"]
        lines.append("| SEGNO (its code) | " + " | ".join(
            f"{horizons[h]['mean']:.4f} ± {horizons[h]['std']:.4f}" if h in horizons else "-"
            for h in ("1000", "1500", "2000")) + " |")
        for model, figures in hamnet.get("summary", {}).get(protocol, {}).items():
            lines.append(f"| {model} (hamnet's nbody_peers) | " + " | ".join(
                f"{figures[h]['mean']:.4f} ± {figures[h]['std']:.4f}" for h in ("1000", "1500", "2000")) + " |")
        for model, values in hamnet.get("published", {}).get(protocol, {}).items():
            lines.append(f"| {model} (published, 10x the data) | " + " | ".join(f"{v:.4f}" for v in values) + " |")
        lines.append("")
    results = {"scale": scale_name, "settings": asdict(scale), "segno_commit": commit, "command": command,
               "summary": summary, "runs": runs}
    write_result_files(RESULTS / f"peers_side_by_side_{scale_name}", results, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segno", type=Path, required=True, help="a git checkout of yliukj/SEGNO")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: the scale's)")
    parser.add_argument("--protocols", nargs="+", choices=sorted(SEGNO_SETS), default=sorted(SEGNO_SETS))
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder (default: benchmarks/work/peers_<scale>)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of the protocol files (default: nbody_peers.py's, benchmarks/work/nbody_peers_<scale>/data)")
    add_piece_arguments(parser)
    args, part, parts = start_pieces(parser)
    scale = SCALES[args.scale]
    if args.seeds:
        scale = Scale(**{**asdict(scale), "seeds": tuple(args.seeds)})
    work = args.work or ROOT / "benchmarks" / "work" / f"peers_{args.scale}"
    data_folder = args.data or ROOT / "benchmarks" / "work" / f"nbody_peers_{args.scale}" / "data"
    commit = segno_commit(args.segno)
    command = "python benchmarks/peers_side_by_side.py --segno PATH --scale " + args.scale
    plan = [(protocol, horizon, seed) for protocol in args.protocols for seed in scale.seeds
            for horizon in PROTOCOLS[protocol].horizons]
    runs = []
    if not args.report:
        nbody = extract_nbody(args.segno, commit, work)
        for protocol_name in args.protocols:
            protocol = PROTOCOLS[protocol_name]
            splits = {split: load_split(protocol_file(data_folder, protocol, split, getattr(scale, split)), protocol, split)
                      for split in ("train", "valid", "test")}
            write_segno_dataset(nbody, protocol, splits)
            sha = {split: file_sha256(protocol_file(data_folder, protocol, split, getattr(scale, split)))
                   for split in splits}
            names = [run_name(p, h, s) for p, h, s in plan if p == protocol_name]
            for name in my_runs(names, part, parts, work / "claims"):
                _, horizon, seed = next((p, h, s) for p, h, s in plan if run_name(p, h, s) == name)
                result = run_segno(work, nbody, protocol, horizon, seed, scale, splits["test"], sha)
                logging.info("%s: position MSE %.4f (SEGNO's own %.4f), %.0f s", name, result["position_mse"],
                             result["own_test_mse"], result["train_seconds"])
    for protocol, horizon, seed in plan:
        path = work / "runs" / f"{run_name(protocol, horizon, seed)}.json"
        if path.exists():
            runs.append(json.loads(path.read_text()))
    if runs:
        report(args.scale, scale, runs, commit, command)


if __name__ == "__main__":
    run_script(main)
