"""Ship a trained run as a pretrained model: measure it, write its model card, strip its checkpoint.

    python benchmarks/pretrained_card.py --name springs-so2 --run RUN --test TEST.npz \
        --data-command "hamnet generate ..." --train-command "hamnet train ..." [--long-steps 10000]

Measures the run's ``best.pt`` on the held-out file TEST.npz: ``hamnet.evaluate`` over the file's
horizon (window MSE, bounded relative error, valid prediction time, divergence, drifts), and a
float64 leapfrog rollout of ``--long-steps`` steps from every test system's first state (divergence,
true-energy drift, momenta). Writes ``hamnet/pretrained/NAME.pt`` (weights, configs and data
description only: no optimiser state), ``hamnet/pretrained/NAME.md`` (the model card, with the
commands that made the model and this one, which re-measures it) and
``benchmarks/results/pretrained_NAME.json``. One thread; the wall time of training is read from the
run's metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from hamnet.checkpoint import PRETRAINED, load_checkpoint, model_from_checkpoint, save_checkpoint
from hamnet.evaluation import evaluate
from hamnet.io import load_trajectories

sys.path.insert(0, str(Path(__file__).parent))
from pieces import long_rollout  # noqa: E402  (shared with the training ablations)

RESULTS = Path(__file__).parent / "results"
SHIPPED_KEYS = ("model_config", "train_config", "model", "epoch", "best_validation", "data")


def card(name: str, args, state: dict, scores: dict, long: dict, train_seconds: float) -> str:
    config, train = state["model_config"], state["train_config"]
    valid, error = scores["valid_prediction_time"], scores["rollout_error"]
    group = f" {config['group']}" if config["name"] == "hlieconv" else ""
    bound = "" if config.get("kernel_bound") is None else f", kernel bound {config['kernel_bound']:.4g}" + (
        f" ({train['kernel_bound_factor']:g} times the training windows' largest kernel input)"
        if train.get("kernel_bound_factor") else "")
    return "\n".join([
        f"# {name}",
        "",
        f"{config['name']}{group} (width {config['width']}, depth {config['depth']}) trained on "
        f"{args.described} (N = {config['n_particles']}, {config['dim']}D): {train['max_windows']} windows, "
        f"{train['epochs']} epochs, {train['method']} windows, lr {train['lr']:g}, batch {train['batch_size']}"
        f"{bound}. Load it by name: "
        f"`hamnet rollout --checkpoint {name} ...`, `hamnet.model_from_checkpoint(\"{name}\")`.",
        "",
        "## How it was made",
        "",
        f"- data: `{args.data_command}`",
        f"- training: `{args.train_command}` ({train_seconds:.0f} s of training, epoch {state['epoch']} kept as "
        f"best by validation MSE {state['best_validation']:.3g})",
        *([f"- chosen: {args.chosen}"] if args.chosen else []),
        f"- this card: `python benchmarks/pretrained_card.py --name {name} --run RUN --test TEST.npz --long-steps "
        f"{long['steps']} ...` with TEST.npz from `{args.test_command}`",
        f"- machine: {platform.machine()} CPU ({os.cpu_count()} cores), one thread, torch {torch.__version__}",
        "",
        f"## Measured on {scores['n_systems']} held-out systems",
        "",
        "| metric | value |",
        "|---|---|",
        f"| window MSE (5 states; the paper code's convention) | {scores['window_mse']:.3g} "
        f"({scores['window_mse_with_initial']:.3g}) |",
        f"| bounded relative error over {len(error['time']) - 1} steps: geometric mean, final | "
        f"{error['geometric_mean_over_time']:.3f}, {error['final']:.3f} |",
        f"| valid prediction time (error <= {valid['threshold']:g}): median [quartiles], time units | "
        f"{valid['median']:.2f} [{valid['q1']:.2f}, {valid['q3']:.2f}]; {valid['never_exceeded']} never exceeded |",
        f"| diverged over {len(error['time']) - 1} steps | {len(scores['divergence']['systems'])} |",
        f"| diverged over {long['steps']:,} float64 leapfrog steps | {long['diverged']} of {long['systems']} |",
        f"| true-energy drift over {long['steps']:,} steps: median, max | {long['energy_drift']['median']:.2e}, "
        f"{long['energy_drift']['max']:.2e} |",
        f"| linear, angular momentum drift over {long['steps']:,} steps (max) | "
        f"{long['linear_momentum_drift']['max']:.1e}, {long['angular_momentum_drift']['max']:.1e} |",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--run", required=True, help="the run folder (its best.pt is shipped)")
    parser.add_argument("--test", required=True, help="held-out trajectory file")
    parser.add_argument("--data-command", required=True)
    parser.add_argument("--test-command", required=True)
    parser.add_argument("--train-command", required=True)
    parser.add_argument("--long-steps", type=int, default=10_000)
    parser.add_argument("--chosen", default="",
                        help="how this run was picked among others, if it was (e.g. the best of several seeds by "
                        "validation MSE), in words")
    parser.add_argument("--described", default="the springs of the paper", help="what the training data is, in words")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    model, state = model_from_checkpoint(run / "best.pt")
    test = load_trajectories(args.test)
    scores = evaluate(model, test)
    long = long_rollout(model, test, args.long_steps)
    train_seconds = sum(json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines())
    full = load_checkpoint(run / "best.pt")
    save_checkpoint(PRETRAINED / f"{args.name}.pt", {key: full[key] for key in SHIPPED_KEYS if key in full})
    (PRETRAINED / f"{args.name}.md").write_text(card(args.name, args, state, scores, long, train_seconds))
    scores["rollout_error"].pop("time"), scores["rollout_error"].pop("mean_over_systems")
    scores["valid_prediction_time"].pop("per_system")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pretrained_{args.name}.json").write_text(json.dumps(
        {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "evaluate": scores, "long_rollout": long,
         "train_seconds": train_seconds}, indent=2) + "\n")
    print((PRETRAINED / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
