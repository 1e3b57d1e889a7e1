"""How LieResNet's forward + backward time and peak memory grow with the number of points.

Runs k-nearest neighbourhoods for N = 256, 1024, 4096 points in 3D (groups T(3) and SO(3)), and the
all-pairs layout where it fits, each size in a fresh subprocess so that the peak resident memory
(VmHWM from /proc/self/status, minus the resident size just before the timed passes) belongs to that
size alone. One torch thread, float32, one system per batch. Writes
benchmarks/results/lieconv_scale.{json,md} and fits growth exponents (slope of log cost vs log N).

    .venv/bin/python benchmarks/lieconv_scale.py          # a few minutes on one core
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time

SIZES = (256, 1024, 4096)
ALL_PAIRS_MAX_N = 1024  # 4096 all-pairs would hold 16.8M kernel inputs per layer (~40 GB of activations)
NEIGHBOURS = 16
WIDTH, DEPTH, REPEATS = 128, 4, 3
RESULTS = pathlib.Path(__file__).parent / "results"


def _status_kib(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(group_name: str, n: int, neighbours: int | None) -> dict:
    """One configuration, in this process: median seconds of forward + backward, and peak extra MiB."""
    import torch

    from hamnet.groups import get_group
    from hamnet.lieconv import LieResNet

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    group = get_group(group_name)
    model = LieResNet(group, in_features=1, width=WIDTH, depth=DEPTH, neighbours=neighbours,
                      lift_samples=1 if group.stabilizer_dim else None)
    points = torch.randn(1, n, 3, generator=generator).requires_grad_(True)
    features = torch.rand(1, n, 1, generator=generator)
    before = _status_kib("VmRSS")
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        model(points, features).sum().backward()
        times.append(time.perf_counter() - start)
    peak = _status_kib("VmHWM")
    return {"group": group_name, "n": n, "neighbours": neighbours, "seconds": sorted(times)[len(times) // 2],
            "peak_mib": (peak - before) / 1024}


def _run_isolated(group_name: str, n: int, neighbours: int | None) -> dict:
    args = [sys.executable, __file__, "--one", group_name, str(n), str(neighbours or 0)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _exponent(rows: list[dict], key: str) -> float:
    """Least-squares slope of log(key) against log(n)."""
    xs = [math.log(r["n"]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _markdown(report: dict) -> str:
    lines = [
        "# LieResNet scaling: forward + backward vs number of points",
        "",
        f"Produced by `{report['command']}` on {report['machine']}, torch {report['torch']}, "
        f"**one thread** (`torch.set_num_threads(1)`), float32, one system, width {WIDTH}, depth {DEPTH}, "
        f"points in 3D, k = {NEIGHBOURS} nearest neighbours (lifted elements). Time: median of {REPEATS} "
        "forward + backward passes (gradients w.r.t. parameters and points). Memory: peak resident set "
        "(VmHWM) minus resident set before the passes, each size in a fresh process. SO(3) lifts each "
        "point to one element (the exact lift, the default). The k-nearest search computes all "
        "N^2 distances in row chunks (memory bounded, time quadratic but a small share at these sizes); "
        "kernel inputs, kernel activations and gathered features exist only for the N k chosen pairs.",
        "",
        "| group | layout | N | time (s) | peak extra memory (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        layout = f"k={r['neighbours']}" if r["neighbours"] else "all pairs"
        lines.append(f"| {r['group']} | {layout} | {r['n']} | {r['seconds']:.3f} | {r['peak_mib']:.1f} |")
    lines += ["", "Growth exponents (least-squares slope of log cost against log N):", "",
              "| group | layout | time exponent | memory exponent |", "|---|---|---|---|"]
    for f in report["fits"]:
        lines.append(f"| {f['group']} | {f['layout']} | {f['time_exponent']:.2f} | {f['memory_exponent']:.2f} |")
    lines += ["", f"All pairs is run only up to N = {ALL_PAIRS_MAX_N}: at N = 4096 it would need about 16x "
              "the N = 1024 figure.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("GROUP", "N", "K"), help="measure one configuration (internal)")
    args = parser.parse_args()
    if args.one:
        group_name, n, k = args.one
        print(json.dumps(measure(group_name, int(n), int(k) or None)))
        return
    import torch

    rows, fits = [], []
    for group_name in ("T3", "SO3"):
        for neighbours, sizes in ((NEIGHBOURS, SIZES), (None, [n for n in SIZES if n <= ALL_PAIRS_MAX_N])):
            block = [_run_isolated(group_name, n, neighbours) for n in sizes]
            rows += block
            fits.append({"group": group_name, "layout": f"k={neighbours}" if neighbours else "all pairs",
                         "time_exponent": _exponent(block, "seconds"),
                         "memory_exponent": _exponent(block, "peak_mib")})
    report = {"command": "python benchmarks/lieconv_scale.py", "torch": torch.__version__,
              "machine": f"{platform.machine()} {platform.processor() or 'CPU'}", "threads": 1,
              "dtype": "float32", "width": WIDTH, "depth": DEPTH, "neighbours": NEIGHBOURS,
              "rows": rows, "fits": fits}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lieconv_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "lieconv_scale.md").write_text(_markdown(report))
    sys.stdout.write(_markdown(report))


if __name__ == "__main__":
    main()
