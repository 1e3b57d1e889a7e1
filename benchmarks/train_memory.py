"""Peak memory of whole `hamnet train` runs, each in a fresh process, for the code of two commits.

    OMP_NUM_THREADS=1 python benchmarks/train_memory.py --before REV [--after REV] [--repeats 2]

Data: the springs training file of springs.py's paper scale (4000 systems x 500 steps of dt 0.01,
N = 6, 2D; 385 MB in float64), generated once into benchmarks/work/train_memory/. Runs: `hamnet train`
of HLieConv SO(2) 128 x 4 with the paper scale's training settings (rk4 windows, batch 200, lr 1e-3,
3000 windows, the default validation and test fractions) for 3 epochs, and the same network at 32 x 2,
where the data is a larger part of the whole. Each run is a fresh process under `/usr/bin/time -v`
(its maximum resident set size; where /usr/bin/time is missing, the child's own getrusage), running
the code of one commit, exported with `git archive` into the work folder and put first on
PYTHONPATH; the two commits alternate. A thread in the child samples the resident memory every 5 ms
with the hamnet functions on the main thread's stack, so that the results also say the memory after
the imports, just before the first training batch and at the peak of data preparation, and where the
memory first came within 1% of its peak. One more run of the after code per network fixes glibc's
mmap threshold at 128 KiB (``MALLOC_MMAP_THRESHOLD_=131072``): what the allocator keeps of freed
memory, which the default lets grow, then shows as the difference.

With ``--reference PATH --oil PATH --reference-python PY`` (the checkouts and environment of
``reference_side_by_side.py``'s docstring), each network's repeats also run the reference's own trainer
whole (``reference_adapter.py``'s ``train`` job: its HLieResNet of the same width and depth, SO(2), its
trainer, rk4 loss, Adam and schedule; 3 epochs, batch 200, lr 1e-3) in a fresh process under
``/usr/bin/time -v``, on 3000 windows of the same file, chosen as ``reference_side_by_side.py`` chooses
them (``pieces.windows_file``: the reference reads a file of its windows, hamnet the whole trajectory file).
Writes results/train_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hamnet.io import save_trajectories
from hamnet.simulation import generate
from hamnet.systems import make_system

sys.path.insert(0, str(Path(__file__).parent))
from pieces import windows_file, write_result_files  # noqa: E402  (benchmarks are scripts, not a package)

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "train_memory"
DATA = "springs_N6_D2_steps500_dt0.01_systems4000_seed0.npz"
TIME = Path("/usr/bin/time")
GIB = 2**30
#: (label, hamnet train flags of the network); the training settings are TRAINING's
NETWORKS = (("HLieConv SO(2) 128x4", ["--width", "128", "--depth", "4"]),
            ("HLieConv SO(2) 32x2", ["--width", "32", "--depth", "2"]))
EPOCHS, BATCH, LR, WINDOWS = 3, 200, 1e-3, 3000
#: the reference's windows: as reference_side_by_side.py chooses them
CHUNK, WINDOW_SEED = 5, 0
TRAINING = ["--model", "hlieconv", "--group", "SO2", "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--lr",
            f"{LR:g}", "--max-windows", str(WINDOWS), "--method", "rk4", "--quiet"]
ADAPTER = ROOT / "benchmarks" / "reference_adapter.py"
#: glibc returns every freed block above 128 KiB at once (its default raises the threshold as blocks are freed)
FIXED_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}
#: the issue's whole-run figures at width 128 (springs, paper scale), measured before this benchmark
ISSUE_FIGURES = {"hamnet_train_gib": 2.76, "reference_trainer_gib": 2.14}

#: run in the child: `python -c CHILD SUMMARY.json hamnet-train-arguments...`
CHILD = r'''
import json, os, resource, sys, threading, time
page, main_thread, samples, running = os.sysconf("SC_PAGE_SIZE"), threading.get_ident(), [], True
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * page
def sample():
    while running:
        frame, names = sys._current_frames().get(main_thread), []
        while frame is not None:
            if "/hamnet/" in frame.f_code.co_filename:
                names.append(os.path.basename(frame.f_code.co_filename)[:-3] + "." + frame.f_code.co_name)
            frame = frame.f_back
        samples.append((resident(), names[::-1]))
        time.sleep(0.005)
from hamnet.cli import main
imported = resident()
thread = threading.Thread(target=sample, daemon=True)
thread.start()
status = main(["train", *sys.argv[2:]])
running = False
thread.join()
peak = max(r for r, _ in samples)
def highest(name):
    return max((r for r, names in samples if name in names), default=None)
first = next((i for i, (_, names) in enumerate(samples) if "training._train_epoch" in names), None)
training = samples[first - 1][0] if first else None
reached = next(names for r, names in samples if r >= 0.99 * peak)
json.dump({"status": status, "getrusage_max_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "after_imports_bytes": imported, "training_start_bytes": training,
           "data_preparation_peak_bytes": highest("training._prepare_data"),
           "sampled_peak_bytes": peak, "peak_in": " > ".join(reached[-3:])}, open(sys.argv[1], "w"))
'''


def data_file() -> Path:
    path = WORK / DATA
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        save_trajectories(path, generate(make_system("springs", n_particles=6, dim=2), n_systems=4000, steps=500,
                                         dt=0.01, seed=0))
    return path


def exported(rev: str) -> tuple[str, Path]:
    """The commit ``rev`` names and its hamnet package, exported once into the work folder."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    folder = WORK / f"code_{commit}"
    if not (folder / "hamnet").exists():
        partial = Path(tempfile.mkdtemp(dir=WORK))
        archive = subprocess.run(["git", "archive", commit, "hamnet", "systems"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive, check=True)
        partial.rename(folder)
    return commit, folder


def timed(command: list[str], cwd: str, environment: dict, what: str) -> tuple[int | None, float]:
    """Run ``command`` under ``/usr/bin/time -v`` where it exists: its peak resident bytes (None without
    ``time``) and wall seconds; a failure ends the benchmark naming ``what``."""
    started = time.perf_counter()
    done = subprocess.run([str(TIME), "-v", *command] if TIME.exists() else command, cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **environment})
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return (int(found.group(1)) * 1024 if found else None), round(time.perf_counter() - started, 1)


def measure(code: Path, flags: list[str], data: Path, environment: dict | None = None) -> dict:
    """One `hamnet train` run in a fresh process with ``code`` first on the path (and ``environment``)."""
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        summary = Path(scratch) / "summary.json"
        command = [sys.executable, "-c", CHILD, str(summary), "--data", str(data), "--out",
                   str(Path(scratch) / "run"), *TRAINING, *flags]
        peak, seconds = timed(command, scratch, {"PYTHONPATH": str(code), **(environment or {})},
                              f"hamnet train with {code}")
        result = json.loads(summary.read_text())
    result["max_rss_bytes"] = peak if peak is not None else result["getrusage_max_bytes"]
    result["max_rss_from"] = "/usr/bin/time -v" if peak is not None else "getrusage in the child"
    result["seconds"] = seconds
    print(f"{code.name} {' '.join(flags)}: {result['max_rss_bytes'] / GIB:.3f} GiB ({result['seconds']} s)", flush=True)
    return result


def measure_reference(args: argparse.Namespace, flags: list[str], windows: Path) -> dict:
    """One whole run of the reference's trainer (``reference_adapter.py train``) at the width and depth of
    ``flags``, in a fresh process under ``/usr/bin/time -v``."""
    settings = dict(zip(flags[::2], flags[1::2]))
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        spec = {"threads": 1, "reference": str(args.reference), "oil": str(args.oil), "windows": str(windows),
                "seed": 0, "group": "SO2", "width": int(settings["--width"]), "depth": int(settings["--depth"]),
                "lr": LR, "epochs": EPOCHS, "batch_size": BATCH, "model": str(Path(scratch) / "model.pt"),
                "out": str(Path(scratch) / "out.json")}
        (Path(scratch) / "spec.json").write_text(json.dumps(spec))
        peak, seconds = timed([str(args.reference_python), str(ADAPTER), "train", str(Path(scratch) / "spec.json")],
                              scratch, {}, "the reference trainer")
        trained = json.loads(Path(spec["out"]).read_text())
    result = {"max_rss_bytes": peak, "seconds": seconds,
              **{key: trained[key] for key in ("windows", "finite_weights", "reference_revision", "oil_revision")}}
    print(f"reference {' '.join(flags)}: {result['max_rss_bytes'] / GIB:.3f} GiB ({result['seconds']} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit measured as before (any git revision)")
    parser.add_argument("--after", default="HEAD", help="the commit measured as after")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_memory"))
    parser.add_argument("--reference", type=Path, help="a checkout of mfinzi/LieConv: measure its trainer too")
    parser.add_argument("--oil", type=Path, help="a checkout of mfinzi/olive-oil-ml (with --reference)")
    parser.add_argument("--reference-python", type=Path, help="the reference's interpreter (with --reference)")
    args = parser.parse_args()
    given = [args.reference, args.oil, args.reference_python]
    if any(given) and not all(given):
        parser.error("--reference, --oil and --reference-python go together")
    missing = [str(path) for path in given if path is not None and not path.exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)} (see reference_side_by_side.py's docstring)")
    if args.reference and not TIME.exists():
        parser.error(f"the reference's peak is read from {TIME} -v, which this machine lacks")
    data = data_file()
    windows = windows_file(WORK, data, WINDOWS, WINDOW_SEED, CHUNK) if args.reference else None
    codes = {"before": exported(args.before), "after": exported(args.after)}
    started = time.perf_counter()
    rows = []
    for label, flags in NETWORKS:
        runs: dict[str, list[dict]] = {"before": [], "after": [], "reference": []}
        for repeat in range(args.repeats):
            for side in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
                runs[side].append(measure(codes[side][1], flags, data))
            if windows is not None:
                runs["reference"].append(measure_reference(args, flags, windows))
        fixed = measure(codes["after"][1], flags, data, FIXED_THRESHOLD)
        rows.append({"network": label, "flags": flags, **runs, "after_fixed_mmap_threshold": fixed})
    results = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/train_memory.py --before {codes['before'][0]} --after "
                   f"{codes['after'][0]} --repeats {args.repeats}" + ("" if windows is None else
                   f" --reference {args.reference} --oil {args.oil} --reference-python {args.reference_python}"),
        "commits": {side: commit for side, (commit, _) in codes.items()},
        "reference_windows": None if windows is None else windows.name,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with two training processes (memory is "
                   "per process; the seconds are not comparable)",
        "torch": torch.__version__, "data": DATA, "training": TRAINING, "issue_figures": ISSUE_FIGURES,
        "time_v": TIME.exists(), "rows": rows, "seconds": round(time.perf_counter() - started, 1),
    }
    write_result_files(Path(args.out), results, markdown(results))
    for _, code in codes.values():  # cheap to export again; stale copies of hamnet are not kept
        shutil.rmtree(code, ignore_errors=True)


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def markdown(results: dict) -> list[str]:
    issue = results["issue_figures"]
    lines = ["# Peak memory of whole `hamnet train` runs, before and after", "",
             f"Command: `{results['command']}` ({results['seconds']:.0f} s); {results['machine']}; torch "
             f"{results['torch']}. Data: `{results['data']}` (springs.py's paper-scale training file, 385 MB in "
             f"float64). Training flags: `{' '.join(results['training'])}`. Each run is a fresh process; max RSS "
             "from `/usr/bin/time -v`; the other columns from the child's own sampling of its resident memory "
             "(every 5 ms).", "",
             "| network | code | max RSS (GiB) | after imports | before the first training batch | peak of data "
             "preparation | where memory came within 1% of its peak |", "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        for side in ("before", "after"):
            for run in row[side]:
                lines.append(f"| {row['network']} | {side} ({results['commits'][side]}) | {gib(run['max_rss_bytes'])} "
                             f"| {gib(run['after_imports_bytes'])} | {gib(run['training_start_bytes'])} | "
                             f"{gib(run['data_preparation_peak_bytes'])} | `{run['peak_in']}` |")
        for run in row.get("reference", []):
            lines.append(f"| {row['network']} | reference trainer (lie_conv {run['reference_revision'][:7]}, "
                         f"{run['windows']} windows) | {gib(run['max_rss_bytes'])} | - | - | - | - |")
        run = row["after_fixed_mmap_threshold"]
        lines.append(f"| {row['network']} | after, `MALLOC_MMAP_THRESHOLD_=131072` | {gib(run['max_rss_bytes'])} | "
                     f"{gib(run['after_imports_bytes'])} | {gib(run['training_start_bytes'])} | "
                     f"{gib(run['data_preparation_peak_bytes'])} | `{run['peak_in']}` |")
    lines.append("")
    for row in results["rows"]:
        before = min(run["max_rss_bytes"] for run in row["before"])
        after = min(run["max_rss_bytes"] for run in row["after"])
        fixed = row["after_fixed_mmap_threshold"]["max_rss_bytes"]
        lines.append(f"- {row['network']}: {gib(before)} GiB before, {gib(after)} GiB after "
                     f"({100 * (after / before - 1):+.0f}%); after, with glibc's mmap threshold fixed at 128 KiB, "
                     f"{gib(fixed)} GiB: {gib(after - fixed)} GiB of the peak is freed memory the allocator kept.")
        if row.get("reference"):
            reference = min(run["max_rss_bytes"] for run in row["reference"])
            lines.append(f"  The reference trainer: {gib(reference)} GiB; hamnet train after is "
                         f"{100 * (after / reference - 1):+.1f}% against it.")
    state = 2 * 6 * 2 * 4  # bytes of one float32 state of springs N = 6 in 2D
    lines += ["", "The columns after the max RSS are hamnet's own sampling; the reference's run reports its max RSS "
              "only. hamnet train reads the whole trajectory file (checked and split; the region from the training "
              "systems, sub-steps and kernel bound from the training windows), then trains on a compact copy of its "
              f"windows' states (`Windows.compact`), so the file's float32 copy ({gib(4000 * 501 * state)} GiB) is "
              "freed before the first batch; the reference reads a file of its 3000 windows."]
    lines += ["", f"Context: the issue measured whole three-epoch runs at width 128 on springs at paper scale before "
              f"this benchmark: `hamnet train` {issue['hamnet_train_gib']} GiB, the reference trainer "
              f"{issue['reference_trainer_gib']} GiB.", ""]
    return lines


if __name__ == "__main__":
    main()
