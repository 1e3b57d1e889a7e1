"""The compiled training step against the eager one, on one CPU thread: seconds per 1000 windows and
what compiling costs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compile_speed.py [--processes 2] [--rows NAME ...]

The step timed is ``hamnet.optimisation.TrainingStep`` (window loss, its double backward, the loss read,
Adam's and the schedule's steps), built twice on the same initial weights, ``compile="off"`` and
``"on"``, on the same batches of the same float32 windows. Per row a fresh process with one torch thread
and an empty compiler cache (``TORCHINDUCTOR_CACHE_DIR``), so "compile, cold" is a first compilation
(the loss and its gradient on one batch); a second process on the same cache gives "compile, cached",
what a later run of the same shapes pays. Steps are timed eager and compiled in turn, ``--repeats``
times ``--batches`` batches each after one warm-up batch; the best repeat is reported. Break-even: the
optimiser steps after which the cold compilation has paid for itself. Rows run ``--processes`` at a
time (one per core). Rollout rows time ``hamnet.rollouts.rollout`` (float64 leapfrog) with and without
``compile=True``, seconds per step; their "compile" is the first compiled one-step rollout. Writes
benchmarks/results/compile_speed.{json,md}; ``--merge`` keeps the rows of the existing file that this
run does not measure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

#: name: (system, its settings, model settings, method, substeps, batch, chunk)
ROWS = {
    "springs-t2-128x4": ("springs", {}, dict(name="hlieconv", group="T2", width=128, depth=4), "leapfrog", 1, 50, 5),
    "springs-so2-384x4-rk4": ("springs", {}, dict(name="hlieconv", group="SO2", width=384, depth=4), "rk4", 1, 200, 5),
    "charged5-hlieconv-se3-64x3": ("charged", {"n_particles": 5, "dim": 3},
                                   dict(name="hlieconv", group="SE3", width=64, depth=3), "leapfrog", 4, 100, 2),
    "charged5-egnn-h-64x3": ("charged", {"n_particles": 5, "dim": 3}, dict(name="egnn-h", width=64, depth=3),
                             "leapfrog", 4, 100, 2),
}
#: rollouts (``hamnet.rollouts.rollout``, float64 leapfrog, compile=False / True): name: (model settings,
#: systems, steps timed)
ROLLOUTS = {"rollout-springs-so2-128x4": (dict(name="hlieconv", group="SO2", width=128, depth=4), 300, 100)}


def measure(name: str, batches: int, repeats: int, cached_only: bool) -> dict:
    """In this process (one thread, the cache named by the environment): the row's compile seconds and,
    unless ``cached_only``, best seconds per 1000 windows of the eager and the compiled step."""
    import torch

    from hamnet import systems
    from hamnet.data import Windows
    from hamnet.models import ModelConfig, build_model
    from hamnet.optimisation import TrainingStep
    from hamnet.simulation import generate
    from hamnet.training import TrainConfig

    torch.set_num_threads(1)
    system_name, settings, model, method, substeps, batch, chunk = ROWS[name]
    system = systems.make_system(system_name, **settings)
    data = generate(system, n_systems=max(20, 2 * batch // 5), steps=20, dt=0.01, seed=0)
    data.z, data.params = data.z.float(), {k: v.float() for k, v in data.params.items()}
    model_config = ModelConfig(**model).for_data(data)
    windows = Windows(data, chunk)
    order = windows.batches(batch, torch.Generator().manual_seed(0))
    order = [index for index in order if index.numel() == batch]
    elements = batch * (chunk - 1) * math.prod(data.z.shape[2:])
    total_steps = (batches + 1) * repeats + 2
    dt = float(data.meta["dt"])

    def step_for(choice: str) -> TrainingStep:
        config = TrainConfig(model=model_config, batch_size=batch, lr=1e-3, chunk=chunk, method=method,
                             substeps=substeps, compile=choice)
        return TrainingStep(config, dt, total_steps, model=build_model(model_config, torch.Generator().manual_seed(0)))

    compiled = step_for("on")
    z, params = windows[order[0]]
    started = time.perf_counter()
    torch.autograd.grad(compiled.loss(z, params), list(compiled.model.parameters()), allow_unused=True)
    compile_seconds = time.perf_counter() - started
    if cached_only:
        return {"compile_cached_seconds": compile_seconds}
    eager = step_for("off")
    best = {"eager": math.inf, "compiled": math.inf}
    for repeat in range(repeats):
        for label, step in (("eager", eager), ("compiled", compiled)):
            step(*windows[order[0]], scale=1 / elements)  # warm-up
            started = time.perf_counter()
            for number in range(batches):
                step(*windows[order[1 + (repeat * batches + number) % (len(order) - 1)]], scale=1 / elements)
            best[label] = min(best[label], (time.perf_counter() - started) * 1000 / (batches * batch))
    return {"compile_cold_seconds": compile_seconds, "eager_seconds_per_1000_windows": best["eager"],
            "compiled_seconds_per_1000_windows": best["compiled"], "batch": batch, "chunk": chunk,
            "substeps": substeps, "method": method, "model": model, "system": system_name, **settings}


def measure_rollout(name: str, repeats: int, cached_only: bool) -> dict:
    """In this process: the first compiled rollout's extra seconds (its compilation) and, unless
    ``cached_only``, the best seconds per step of the eager and the compiled rollout."""
    import torch

    from hamnet import systems
    from hamnet.models import ModelConfig, build_model
    from hamnet.rollouts import rollout

    torch.set_num_threads(1)
    model_settings, n_systems, steps = ROLLOUTS[name]
    system = systems.Springs()
    generator = torch.Generator().manual_seed(0)
    params = system.sample_params(n_systems, generator)
    z0 = system.sample_state(params, generator)
    model = build_model(ModelConfig(**model_settings).without_data(), torch.Generator().manual_seed(0)).double()

    def seconds(compile: bool, n: int) -> float:
        started = time.perf_counter()
        rollout(model, z0, params, n, 0.01, method="leapfrog", compile=compile)
        return time.perf_counter() - started

    first = seconds(True, 1)
    if cached_only:
        return {"compile_cached_seconds": first}
    best = {"eager": math.inf, "compiled": math.inf}
    for _ in range(repeats):
        for label in best:
            best[label] = min(best[label], seconds(label == "compiled", steps) / steps)
    return {"compile_cold_seconds": first, "eager_seconds_per_step": best["eager"],
            "compiled_seconds_per_step": best["compiled"], "systems": n_systems, "steps": steps,
            "model": model_settings}


def run_row(name: str, batches: int, repeats: int, processes: int) -> dict:
    """The row in two fresh processes sharing one new compiler cache: cold, then cached."""
    with tempfile.TemporaryDirectory(prefix="hamnet-compile-cache-") as cache:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": cache}
        row = {}
        for cached in (False, True):
            command = [sys.executable, __file__, "--child", name, "--batches", str(batches), "--repeats", str(repeats)]
            result = subprocess.run(command + (["--cached"] if cached else []), env=env, capture_output=True,
                                    text=True, check=False)
            if result.returncode:
                raise SystemExit(f"{name}: the measuring process failed:\n{result.stderr[-3000:]}")
            row.update(json.loads(result.stdout.strip().splitlines()[-1]))
    row["processes"] = processes  # rows measured at a time, each in its own processes
    if name in ROLLOUTS:
        eager, compiled = row["eager_seconds_per_step"], row["compiled_seconds_per_step"]
        row.update(name=name, speedup=eager / compiled)
        print(f"{name}: eager {eager:.4f} s, compiled {compiled:.4f} s per step ({eager / compiled:.2f}x); "
              f"compile {row['compile_cold_seconds']:.0f} s cold, {row['compile_cached_seconds']:.0f} s cached", flush=True)
        return row
    eager, compiled = row["eager_seconds_per_1000_windows"], row["compiled_seconds_per_1000_windows"]
    saved_per_step = (eager - compiled) * row["batch"] / 1000
    row.update(name=name, speedup=eager / compiled,
               break_even_steps=math.ceil(row["compile_cold_seconds"] / saved_per_step) if saved_per_step > 0 else None)
    print(f"{name}: eager {eager:.3f} s, compiled {compiled:.3f} s per 1000 windows ({eager / compiled:.2f}x); "
          f"compile {row['compile_cold_seconds']:.0f} s cold, {row['compile_cached_seconds']:.0f} s cached", flush=True)
    return row


def markdown(report: dict) -> str:
    lines = ["# The compiled training step on one CPU thread", "",
             f"`{report['command']}`; {report['cpu']}, torch {report['torch']}, one thread per process; rows "
             "measured " + " or ".join(sorted({str(row["processes"]) for row in report["rows"]})) + " at a time "
             f"(`processes` per row in the JSON). Seconds per 1000 windows, best of {report['repeats']} "
             f"repeats of {report['batches']} batches; compile: the first batch's loss and gradient, with an empty "
             "compiler cache (cold) and with the cache the cold run left (cached).", "",
             "| row | model | windows | batch | eager s | compiled s | speed-up | compile cold s | compile cached s "
             "| break-even steps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if row["name"] in ROLLOUTS:
            continue
        model = row["model"]
        label = f"{model['name']} {model.get('group', '')} {model['width']}x{model['depth']}".replace("  ", " ")
        windows = f"{row['method']}, {row['chunk']} states, {row['substeps']} sub-steps"
        lines.append(f"| {row['name']} | {label} | {windows} | {row['batch']} | "
                     f"{row['eager_seconds_per_1000_windows']:.3f} | {row['compiled_seconds_per_1000_windows']:.3f} | "
                     f"{row['speedup']:.2f}x | {row['compile_cold_seconds']:.0f} | {row['compile_cached_seconds']:.0f} "
                     f"| {row['break_even_steps']} |")
    rolled = [row for row in report["rows"] if row["name"] in ROLLOUTS]
    if rolled:
        lines += ["", "Rollouts (`hamnet.rollouts.rollout`, float64 leapfrog, springs; `compile=True` compiles the "
                  "forces), seconds per step, best of the repeats:", "",
                  "| row | model | systems | eager s | compiled s | speed-up | compile cold s | compile cached s |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in rolled:
            model = row["model"]
            lines.append(f"| {row['name']} | {model['name']} {model['group']} {model['width']}x{model['depth']} | "
                         f"{row['systems']} | {row['eager_seconds_per_step']:.4f} | {row['compiled_seconds_per_step']:.4f} "
                         f"| {row['speedup']:.2f}x | {row['compile_cold_seconds']:.0f} | {row['compile_cached_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=[*ROWS, *ROLLOUTS], choices=[*ROWS, *ROLLOUTS])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--merge", action="store_true", help="keep the existing file's rows that this run does not measure")
    args = parser.parse_args()
    if args.child:
        measured = (measure_rollout(args.child, args.repeats, args.cached) if args.child in ROLLOUTS
                    else measure(args.child, args.batches, args.repeats, args.cached))
        print(json.dumps(measured))
        return
    import torch

    with ThreadPoolExecutor(args.processes) as pool:
        rows = list(pool.map(lambda name: run_row(name, args.batches, args.repeats, args.processes), args.rows))
    out = Path(args.out)
    if args.merge and (out / "compile_speed.json").exists():
        kept = [row for row in json.loads((out / "compile_speed.json").read_text())["rows"] if row["name"] not in args.rows]
        rows = sorted(kept + rows, key=lambda row: [*ROWS, *ROLLOUTS].index(row["name"]))
        args.rows = [row["name"] for row in rows]
    command = "python benchmarks/compile_speed.py" + ("" if args.rows == [*ROWS, *ROLLOUTS] else
                                                      " --rows " + " ".join(args.rows))
    report = {"command": command, "cpu": f"{platform.machine()} ({os.cpu_count()} cores)", "torch": torch.__version__,
              "batches": args.batches, "repeats": args.repeats, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compile_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "compile_speed.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
