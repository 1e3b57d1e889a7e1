"""The peers' own code on hamnet's protocol files, scored by hamnet's evaluator beside hamnet's models.

The question: on identical N-body data, how do hamnet's learned Hamiltonians compare with the equivariant
graph networks' own implementations? Published figures are not enough (the peers' trackers report
re-runs far from them), so this runs the peers' public code, each from its own checkout given by path
(yliukj/SEGNO and vgsatorras/egnn at the commits in :data:`PEERS`; never vendored, never a dependency),
on the files ``benchmarks/nbody_peers.py`` trains hamnet on: the same training trajectories,
validation trajectories and test states (the same generator, seeds and sizes, in the same cache folder
by default).

What each side sees. A peer (``peers_adapter.py`` says exactly which parts are its code): one model per
horizon, trained on one (start frame, target frame) pair per training trajectory, its best validation
epoch kept, at its README's settings (:data:`SCALES`); EGNN's loader knows the charged set at 1000 steps
only. hamnet (``nbody_peers.py``): one model for every horizon, trained on windows of 5 consecutive
frames of the same training trajectories. Both are scored on the same test states by one evaluator:
position MSE over test systems, particles and coordinates, in float64, at 1000, 1500 and 2000 protocol
steps from the start frame (EGNN's frame 30, hamnet's frame 31, on the charged set; the initial state on
SEGNO's gravity set). Conversion: the peers read positions and velocities (``p / m``), charges and their
outer product as edges; on the charged set EGNN's stored frame ``k`` is the state after ``100 (k + 1)``
steps, so hamnet's frame 0 is dropped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers_side_by_side.py --segno PATH --egnn PATH --scale small &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers_side_by_side.py --segno PATH --egnn PATH --scale small &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers_side_by_side.py --segno PATH --egnn PATH --scale small --report

``PATH`` is a git checkout (a work tree or a bare repository); the code is extracted at the pinned commit
into the work folder. Several processes share the runs (``pieces.py``); each run (one peer, protocol,
horizon and seed: about 4 minutes for SEGNO at the small scale on one thread) is kept under
``<work>/runs/`` and skipped once done. Writes ``benchmarks/results/peers_side_by_side_<scale>.{md,json}``.
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.protocols import PROTOCOLS, Protocol, check_protocol, generate_protocol
from hamnet.provenance import file_sha256

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pieces import add_piece_arguments, my_runs, run_script, start_pieces, write_json, write_result_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ADAPTER = Path(__file__).resolve().parent / "peers_adapter.py"
#: seeds of the data splits: nbody_peers.py's, so both benchmarks use the same files
DATA_SEEDS = {"train": 43, "valid": 44, "test": 45}


@dataclass(frozen=True)
class Peer:
    """A peer's public code: where it lives, what of it runs, and which sets and horizons its loader knows."""

    name: str
    label: str
    repository: str
    commit: str  # the commit whose code is run (its README's commands are at this commit)
    entry: str  # a file the commit must have, to tell its repository from another
    paths: tuple[str, ...]  # what is extracted (a whole archive of SEGNO fails on a missing large file)
    code: str  # the folder, inside the extraction, that the adapter runs in
    files: dict  # protocol -> (folder of the loader's files, relative to ``code``; the files' suffix)
    horizons: tuple[int, ...] | None  # None: the protocol's three


PEERS = {
    "segno": Peer("segno", "SEGNO (its code)", "yliukj/SEGNO", "46e748b", "N-body/main.py", ("N-body",), "N-body",
                  {"egnn-charged5": ("nbody/dataset", "charged5_initvel1small"),
                   "segno-gravity5": ("nbody/dataset_gravity", "gravity5_initvel1small")}, None),
    # EGNN's loader knows the charged set and the 1000-step horizon only (frames 30 -> 40), as its paper
    "egnn": Peer("egnn", "EGNN (its code)", "vgsatorras/egnn", "e9ca6c0", "main_nbody.py",
                 ("main_nbody.py", "n_body_system", "models"), ".",
                 {"egnn-charged5": ("n_body_system/dataset", "charged5_initvel1small")}, (1000,)),
}


@dataclass(frozen=True)
class Training:
    """A peer's training settings: its scripts' flags."""

    epochs: int
    layers: int
    hidden: int
    lr: float
    test_interval: int
    batch_size: int = 100
    weight_decay: float = 1e-12


@dataclass(frozen=True)
class Scale:
    """Data sizes per split, and each peer's training settings."""

    train: int
    valid: int
    test: int
    training: dict  # peer name -> Training
    seeds: tuple[int, ...] = (0, 1, 2)


SCALES = {
    # SEGNO at its README's settings; EGNN at its own sweep's for egnn_vel at the nearest larger training
    # size (2000 epochs at 400 samples, a check every 10000 / samples epochs)
    "small": Scale(train=300, valid=200, test=300,
                   training={"segno": Training(epochs=500, layers=8, hidden=64, lr=5e-3, test_interval=5),
                             "egnn": Training(epochs=2000, layers=4, hidden=64, lr=5e-4, test_interval=33)}),
    # the papers' sizes and their READMEs' commands
    "full": Scale(train=3000, valid=2000, test=2000,
                  training={"segno": Training(epochs=500, layers=8, hidden=64, lr=5e-3, test_interval=5),
                            "egnn": Training(epochs=10000, layers=4, hidden=64, lr=5e-4, test_interval=5)}),
    "smoke": Scale(train=100, valid=100, test=100, seeds=(0,),
                   training={"segno": Training(epochs=2, layers=2, hidden=16, lr=5e-3, test_interval=1),
                             "egnn": Training(epochs=2, layers=2, hidden=16, lr=5e-4, test_interval=1)}),
}


class PeerCheckoutError(ValueError):
    """A peer checkout that is missing, not a git repository, or at another commit."""


def peer_commit(peer: Peer, checkout: Path, commit: str | None = None) -> str:
    """The full hash of ``commit`` (default: the peer's pinned one) in ``checkout``, once the checkout is shown
    to be the peer's at that commit (a work tree or a bare repository); a one-line :class:`PeerCheckoutError`
    otherwise."""
    commit, flag = commit or peer.commit, f"--{peer.name} {checkout}"
    if not checkout.is_dir():
        raise PeerCheckoutError(f"{flag}: no such folder; give a git checkout of {peer.repository}")
    head = _git(checkout, "rev-parse", "HEAD")
    if head is None:
        raise PeerCheckoutError(f"{flag}: not a git checkout; clone {peer.repository} there (commit {peer.commit})")
    wanted = _git(checkout, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if wanted != head:
        raise PeerCheckoutError(f"{flag}: HEAD is {head[:7]}, not {peer.repository}'s {commit}; check out {commit} "
                                "(the figures are for that commit's code)")
    if _git(checkout, "cat-file", "-e", f"{wanted}:{peer.entry}") is None:
        raise PeerCheckoutError(f"{flag}: commit {wanted[:7]} has no {peer.entry}; is it {peer.repository}?")
    return wanted


def _git(checkout: Path, *args: str) -> str | None:
    done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def extract(peer: Peer, checkout: Path, commit: str, work: Path) -> Path:
    """The folder the peer's code runs in: its ``paths`` at ``commit``, extracted once into ``work``."""
    target = work / f"{peer.name}-{commit[:7]}"
    if not (target / peer.entry).exists():
        archive = subprocess.run(["git", "-C", str(checkout), "archive", "--format=tar", commit, *peer.paths],
                                 capture_output=True, check=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target / peer.code


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


def write_peer_files(code: Path, peer: Peer, protocol: Protocol, splits: dict[str, Trajectories]) -> None:
    """The arrays of :func:`segno_arrays` where the peer's loader reads them (EGNN's and SEGNO's loaders
    read the same layout and names)."""
    folder, suffix = peer.files[protocol.name]
    target = code / folder
    target.mkdir(parents=True, exist_ok=True)
    for split, data in splits.items():
        for key, array in segno_arrays(data, protocol).items():
            np.save(target / f"{key}_{split}_{suffix}.npy", array)


# -- runs ---------------------------------------------------------------------------------------------------

def run_name(peer: str, protocol: str, horizon: int, seed: int) -> str:
    return f"{peer}_{protocol}_h{horizon}_seed{seed}"


def run_peer(work: Path, code: Path, peer: Peer, protocol: Protocol, horizon: int, seed: int, scale: Scale,
             test: Trajectories, data_sha: dict[str, str]) -> dict:
    """One peer model trained by its own code (in a fresh process), scored here; cached by name, and a
    cached run of other settings refused in one line."""
    name = run_name(peer.name, protocol.name, horizon, seed)
    training = scale.training[peer.name]
    path = work / "runs" / f"{name}.json"
    settings = {"peer": peer.name, "commit": peer.commit, "train": scale.train, "valid": scale.valid,
                "test": scale.test, **asdict(training), "data_sha256": data_sha}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("settings") != settings:
            raise ValueError(f"{path} holds a run of other settings; delete it or give another --work")
        return cached
    folder = work / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {**asdict(training), "max_samples": scale.train, "seed": seed, "out": str(folder.resolve()),
            "threads": torch.get_num_threads(), "interval": segno_interval(protocol, horizon),
            "dataset": "charged" if protocol.name == "egnn-charged5" else "gravity",
            "dataset_dir": Path(peer.files[protocol.name][0]).name}
    (folder / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    subprocess.run([sys.executable, str(ADAPTER), peer.name, str(folder.resolve() / "spec.json")], check=True,
                   cwd=code)
    result = json.loads((folder / "result.json").read_text())
    predicted = torch.from_numpy(np.load(folder / "predictions.npy"))
    truth = test.z[:, protocol.frame_of(protocol.start_step + horizon), 0]
    result |= {"peer": peer.name, "protocol": protocol.name, "horizon": horizon, "seed": seed, "settings": settings,
               "position_mse": float((predicted - truth).square().mean())}
    write_json(path, result)
    return result


# -- report -------------------------------------------------------------------------------------------------

def summarise(runs: list[dict]) -> dict:
    """protocol -> peer -> horizon -> mean, standard deviation and count of the position MSE over seeds."""
    grouped: dict = {}
    for run in runs:
        grouped.setdefault(run["protocol"], {}).setdefault(run["peer"], {}).setdefault(str(run["horizon"]), []).append(
            run["position_mse"])
    return {protocol: {peer: {horizon: {"mean": statistics.mean(values), "std": statistics.pstdev(values),
                                        "n": len(values)} for horizon, values in horizons.items()}
                       for peer, horizons in peers.items()} for protocol, peers in grouped.items()}


def hamnet_side(data_folder: Path) -> tuple[dict, dict]:
    """hamnet's figures on these very files: ``nbody_peers.py``'s scores in the work folder that holds
    ``data_folder`` (protocol -> model -> horizon -> mean, std, n), and the published figures it records."""
    grouped: dict = {}
    for path in sorted((data_folder.parent / "scores").glob("*.json")):
        score = json.loads(path.read_text())
        for horizon, value in zip(("1000", "1500", "2000"), score["mse"]):
            grouped.setdefault(score["protocol"], {}).setdefault(score["model"], {}).setdefault(horizon, []).append(value)
    summary = {protocol: {model: {h: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "n": len(v)}
                                  for h, v in horizons.items()} for model, horizons in models.items()}
               for protocol, models in grouped.items()}
    published = RESULTS / "nbody_peers_small.json"
    return summary, json.loads(published.read_text()).get("published", {}) if published.exists() else {}


def _cells(figures: dict) -> str:
    return " | ".join(f"{figures[h]['mean']:.4f} ± {figures[h]['std']:.4f}" if h in figures else "-"
                      for h in ("1000", "1500", "2000"))


def report(scale_name: str, scale: Scale, runs: list[dict], commits: dict[str, str], command: str,
           data_folder: Path) -> None:
    summary, (hamnet, published) = summarise(runs), hamnet_side(data_folder)
    lines = [f"# The peers' own code against hamnet, on identical N-body files ({scale_name} scale)", "",
             f"`{command}`: {scale.train} / {scale.valid} / {scale.test} trajectories, seeds "
             f"{', '.join(map(str, scale.seeds))}, one thread; "
             + "; ".join(f"{PEERS[name].repository} at {commit[:7]}, {asdict(scale.training[name])}"
                         for name, commit in commits.items())
             + ". Position MSE at 1000 / 1500 / 2000 steps, mean ± std over seeds, scored by hamnet's evaluator; "
             "hamnet's rows are `nbody_peers.py`'s runs on these very files (its cache, where they were read from), "
             "with their seed counts.",
             ""]
    for protocol, peers in summary.items():
        lines += [f"## {protocol}", "", "| model | 1000 steps | 1500 steps | 2000 steps |", "|---|---|---|---|"]
        lines += [f"| {PEERS[name].label} | {_cells(figures)} |" for name, figures in peers.items()]
        lines += [f"| {model} (hamnet, {figures['1000']['n']} seeds) | {_cells(figures)} |"
                  for model, figures in hamnet.get(protocol, {}).items()]
        lines += [f"| {model} (published, 10x the data) | " + " | ".join(f"{v:.4f}" for v in values) + " |"
                  for model, values in published.get(protocol, {}).items()]
        lines.append("")
    results = {"scale": scale_name, "settings": asdict(scale), "commits": commits, "command": command,
               "summary": summary, "hamnet": hamnet, "published": published,
               "data_sha256": {run["protocol"]: run["settings"]["data_sha256"] for run in runs}, "runs": runs}
    write_result_files(RESULTS / f"peers_side_by_side_{scale_name}", results, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for peer in PEERS.values():
        parser.add_argument(f"--{peer.name}", type=Path, help=f"a git checkout of {peer.repository} (at {peer.commit})")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: the scale's)")
    parser.add_argument("--protocols", nargs="+", choices=sorted(PEERS["segno"].files),
                        default=sorted(PEERS["segno"].files))
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: benchmarks/work/peers_<scale>)")
    parser.add_argument("--data", type=Path, default=None, help="folder of the protocol files (default: nbody_peers.py's, "
                        "benchmarks/work/nbody_peers_<scale>/data)")
    add_piece_arguments(parser)
    args, part, parts = start_pieces(parser)
    scale = SCALES[args.scale]
    if args.seeds:
        scale = replace(scale, seeds=tuple(args.seeds))
    work = args.work or ROOT / "benchmarks" / "work" / f"peers_{args.scale}"
    data_folder = args.data or ROOT / "benchmarks" / "work" / f"nbody_peers_{args.scale}" / "data"
    checkouts = {name: getattr(args, name) for name in PEERS if getattr(args, name) is not None}
    if not checkouts:
        raise ValueError("give at least one peer checkout: " + ", ".join(f"--{name} PATH" for name in PEERS))
    commits = {name: peer_commit(PEERS[name], checkout) for name, checkout in checkouts.items()}
    plan = [(name, protocol, horizon, seed) for name in checkouts for protocol in args.protocols
            if protocol in PEERS[name].files for seed in scale.seeds
            for horizon in PEERS[name].horizons or PROTOCOLS[protocol].horizons]
    if not args.report:
        run_plan(plan, checkouts, commits, scale, work, data_folder, part, parts)
    paths = [work / "runs" / f"{run_name(*key)}.json" for key in plan]
    runs = [json.loads(path.read_text()) for path in paths if path.exists()]
    if runs:
        command = "python benchmarks/peers_side_by_side.py " + " ".join(f"--{name} PATH" for name in checkouts) \
            + f" --scale {args.scale}"
        report(args.scale, scale, runs, commits, command, data_folder)


def run_plan(plan: list[tuple], checkouts: dict[str, Path], commits: dict[str, str], scale: Scale, work: Path,
             data_folder: Path, part: int, parts: int) -> None:
    """This process's share of ``plan`` (peer, protocol, horizon, seed), each run once over all processes."""
    codes = {name: extract(PEERS[name], checkout, commits[name], work) for name, checkout in checkouts.items()}
    for protocol_name in sorted({protocol for _, protocol, _, _ in plan}):
        protocol = PROTOCOLS[protocol_name]
        paths = {split: protocol_file(data_folder, protocol, split, getattr(scale, split))
                 for split in ("train", "valid", "test")}
        splits = {split: load_split(path, protocol, split) for split, path in paths.items()}
        sha = {split: file_sha256(path) for split, path in paths.items()}
        for name, code in codes.items():
            if protocol_name in PEERS[name].files:
                write_peer_files(code, PEERS[name], protocol, splits)
        mine = {run_name(*key): key for key in plan if key[1] == protocol_name}
        for run in my_runs(list(mine), part, parts, work / "claims"):
            name, _, horizon, seed = mine[run]
            result = run_peer(work, codes[name], PEERS[name], protocol, horizon, seed, scale, splits["test"], sha)
            logging.info("%s: position MSE %.4f (its own %.4f), %.0f s", run, result["position_mse"],
                         result["own_test_mse"], result["train_seconds"])


if __name__ == "__main__":
    run_script(main)
