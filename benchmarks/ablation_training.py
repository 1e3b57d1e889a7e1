"""Ablation: which training settings keep learned springs rollouts inside the data (and so finite)?

    python benchmarks/ablation_training.py --train springs-train.npz --test springs-test.npz \
        [--group T2] [--chunk 5] [--max-windows 3000] [--seed 0] [--batch-size 200] [--kernel-bound none] \
        [--label NAME]

Trains HLieConv with the settings the shipped springs models were first made with (width 128, depth 4,
30 epochs, leapfrog windows, lr 1e-2, batch 200; ``--batch-size 50 --kernel-bound auto`` are ``hamnet
train``'s defaults now), changing only what the flags say, and measures it as
``benchmarks/pretrained_card.py`` does: ``hamnet.evaluate`` on the test file and a 10,000-step float64
leapfrog rollout of every test system (divergence, true-energy drift, momenta). Longer windows at equal
compute: ``--chunk 20 --max-windows 750`` integrates as many leapfrog steps per epoch (750 x 19) as the
shipped ``--chunk 5 --max-windows 3000`` (3000 x 4), but every window spans 0.19 time units instead of
0.04, so a learned flow that starts to leave the data within a window is penalised. ``--seed`` alone
measures how much the figures move from one seed to the next. ``--init-from springs-t2 --chunk 20 --epochs 10
--lr 1e-3`` is a curriculum: the shipped model, finished on longer windows. One thread. Resumable: the run folder is
``benchmarks/work/ablation_training/LABEL``; writes ``benchmarks/results/ablation_training_LABEL.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hamnet.checkpoint import model_from_checkpoint
from hamnet.evaluation import evaluate
from hamnet.io import load_trajectories
from hamnet.paths import atomic_path
from hamnet.models import ModelConfig
from hamnet.training import DEFAULT_KERNEL_BOUND_FACTOR, TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from pieces import long_rollout  # noqa: E402  (the pretrained cards' long rollout)

HERE = Path(__file__).parent
#: the batch the shipped models were first made with; runs at it keep their labels from before --batch-size
FIRST_BATCH = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--group", default="T2")
    parser.add_argument("--chunk", type=int, default=5, help="states per training window")
    parser.add_argument("--max-windows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=FIRST_BATCH,
                        help=f"windows per optimiser step (default {FIRST_BATCH}, the shipped models' first setting; "
                        "`hamnet train`'s default is 50)")
    parser.add_argument("--init-from", default=None,
                        help="start from this checkpoint's weights (a curriculum: e.g. springs-t2, then longer windows)")
    parser.add_argument("--kernel-bound", default="none",
                        help="HLieConv's kernel bound: a number c (inputs pass through c tanh(x / c)), 'auto' (hamnet "
                        "train's default: twice the training data's largest kernel input) or 'none' (default here, "
                        "so that the runs before the bound existed keep their labels)")
    parser.add_argument("--long-steps", type=int, default=10_000)
    parser.add_argument("--label", default=None, help="name of the run (default: from the settings)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bound = None if args.kernel_bound in ("none", "auto") else float(args.kernel_bound)
    # every training setting that differs from the first runs' defaults is in the name (those runs keep their
    # labels), so a cached run trained otherwise is never taken for this one; --test and --long-steps only
    # measure, and a rerun with others rewrites the results file
    schedule_changed = args.init_from or (args.epochs, args.lr) != (parser.get_default("epochs"),
                                                                     parser.get_default("lr"))
    label = args.label or f"{args.group}_chunk{args.chunk}_windows{args.max_windows}_seed{args.seed}" + (
        f"_from-{Path(args.init_from).stem}" if args.init_from else "") + (
        f"_epochs{args.epochs}_lr{args.lr:g}" if schedule_changed else "") + (
        f"_bound{args.kernel_bound}" if args.kernel_bound != "none" else "") + (
        f"_batch{args.batch_size}" if args.batch_size != FIRST_BATCH else "")
    config = TrainConfig(model=ModelConfig(name="hlieconv", group=args.group, width=128, depth=4,
                                           feature_keys=("m", "k"), kernel_bound=bound),
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, method="leapfrog", chunk=args.chunk,
                         max_windows=args.max_windows, seed=args.seed, init_from=args.init_from,
                         kernel_bound_factor=DEFAULT_KERNEL_BOUND_FACTOR if args.kernel_bound == "auto" else None)
    run = HERE / "work" / "ablation_training" / label
    metrics = run / "metrics.jsonl"
    if not (metrics.exists() and len(metrics.read_text().splitlines()) >= config.epochs):
        train(config, args.train, run, resume=(run / "last.pt").exists())
    train_seconds = sum(json.loads(line)["seconds"] for line in metrics.read_text().splitlines() if line.strip())
    model, state = model_from_checkpoint(run / "best.pt")
    test = load_trajectories(args.test)
    started = time.perf_counter()
    scores = evaluate(model, test, window_method="leapfrog")
    long = long_rollout(model, test, args.long_steps)
    result = {"label": label, "group": args.group, "chunk": args.chunk, "max_windows": args.max_windows,
              "seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
              "init_from": args.init_from, "kernel_bound": model.config.kernel_bound, "best_epoch": state["epoch"],
              "train_seconds": round(train_seconds, 1),
              "window_mse_5_states": scores["window_mse"], "rollout_error_final": scores["rollout_error"]["final"],
              "valid_prediction_time_median": scores["valid_prediction_time"]["median"],
              "diverged_500": len(scores["divergence"]["systems"]), "long_rollout": long,
              "measure_seconds": round(time.perf_counter() - started, 1),
              "command": " ".join(["python", "benchmarks/ablation_training.py", *sys.argv[1:]])}
    out = HERE / "results" / f"ablation_training_{label}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
