"""Training and rollout speed on a CUDA GPU against the CPU of the same machine, in one process.

    python benchmarks/gpu_speed.py [--out benchmarks/results] [--windows-cpu 400] [--windows-gpu 2000]

The training step timed is the one ``hamnet train`` runs, ``hamnet.optimisation.TrainingStep``
(``hamnet.loss.WindowLoss`` through torchdiffeq over 5-state windows, forward, double backward, the loss
read and checked, an Adam step at lr 1e-3 and the cosine schedule's step, batch 200, float32,
springs N = 6 in 2D), for HLieConv at the paper's width 384 and at width 128, with rk4 windows (the
paper's) and leapfrog windows. The rollout timed is HLieConv SO(2) in float64 with leapfrog, as
``hamnet rollout`` runs it. Each figure is the best of ``--repeats`` after a warm-up; the CPU uses
all its cores (the thread count is reported). On the GPU each training configuration is also timed
with the step compiled (``TrainConfig(compile="on")``: ``torch.compile`` with CUDA graphs), with the
seconds its first compilation took. The same comparison on one CPU thread is
``benchmarks/compile_speed.py``. Writes gpu_speed.json and gpu_speed.md to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from hamnet import systems
from hamnet.data import Windows
from hamnet.models import ModelConfig, build_model
from hamnet.rollouts import rollout
from hamnet.simulation import generate
from hamnet.optimisation import TrainingStep
from hamnet.training import TrainConfig

BATCH, CHUNK, DT = 200, 5, 0.01
TRAIN_CONFIGS = (("T2", 128, 4), ("T2", 384, 4), ("SO2", 384, 4))
METHODS = ("rk4", "leapfrog")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def training_seconds(group: str, width: int, depth: int, method: str, device: str, windows: int,
                     repeats: int, data, batch: int = BATCH, compile: str = "off") -> float:
    """Best seconds per 1000 windows of the training step on ``device``, ``batch`` windows a step
    (``compile="on"``: compiled; its compilation falls in the first warm-up batch, not in the figure)."""
    n_batches = max(1, windows // batch)
    config = TrainConfig(model=ModelConfig(name="hlieconv", group=group, width=width, depth=depth),
                         batch_size=batch, lr=1e-3, chunk=CHUNK, method=method, seed=0, compile=compile)
    train_step = TrainingStep(config, DT, total_steps=repeats * (n_batches + 1), device=device)
    all_windows = Windows(data, CHUNK)
    batches = [index for index in all_windows.batches(batch, torch.Generator().manual_seed(0))
               if index.numel() == batch]  # full batches: the compiled step's shape
    elements = batch * (CHUNK - 1) * math.prod(data.z.shape[2:])

    def step(index) -> None:
        train_step(*all_windows[index], scale=1 / elements)

    best = math.inf
    for repeat in range(repeats):
        step(batches[0])  # warm-up: allocator, kernels, autotuning
        synchronize(device)
        start = time.perf_counter()
        for number in range(n_batches):
            step(batches[(1 + repeat * n_batches + number) % len(batches)])
        synchronize(device)
        best = min(best, (time.perf_counter() - start) * 1000 / (n_batches * batch))
    return best


def rollout_seconds(device: str, n_systems: int, steps: int, repeats: int) -> float:
    """Best seconds of a float64 leapfrog rollout of HLieConv SO(2), width 128, on ``device``."""
    system = systems.Springs()
    generator = torch.Generator().manual_seed(0)
    params = system.sample_params(n_systems, generator)
    z0 = system.sample_state(params, generator)
    model = build_model(ModelConfig(name="hlieconv", group="SO2", width=128, depth=4),
                        torch.Generator().manual_seed(0)).double().to(device)
    params = {k: v.to(device) for k, v in params.items()}
    best = math.inf
    for _ in range(repeats + 1):  # the first is a warm-up
        synchronize(device)
        start = time.perf_counter()
        rollout(model, z0.to(device), params, steps, DT, method="leapfrog")
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--windows-cpu", type=int, default=400, help="training windows timed per repeat on the CPU")
    parser.add_argument("--windows-gpu", type=int, default=2000, help="training windows timed per repeat on the GPU")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rollout-systems", type=int, default=200)
    parser.add_argument("--rollout-steps", type=int, default=200)
    parser.add_argument("--batch-scan", action="store_true",
                        help="only time HLieConv SO(2) 384x4 rk4 on the GPU at several batch sizes (is it launch-bound?)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py needs a CUDA device")
    data = generate(systems.Springs(), n_systems=400 if args.batch_scan else 200, steps=50, dt=DT, seed=0)
    data.z, data.params = data.z.float(), {k: v.float() for k, v in data.params.items()}
    on_gpu = type(data)(data.t, data.z.cuda(), {k: v.cuda() for k, v in data.params.items()}, data.meta)
    if args.batch_scan:
        scan = {batch: training_seconds("SO2", 384, 4, "rk4", "cuda", 4 * batch, args.repeats, on_gpu, batch)
                for batch in (200, 800, 2000)}
        for batch, seconds in scan.items():
            print(f"SO2 384x4 rk4 on the GPU, batch {batch}: {seconds:.3f} s per 1000 windows", flush=True)
        (Path(args.out) / "gpu_batch_scan.json").write_text(json.dumps(scan, indent=2) + "\n")
        return
    rows = []
    for group, width, depth in TRAIN_CONFIGS:
        for method in METHODS:
            cpu = training_seconds(group, width, depth, method, "cpu", args.windows_cpu, args.repeats, data)
            gpu = training_seconds(group, width, depth, method, "cuda", args.windows_gpu, args.repeats, on_gpu)
            started = time.perf_counter()
            compiled = training_seconds(group, width, depth, method, "cuda", args.windows_gpu, args.repeats, on_gpu,
                                        compile="on")
            rows.append({"group": group, "width": width, "depth": depth, "method": method,
                         "cpu_seconds_per_1000_windows": cpu, "gpu_seconds_per_1000_windows": gpu,
                         "speedup": cpu / gpu, "gpu_compiled_seconds_per_1000_windows": compiled,
                         "compiled_speedup": gpu / compiled,
                         "compile_and_time_seconds": time.perf_counter() - started})
            print(f"train {group} {width}x{depth} {method}: CPU {cpu:.2f} s, GPU {gpu:.3f} s, compiled {compiled:.3f} s "
                  f"per 1000 windows ({cpu / gpu:.1f}x, compiled {gpu / compiled:.1f}x eager)", flush=True)
    cpu_roll = rollout_seconds("cpu", args.rollout_systems, args.rollout_steps, args.repeats)
    gpu_roll = rollout_seconds("cuda", args.rollout_systems, args.rollout_steps, args.repeats)
    print(f"rollout: CPU {cpu_roll:.2f} s, GPU {gpu_roll:.2f} s ({cpu_roll / gpu_roll:.1f}x)", flush=True)
    report = {"command": "python benchmarks/gpu_speed.py", "gpu": torch.cuda.get_device_name(),
              "cpu": f"{platform.machine()} ({os.cpu_count()} cores)", "cpu_threads": torch.get_num_threads(),
              "torch": torch.__version__, "batch": BATCH, "chunk": CHUNK, "training": rows,
              "rollout": {"systems": args.rollout_systems, "steps": args.rollout_steps, "cpu_seconds": cpu_roll,
                          "gpu_seconds": gpu_roll, "speedup": cpu_roll / gpu_roll}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_speed.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    lines = ["# Training and rollout speed: GPU against the same machine's CPU", "",
             f"Command: `{report['command']}`; {report['gpu']}, CPU {report['cpu']} with {report['cpu_threads']} "
             f"threads, torch {report['torch']}. Training: HLieConv on springs (N = 6, 2D), float32, batch "
             f"{report['batch']}, {report['chunk']}-state windows, forward + double backward + Adam; best of the "
             "repeats after a warm-up.", "",
             "| group | width | depth | method | CPU s / 1000 windows | GPU s / 1000 windows | GPU speed-up "
             "| GPU compiled s / 1000 windows | compiled / eager |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["training"]:
        lines.append(f"| {r['group']} | {r['width']} | {r['depth']} | {r['method']} | "
                     f"{r['cpu_seconds_per_1000_windows']:.2f} | {r['gpu_seconds_per_1000_windows']:.3f} | "
                     f"{r['speedup']:.1f}x | {r['gpu_compiled_seconds_per_1000_windows']:.3f} | "
                     f"{r['compiled_speedup']:.1f}x |")
    roll = report["rollout"]
    lines += ["", f"Rollout, HLieConv SO(2) width 128, float64 leapfrog, {roll['systems']} systems x {roll['steps']} "
              f"steps: CPU {roll['cpu_seconds']:.2f} s, GPU {roll['gpu_seconds']:.2f} s ({roll['speedup']:.1f}x).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
