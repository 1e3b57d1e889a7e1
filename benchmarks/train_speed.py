"""Training speed of HLieConv on springs: seconds per 1000 training windows, on one thread.

The step timed is the one ``hamnet.train`` runs, ``hamnet.optimisation.TrainingStep``:
``hamnet.loss.WindowLoss`` (torchdiffeq rk4 over 5-state windows, the force ``-dV/dq`` by autograd
with its graph kept, so the loss's backward is a double backward through the LieResNet), then
``loss.backward()``, the loss read and checked, an Adam step (lr 1e-3) and the cosine schedule's
step, in float32 with batches of 200 windows of springs (N = 6, D = 2) from
``hamnet.simulation.generate``. Each configuration runs in a fresh subprocess with one torch thread
(``OMP_NUM_THREADS=1``), so that its peak resident memory (VmHWM) is its own. Per repeat: one
warm-up batch, then ``--windows`` windows timed; the figure reported is the best of ``--repeats``
repeats (the machine is shared, and the best run is the least disturbed one), in wall-clock seconds
and in the process's CPU seconds (``time.process_time``, which leaves out time the process waited
for a core while other work ran, though not the slowdown from shared caches and memory).

    .venv/bin/python benchmarks/train_speed.py            # a few minutes on one core
    .venv/bin/python benchmarks/train_speed.py --profile  # also print a torch.profiler table per config

Writes benchmarks/results/train_speed.{json,md}. The reference (the paper authors' code) is not run
here: its figures are read from ``benchmarks/results/reference_side_by_side.json``, where
``benchmarks/reference_side_by_side.py`` times both sides' training steps interleaved in one process on
identical windows (rk4 windows, the reference's only kind) and measures their peak memory. They stand
beside this script's figures, measured in other processes at another time, so no ratio is taken
across the two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).parent / "results"
SIDE_BY_SIDE = RESULTS / "reference_side_by_side.json"
BATCH, CHUNK, DT = 200, 5, 0.01
CONFIGS = (("T2", 384, 4), ("T2", 128, 4), ("SO2", 128, 4))  # (group, width, depth)


def side_by_side(path: pathlib.Path = SIDE_BY_SIDE) -> dict:
    """``(group, width)`` -> both sides' mean seconds per 1000 windows interleaved (4 layers, rk4
    windows, batch 200, one thread) and peak RSS in MiB, from the side-by-side results; empty without them."""
    if not path.exists():
        return {}
    results = json.loads(path.read_text())
    figures = {(t["group"], t["width"]): {side: {"seconds": statistics.fmean(t["seconds_per_1000_windows"][side])}
                                          for side in ("hamnet", "reference")} for t in results["timing"]}
    for m in results["memory"]:
        figures.get((m["group"], m["width"]), {}).get(m["side"], {})["peak_rss_mib"] = m["peak_rss_bytes"] / 2**20
    return figures


def _status_kib(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(group: str, width: int, depth: int, windows: int, repeats: int, profile: bool,
            method: str = "rk4") -> dict:
    """One configuration, in this process: seconds per ``windows`` training windows (each repeat)."""
    import torch

    from hamnet import systems
    from hamnet.data import Windows
    from hamnet.models import ModelConfig
    from hamnet.simulation import generate
    from hamnet.optimisation import TrainingStep
    from hamnet.training import TrainConfig

    torch.set_num_threads(1)
    n_batches = math.ceil(windows / BATCH)
    # enough systems that every batch of every repeat is distinct windows (46 windows per system)
    n_steps = 50
    per_system = n_steps + 1 - CHUNK + 1
    n_systems = math.ceil((n_batches + 1) * BATCH * repeats / per_system) + 1
    data = generate(systems.Springs(), n_systems=n_systems, steps=n_steps, dt=DT, seed=0)
    data.z, data.params = data.z.float(), {k: v.float() for k, v in data.params.items()}
    all_windows = Windows(data, CHUNK)
    batches = iter(all_windows.batches(BATCH, torch.Generator().manual_seed(0)))

    config = TrainConfig(model=ModelConfig(name="hlieconv", group=group, width=width, depth=depth),
                         batch_size=BATCH, lr=1e-3, chunk=CHUNK, method=method, seed=0)
    train_step = TrainingStep(config, DT, total_steps=repeats * (n_batches + 1) + profile)
    elements = BATCH * (CHUNK - 1) * math.prod(data.z.shape[2:])

    def step() -> float:
        z, params = all_windows[next(batches)]
        return train_step(z, params, scale=1 / elements)

    times, cpu_times, losses = [], [], []
    for _ in range(repeats):
        step()  # warm-up
        start, cpu_start = time.perf_counter(), time.process_time()
        losses += [step() for _ in range(n_batches)]
        times.append((time.perf_counter() - start) * 1000 / (n_batches * BATCH))
        cpu_times.append((time.process_time() - cpu_start) * 1000 / (n_batches * BATCH))
    result = {"group": group, "width": width, "depth": depth, "seconds_per_1000_windows": times,
              "best": min(times), "cpu_seconds_per_1000_windows": cpu_times, "best_cpu": min(cpu_times),
              "peak_rss_mib": _status_kib("VmHWM") / 1024,
              "parameters": sum(p.numel() for p in train_step.model.parameters()), "first_loss": losses[0],
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    return result


def _run_isolated(group: str, width: int, depth: int, args) -> dict:
    command = [sys.executable, __file__, "--one", group, str(width), str(depth),
               "--windows", str(args.windows), "--repeats", str(args.repeats), "--method", args.method]
    command += ["--profile"] if args.profile else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=None if args.profile else subprocess.PIPE,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def results_stem(method: str) -> str:
    """The results' file name (without suffix) for windows integrated with ``method``."""
    return "train_speed" if method == "rk4" else f"train_speed_{method}"


def _markdown(report: dict) -> str:
    lines = [
        "# Training speed: HLieConv on springs, seconds per 1000 windows (one thread)",
        "",
        f"Command: `{report['command']}`  ",
        f"{report['machine']}, torch {report['torch']}, **{report['threads']} thread**, float32, batch {BATCH}, "
        f"springs N = 6, D = 2, {report.get('method', 'rk4')} over {CHUNK}-state windows (hamnet.loss.WindowLoss), forward + double "
        f"backward + Adam step. Each configuration in a fresh process; one warm-up batch, then "
        f"{report['windows']} windows timed per repeat; **best of {report['repeats']} repeats** (shared 2-core "
        "machine, so the best is the least disturbed). Peak RSS is the process's VmHWM (data, model and "
        "interpreter included).",
        "",
        "| group | width | depth | s / 1000 windows (best) | all repeats | CPU s / 1000 windows (best) "
        "| before optimising: wall / CPU (best) | peak RSS (MiB) | side by side, rk4, interleaved: hamnet / "
        "reference s / 1000 windows | side by side, rk4: hamnet / reference peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = side_by_side()
    before_file = RESULTS / "train_speed.before.json"
    rk4 = report.get("method", "rk4") == "rk4"  # the before figures are about rk4 windows
    before = ({(r["group"], r["width"], r["depth"]): r for r in json.loads(before_file.read_text())["rows"]}
              if rk4 and before_file.exists() else {})
    for r in report["rows"]:
        old = before.get((r["group"], r["width"], r["depth"]))
        old_best = "-" if old is None else f"{old['best']:.2f} / {old['best_cpu']:.2f}"
        both = reference.get((r["group"], r["width"])) if r["depth"] == 4 else None
        seconds = "-" if both is None else f"{both['hamnet']['seconds']:.1f} / {both['reference']['seconds']:.1f}"
        memory = "-" if both is None or "peak_rss_mib" not in both["reference"] else \
            f"{both['hamnet']['peak_rss_mib']:.0f} / {both['reference']['peak_rss_mib']:.0f}"
        lines.append(
            f"| {r['group']} | {r['width']} | {r['depth']} | {r['best']:.2f} | "
            f"{', '.join(f'{t:.2f}' for t in r['seconds_per_1000_windows'])} | {r['best_cpu']:.2f} | "
            f"{old_best} | {r['peak_rss_mib']:.0f} | {seconds} | {memory} |")
    lines += ["", f"The last two columns come from {SIDE_BY_SIDE.relative_to(RESULTS.parent.parent)} "
              "(`benchmarks/reference_side_by_side.py`): both sides' training steps interleaved in one process on "
              "identical windows, and each side's peak memory in a fresh process; '-' where it measured no such "
              "configuration. They are not divided into this run's figures, which come from other processes at "
              "another time.", ""]
    notes = RESULTS / f"{results_stem(report.get('method', 'rk4'))}.notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=1000, help="windows timed per repeat (batches of 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step per config")
    parser.add_argument("--before", action="store_true",
                        help="write the figures to results/train_speed.before.json (the code before optimising)")
    parser.add_argument("--markdown", action="store_true",
                        help="only rewrite the method's results/train_speed*.md from its JSON")
    parser.add_argument("--only", default=None, help="run one config, e.g. T2:384:4, and write no results")
    parser.add_argument("--method", default="rk4",
                        help="integrator over each window: rk4 (the paper's, 4 forces per step) or leapfrog (1); "
                        "results for a method other than rk4 go to results/train_speed_<method>.*")
    parser.add_argument("--one", nargs=3, metavar=("GROUP", "WIDTH", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        group, width, depth = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(measure(group, width, depth, args.windows, args.repeats, args.profile, args.method)))
        return
    if args.markdown:
        name = results_stem(args.method)
        (RESULTS / f"{name}.md").write_text(_markdown(json.loads((RESULTS / f"{name}.json").read_text())))
        return
    configs = CONFIGS
    if args.only:
        g, w, d = args.only.split(":")
        configs = [(g, int(w), int(d))]
    rows = []
    for group, width, depth in configs:
        row = _run_isolated(group, width, depth, args)
        print(f"{group} width {width} depth {depth}: best {row['best']:.2f} s / 1000 windows "
              f"({row['best_cpu']:.2f} CPU s) "
              f"(repeats {', '.join(f'{t:.2f}' for t in row['seconds_per_1000_windows'])}), "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
        rows.append(row)
    if args.only:
        return
    report = {"command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores)", "torch": rows[0]["torch"],
              "threads": rows[0]["threads"], "windows": args.windows, "repeats": args.repeats, "batch": BATCH,
              "chunk": CHUNK, "method": args.method, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    if args.before:
        (RESULTS / "train_speed.before.json").write_text(json.dumps(report, indent=2) + "\n")
        return
    name = results_stem(args.method)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(_markdown(report))


if __name__ == "__main__":
    main()
