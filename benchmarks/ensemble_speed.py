"""K models trained as one ensemble against the same K trained one after the other: seconds per 1000
windows of each member.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensemble_speed.py [--device cuda] [--members 1 4 16]

Per row and K: K :class:`hamnet.optimisation.TrainingStep` of one model configuration (seeds 0..K-1),
timed two ways on the same float32 batches: one after the other (each its own eager step) and together
(:func:`hamnet.ensemble.joint_step`: one joint forward and backward pass, each member's own Adam
step). Both in turn, ``--repeats`` times ``--batches`` batches each after one warm-up batch, the best
repeat reported; speed-up = one after the other / together. One torch thread on a CPU. Rows: the issue's
"4 small models" (the 5-body protocol sets' width-64 models) and the springs model of the paper
table. Writes benchmarks/results/ensemble_speed[_DEVICE].{json,md} (``_cuda`` for a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from hamnet import systems
from hamnet.data import Windows
from hamnet.ensemble import joint_step
from hamnet.models import ModelConfig, build_model
from hamnet.optimisation import TrainingStep
from hamnet.simulation import generate
from hamnet.training import TrainConfig

RESULTS = Path(__file__).parent / "results"

#: name: (system, its settings, model settings, method, substeps, batch, chunk)
ROWS = {
    "charged5-hlieconv-se3-64x3": ("charged", {"n_particles": 5, "dim": 3},
                                   dict(name="hlieconv", group="SE3", width=64, depth=3), "leapfrog", 4, 100, 2),
    "charged5-egnn-h-64x3": ("charged", {"n_particles": 5, "dim": 3}, dict(name="egnn-h", width=64, depth=3),
                             "leapfrog", 4, 100, 2),
    "springs-so2-128x4": ("springs", {}, dict(name="hlieconv", group="SO2", width=128, depth=4), "leapfrog", 1, 50, 5),
}


def measure(name: str, members: int, batches: int, repeats: int, device: str) -> dict:
    """Best seconds per 1000 windows of each member, one after the other and together."""
    system_name, settings, model, method, substeps, batch, chunk = ROWS[name]
    data = generate(systems.make_system(system_name, **settings), n_systems=max(20, 2 * batch // 5), steps=20,
                    dt=0.01, seed=0)
    data.z, data.params = data.z.float().to(device), {k: v.float().to(device) for k, v in data.params.items()}
    model_config = ModelConfig(**model).for_data(data)
    windows = Windows(data, chunk)
    order = [index for index in windows.batches(batch, torch.Generator().manual_seed(0)) if index.numel() == batch]
    scale = 1 / (batch * (chunk - 1) * math.prod(data.z.shape[2:]))
    config = TrainConfig(model=model_config, batch_size=batch, lr=1e-3, chunk=chunk, method=method, substeps=substeps)
    total_steps = (batches + 1) * repeats * 2 + 2

    def steps() -> list[TrainingStep]:
        return [TrainingStep(config, float(data.meta["dt"]), total_steps, device=device,
                             model=build_model(model_config, torch.Generator().manual_seed(seed))) for seed in range(members)]

    def batch_of(number: int, member: int) -> tuple:
        return windows[order[(number + member) % len(order)]]

    alone, together = steps(), steps()
    runs = {"one after the other": lambda n: [step(*batch_of(n, k), scale=scale) for k, step in enumerate(alone)],
            "together": lambda n: joint_step(together, [batch_of(n, k) for k in range(members)], scale=scale)}
    best = {label: math.inf for label in runs}
    for repeat in range(repeats):
        for label, run in runs.items():
            run(0)  # warm-up
            synchronize(device)
            started = time.perf_counter()
            for number in range(batches):
                run(1 + repeat * batches + number)
            synchronize(device)
            best[label] = min(best[label], (time.perf_counter() - started) * 1000 / (batches * batch * members))
    return {"name": name, "members": members, "batch": batch, "chunk": chunk, "method": method, "substeps": substeps,
            "model": model, "system": system_name, "alone_seconds_per_1000_windows": best["one after the other"],
            "together_seconds_per_1000_windows": best["together"],
            "speedup": best["one after the other"] / best["together"]}


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def markdown(report: dict) -> str:
    lines = ["# Ensembles: K models in one joint step", "",
             f"`{report['command']}`; {report['device_name']}, torch {report['torch']}, "
             f"{report['threads']} torch thread(s). Seconds per 1000 windows of each member (the step: window loss, "
             f"double backward, loss read, Adam), best of {report['repeats']} repeats of {report['batches']} batches; "
             "speed-up: one after the other / together.", "",
             "| row | model | windows | batch | K | one after the other s | together s | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        model = row["model"]
        label = f"{model['name']} {model.get('group', '')} {model['width']}x{model['depth']}".replace("  ", " ")
        lines.append(f"| {row['name']} | {label} | {row['method']}, {row['chunk']} states, {row['substeps']} sub-steps | "
                     f"{row['batch']} | {row['members']} | {row['alone_seconds_per_1000_windows']:.3f} | "
                     f"{row['together_seconds_per_1000_windows']:.3f} | {row['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--members", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.rows:
        for members in args.members:
            rows.append(measure(name, members, args.batches, args.repeats, args.device))
            row = rows[-1]
            print(f"{name} K={members}: {row['alone_seconds_per_1000_windows']:.3f} s one after the other, "
                  f"{row['together_seconds_per_1000_windows']:.3f} s together ({row['speedup']:.2f}x)", flush=True)
    cuda = torch.device(args.device).type == "cuda"
    report = {"command": "python benchmarks/ensemble_speed.py" + (f" --device {args.device}" if cuda else ""),
              "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": args.threads, "batches": args.batches, "repeats": args.repeats,
              "rows": rows}
    stem = Path(args.out) / ("ensemble_speed" + ("_cuda" if cuda else ""))
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.md")


if __name__ == "__main__":
    main()
