"""Wall time for HLieConv T(2) to reach the reference's 30-epoch test error on springs.

    python benchmarks/time_to_accuracy.py [--lr 0.01] [--threads 1]

The reference implementation, at width 128, 4 layers, 1000 training windows, batch 200, reached a
5-step window test MSE of 0.0076 (its convention: the initial state included) after 30 epochs at
9.0 s per 1000 windows, i.e. 270 s of training (measured on a 2-core CPU, one thread;
quoted, not re-run here). This script trains hamnet's HLieConv
T(2) of the same size on 1000 windows with a 30-epoch cosine schedule, one epoch at a time, scores
the test windows after each epoch (scoring time not counted), and reports the training wall time at
which the test error first falls below 0.0076. Goal: at most a third of 270 s.
Writes benchmarks/results/time_to_accuracy_<method>.md and .json (``--method leapfrog`` trains with one
force evaluation per step instead of rk4's four).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import hamnet
from hamnet.data import Windows
from hamnet.loss import window_mse
from systems import Springs

RESULTS = Path(__file__).parent / "results"
REFERENCE_MSE = 0.0076
REFERENCE_SECONDS = 30 * 9.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--method", default="rk4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    system = Springs()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        hamnet.save_trajectories(work / "train.npz", hamnet.generate(system, n_systems=1000, steps=500, dt=0.01, seed=1))
        test = hamnet.generate(system, n_systems=100, steps=500, dt=0.01, seed=2)
        test_windows = Windows(test, 5, max_windows=2000, seed=0)
        model = hamnet.ModelConfig(name="hlieconv", group="T2", width=128, depth=4)
        config = hamnet.TrainConfig(model=model, epochs=args.epochs, batch_size=200, lr=args.lr, method=args.method,
                                    seed=args.seed, max_windows=1000, validation=0.05, test=0.0,
                                    validation_windows=200)
        history, trained_seconds, reached = [], 0.0, None
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            hamnet.train(config, work / "train.npz", work / "run", resume=epoch > 1, stop_after_epochs=1)
            trained_seconds += time.perf_counter() - start
            trained, _ = hamnet.model_from_checkpoint(work / "run" / "last.pt")
            mse = window_mse(trained, test_windows, 0.01)["mse_with_initial"]
            history.append({"epoch": epoch, "train_seconds": round(trained_seconds, 1), "test_mse_with_initial": mse})
            print(history[-1], flush=True)
            if reached is None and mse < REFERENCE_MSE:
                reached = history[-1]
                break

    load = os.getloadavg()[0]
    result = {"lr": args.lr, "method": args.method, "threads": args.threads, "seed": args.seed,
              "load_average_at_end": round(load, 2), "reached": reached, "history": history,
              "reference_seconds": REFERENCE_SECONDS, "reference_mse": REFERENCE_MSE}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"time_to_accuracy_{args.method}.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = (f"reached {reached['test_mse_with_initial']:.4f} after {reached['epoch']} epochs and "
               f"{reached['train_seconds']:.0f} s of training: {REFERENCE_SECONDS / reached['train_seconds']:.1f}x "
               f"less time than the reference's {REFERENCE_SECONDS:.0f} s (goal: 3x)"
               if reached else f"did not reach {REFERENCE_MSE} in {args.epochs} epochs")
    lines = [
        "# Time to the reference's accuracy: HLieConv T(2), width 128, 1000 windows",
        "",
        f"Command: `python benchmarks/time_to_accuracy.py --lr {args.lr} --method {args.method} --threads {args.threads}`. "
        f"{args.threads} thread(s), float32, batch 200, {args.method} over 5-state windows, Adam lr {args.lr} with a "
        f"{args.epochs}-epoch cosine schedule, seed {args.seed}. Test: 2000 windows of 100 held-out systems, MSE in the "
        f"reference's convention (initial state included). Load average at the end: {load:.1f} (2 cores).",
        "",
        f"Result: {verdict}.",
        "",
        "| epoch | training seconds | test MSE (initial included) |",
        "|---|---|---|",
        *[f"| {h['epoch']} | {h['train_seconds']} | {h['test_mse_with_initial']:.4f} |" for h in history],
    ]
    (RESULTS / f"time_to_accuracy_{args.method}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
