"""The peers' own code on hamnet's protocol files, scored by hamnet's evaluator beside hamnet's models.

The question: on identical N-body data, how do hamnet's learned Hamiltonians compare with the equivariant
graph networks' own implementations? Published figures are not enough (the peers' trackers report
re-runs far from them), so this runs the peers' public code, each from its own checkout given by path
(yliukj/SEGNO and vgsatorras/egnn at the commits in ``pieces.PEERS``; never vendored, never a dependency),
on the files ``benchmarks/nbody_peers.py`` trains hamnet on: the same training trajectories,
validation trajectories and test states (the same generator, seeds and sizes, in the same cache folder
by default).

What each side sees. A peer (``peers_adapter.py`` says exactly which parts are its code): one model per
horizon, trained on one (start frame, target frame) pair per training trajectory, its best validation
epoch kept, at its README's settings (``pieces.PEER_SCALES``); EGNN's loader knows the charged set at 1000 steps
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
import json
import logging
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path

from hamnet.protocols import PROTOCOLS
from hamnet.provenance import file_sha256

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pieces import (PEER_SCALES, PEERS, PeerScale, add_piece_arguments, extract, load_split, my_runs,  # noqa: E402
                    peer_commit, protocol_file, run_name, run_peer, run_script, start_pieces, write_peer_files,
                    write_result_files)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


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


def report(scale_name: str, scale: PeerScale, runs: list[dict], commits: dict[str, str], command: str,
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
    parser.add_argument("--scale", choices=sorted(PEER_SCALES), default="small")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: the scale's)")
    parser.add_argument("--protocols", nargs="+", choices=sorted(PEERS["segno"].files),
                        default=sorted(PEERS["segno"].files))
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: benchmarks/work/peers_<scale>)")
    parser.add_argument("--data", type=Path, default=None, help="folder of the protocol files (default: nbody_peers.py's, "
                        "benchmarks/work/nbody_peers_<scale>/data)")
    add_piece_arguments(parser)
    args, part, parts = start_pieces(parser)
    scale = PEER_SCALES[args.scale]
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


def run_plan(plan: list[tuple], checkouts: dict[str, Path], commits: dict[str, str], scale: PeerScale, work: Path,
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
