"""The paper's spring experiment (Finzi et al. 2020, section 6), reproduced with hamnet.

Models: HLieConv with T(2), SO(2) and the trivial group, and the baselines FC-NODE, FC-HNN and
HOGN, each trained on 100, 1000 and 3000 windows of 5 states (the paper code's ``chunk_len``) with
an RK4 rollout over each window and an MSE loss, Adam with cosine decay, batch 200, for 3 seeds.
The seed picks the training windows, the validation systems, the weight initialisation and the
batch order; the data files are shared by all runs.

Data: springs, N = 6, D = 2, 500 steps of dt = 0.01 (the paper's 5 s, on an exact grid), one
training file and one test file of other systems (another generation seed), generated once by
``hamnet.simulation.generate`` and cached in the work folder under a name holding every generation
parameter and the seed.

Per model, training size and seed, on the test file:

* 5-step window MSE, integrated with RK4 as in training: hamnet's convention (the initial state,
  where the error is zero, left out) and the reference's (averaged in), which compares with
  the reference implementation's published figures (below);
* 500-step rollout error from each test system's first state, in float64 (HLieConv with
  leapfrog, the others with rk4; ``hamnet.rollouts.default_method``): the bounded relative error
  averaged over systems, then its geometric mean over time and its value at the end;
* conservation over a 10,000-step float64 rollout of the first ``drift_systems`` test systems
  (same integrators): the largest relative change of linear and angular momentum and of the true
  energy, the maximum over those systems;
* training seconds per 1000 windows (epoch time without validation) and torch's thread count.

Scales (``--scale``): ``paper`` is the paper's setting (width 384, 4 layers, 100 epochs, lr 1e-3,
batch 200) for a bigger machine; ``small`` fits the whole study into about an hour on a 2-core
CPU with one thread; ``smoke`` checks the script end to end in a minute or two. See ``SCALES``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/springs.py --scale small [--threads 1]

Resumable: every run keeps its training folder and its scores under
``benchmarks/work/springs_<scale>/``; a rerun skips what is done and resumes an interrupted
training from its last checkpoint. Writes ``benchmarks/results/springs_<scale>.{md,json}`` from every
run scored so far (runs not yet done are listed as such, and the comparison waits for all of them).
A run whose training diverges does not stop the others: the report lists it with hamnet's message and
the script exits non-zero at the end.

The paper scale takes tens of hours of CPU; run it in pieces and on both cores: the same command in two
processes, each taking the next run (largest training sizes first) that the other does not hold:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/springs.py --scale paper --seeds 0 &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/springs.py --scale paper --seeds 0 &

``--device cuda`` trains on a GPU; scoring stays on the CPU, so scores compare across machines, and
``<work>/devices/<run>.jsonl`` records where each run's epochs were trained (a run started on a GPU
can be finished on a CPU: copy its run folder and its record over). ``--part K/N`` keeps a process to
every N-th run of the list (a fixed split, for machines that share no folder); ``--report`` only writes
the results from the scores present.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hamnet.checkpoint import load_checkpoint, model_from_checkpoint
from hamnet.data import Windows
from hamnet.diagnostics import conservation_report
from hamnet.evaluation import EVALUATION_WINDOWS, evaluate
from hamnet.io import load_trajectories, save_trajectories
from hamnet.paths import atomic_path
from hamnet.models import ModelConfig
from hamnet.loss import window_mse
from hamnet.rollouts import RolloutError, default_method, rollout_systems
from hamnet.simulation import generate
from hamnet.ensemble import train_ensemble
from hamnet.training import TrainConfig, TrainingDiverged, train
from hamnet.systems import make_system

sys.path.insert(0, str(Path(__file__).parent))
from pieces import add_piece_arguments, my_runs, run_script, start_pieces, write_result_files  # noqa: E402  (the benchmarks' shared running in pieces)

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WORK = HERE / "work"

SYSTEM, N_PARTICLES, DIM, STEPS, DT = "springs", 6, 2, 500, 0.01
TRAIN_DATA_SEED, TEST_DATA_SEED = 1, 2
CHUNK = 5

#: (label, model name, group) in the order of the paper's figure
MODELS = (
    ("HLieConv T(2)", "hlieconv", "T2"),
    ("HLieConv SO(2)", "hlieconv", "SO2"),
    ("HLieConv Trivial", "hlieconv", "Trivial"),
    ("FC-NODE", "fc-node", "T2"),
    ("FC-HNN", "fc-hnn", "T2"),
    ("HOGN", "hogn", "T2"),
)
HLIECONV_LABELS = tuple(label for label, name, _ in MODELS if name == "hlieconv")


@dataclass(frozen=True)
class Scale:
    """Everything a scale decides. ``epochs`` is for every training size, but a run takes at least
    ``min_steps`` optimiser steps (more epochs over a small training set), so the smallest sets
    are not judged after a handful of updates."""

    width: int
    depth: int
    epochs: int
    min_steps: int
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    train_systems: int
    test_systems: int
    validation_windows: int
    drift_steps: int
    drift_systems: int
    lr: float = 1e-3
    batch_size: int = 200
    validation: float = 0.05
    note: str = ""


SCALES = {
    "paper": Scale(width=384, depth=4, epochs=100, min_steps=0, sizes=(100, 1000, 3000), seeds=(0, 1, 2),
                   train_systems=4000, test_systems=200, validation_windows=1000,
                   drift_steps=10_000, drift_systems=8,
                   note="the paper's settings: width 384, 4 layers, 100 epochs at every training size, "
                        "lr 1e-3, batch 200, Adam with cosine decay"),
    "small": Scale(width=32, depth=2, epochs=20, min_steps=100, sizes=(100, 1000, 3000), seeds=(0, 1, 2),
                   train_systems=1000, test_systems=100, validation_windows=100,
                   drift_steps=10_000, drift_systems=4, lr=1e-2,
                   note="width 32 and 2 layers instead of 384 and 4, 20 epochs (at least 100 optimiser steps) "
                        "instead of 100, and lr 1e-2 instead of 1e-3, so that the 54 training runs, their "
                        "rollouts and the 10,000-step conservation runs fit into about an hour on one thread of a "
                        "2-core CPU. The learning rate is raised because so few steps at 1e-3 learn nothing: "
                        "measured on HLieConv T(2) at 1000 windows, 60 steps at lr 1e-3 lowered the validation "
                        "MSE by 0.3% (0.180 to 0.179), while 125 steps at 1e-2 brought it to 0.0034"),
    "smoke": Scale(width=8, depth=1, epochs=1, min_steps=2, sizes=(100, 200), seeds=(0,),
                   train_systems=20, test_systems=4, validation_windows=20,
                   drift_steps=300, drift_systems=2,
                   note="a check that the script runs end to end; its numbers mean nothing"),
}


# -- data ---------------------------------------------------------------------------------------
def data_file(folder: Path, n_systems: int, seed: int) -> Path:
    """The cached trajectory file for these generation parameters, generated on first use."""
    name = f"{SYSTEM}_N{N_PARTICLES}_D{DIM}_steps{STEPS}_dt{DT:g}_systems{n_systems}_seed{seed}.npz"
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        system = make_system(SYSTEM, n_particles=N_PARTICLES, dim=DIM)
        started = time.perf_counter()
        save_trajectories(path, generate(system, n_systems=n_systems, steps=STEPS, dt=DT, seed=seed))
        logging.info("generated %s in %.1f s", path.name, time.perf_counter() - started)
    return path


# -- one run ------------------------------------------------------------------------------------
def epochs_for(scale: Scale, windows: int) -> int:
    steps_per_epoch = math.ceil(windows / scale.batch_size)
    return max(scale.epochs, math.ceil(scale.min_steps / steps_per_epoch))


def train_config(scale: Scale, name: str, group: str, windows: int, seed: int) -> TrainConfig:
    model = ModelConfig(name=name, n_particles=N_PARTICLES, dim=DIM, width=scale.width, depth=scale.depth,
                        group=group)
    return TrainConfig(model=model, epochs=epochs_for(scale, windows), batch_size=scale.batch_size, lr=scale.lr,
                       chunk=CHUNK, method="rk4", seed=seed, validation=scale.validation, test=0.0,
                       max_windows=windows, validation_windows=scale.validation_windows)


def run_name(label: str, windows: int, seed: int) -> str:
    slug = label.lower().replace("(", "").replace(")", "").replace(" ", "-")
    return f"{slug}_w{windows}_seed{seed}"


def train_run(config: TrainConfig, data_path: Path, folder: Path, device: str = "cpu",
              record: Path | None = None) -> None:
    """Train into ``folder`` on ``device``, resuming an interrupted run; a run that never finished an epoch
    restarts. ``record`` (beside the run folder: hamnet keeps foreign files out of a run) gets a line per
    start, the device and the first epoch trained there: a run may start on a GPU and end on a CPU."""
    last = folder / "last.pt"
    if not last.exists():
        shutil.rmtree(folder, ignore_errors=True)
    done = load_checkpoint(last)["epoch"] if last.exists() else 0  # the epoch a resume goes on from
    if done >= config.epochs:
        return
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        with open(record, "a" if done else "w") as lines:  # a fresh start forgets an earlier run's record
            lines.write(json.dumps({"device": device_name(device), "first_epoch": done + 1}) + "\n")
    train(config, data_path, folder, resume=last.exists(), device=device)


def device_name(device: str) -> str:
    """``cuda (<GPU name>)`` for a CUDA device, else torch's name for it (``cpu``): what a run's training
    seconds were measured on."""
    where = torch.device(device)
    return f"cuda ({torch.cuda.get_device_name(where)})" if where.type == "cuda" else str(where)


def device_spans(record: Path, epochs: int) -> list[tuple[str, int, int]]:
    """Where a run's ``epochs`` were trained, from its ``record`` (:func:`train_run`): (device, first
    epoch, last epoch) spans in order. Epochs with no record were trained before records were kept, on
    the CPU; each start supersedes what earlier starts said from its epoch on (a start that failed at
    once, a restart); a start past the schedule is ignored."""
    starts = {1: "cpu"}
    lines = map(json.loads, record.read_text().splitlines()) if record.exists() else ()
    for line in lines:
        first = line["first_epoch"]
        if 1 <= first <= epochs:
            starts = {epoch: device for epoch, device in starts.items() if epoch < first} | {first: line["device"]}
    firsts = sorted(starts)
    spans: list[tuple[str, int, int]] = []
    for first, after in zip(firsts, firsts[1:] + [epochs + 1]):
        if spans and spans[-1][0] == starts[first]:
            spans[-1] = (spans[-1][0], spans[-1][1], after - 1)
        else:
            spans.append((starts[first], first, after - 1))
    return spans


def training_devices(spans: list[tuple[str, int, int]]) -> str:
    """One device's name, or ``"<device> for epochs a-b, ..."``."""
    if len(spans) == 1:
        return spans[0][0]
    return ", ".join(f"{device} for epochs {first}-{last}" for device, first, last in spans)


def epoch_seconds(folder: Path, first: int = 1, last: int | None = None) -> list[float]:
    """Training seconds of each of epochs ``first``..``last`` (default: all) of a run, from its metrics."""
    epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [e["seconds"] for e in epochs if first <= e["epoch"] <= (math.inf if last is None else last)]


def seconds_per_1000_windows(folder: Path, windows: int, first: int = 1, last: int | None = None) -> float:
    """Training seconds per 1000 windows over epochs ``first``..``last`` (default: all) of a run."""
    seconds = epoch_seconds(folder, first, last)
    return 1000 * sum(seconds) / (windows * len(seconds))


def where_trained(run: dict, work: Path) -> dict:
    """``run``'s score with where it was trained: a run not wholly trained on the CPU gets its seconds per
    device span (``train_seconds_by_device``) and no single ``train_seconds_per_1000_windows``, which would
    mix devices or set a GPU's figure beside the CPU's."""
    name = run_name(run["model"], run["windows"], run["seed"])
    spans = device_spans(work / "devices" / f"{name}.jsonl", run["epochs"])
    folder = work / "runs" / name
    if spans == [("cpu", 1, run["epochs"])]:
        # the mean epoch counts whatever else the machine ran meanwhile; the fastest epoch is the nearest
        # this run came to running alone, the figure to set beside a timing of training steps alone (left
        # out where the run folder is not here: scores merged from a machine that shares no folder)
        if not (folder / "metrics.jsonl").exists():
            return run | {"train_device": "cpu"}
        fastest = 1000 * min(epoch_seconds(folder)) / run["windows"]
        return run | {"train_device": "cpu", "train_seconds_per_1000_windows_fastest_epoch": fastest}
    by_device = [{"device": device, "epochs": [first, last],
                  "seconds_per_1000_windows": seconds_per_1000_windows(folder, run["windows"], first, last)}
                 for device, first, last in spans]
    return run | {"train_device": training_devices(spans), "train_seconds_by_device": by_device,
                  "train_seconds_per_1000_windows": None}


def score(model, test, scale: Scale) -> dict:
    """Window MSE, rollout error, valid prediction time and divergence over the test horizon, and the
    drifts and divergence of a long float64 rollout, of a trained model on ``test``."""
    try:
        scores = evaluate(model, test)
    except RolloutError as error:  # every system diverged: the model still gets its window error
        windows = Windows(test, CHUNK, max_windows=EVALUATION_WINDOWS, seed=0)
        mse = window_mse(model, windows, DT, dtype=next(model.parameters()).dtype)
        return {"window_mse": mse["mse"], "window_mse_with_initial": mse["mse_with_initial"],
                "rollout_method": default_method(model), "rollout_error_geometric_mean": math.nan,
                "rollout_error_final": math.nan, "valid_prediction_time_median": 0.0, "divergence_rate": 1.0,
                "rollout_diverged_at": error.step, **long_drift(model, test, scale)}
    result = {"window_mse": scores["window_mse"], "window_mse_with_initial": scores["window_mse_with_initial"],
              "rollout_method": scores["rollout_method"],
              "rollout_error_geometric_mean": scores["rollout_error"]["geometric_mean_over_time"],
              "rollout_error_final": scores["rollout_error"]["final"],
              "valid_prediction_time_median": scores["valid_prediction_time"]["median"],
              "divergence_rate": scores["divergence"]["rate"],
              "rollout_diverged_at": min(scores["divergence"]["steps"], default=None)}
    return result | long_drift(model, test, scale)


def long_drift(model, test, scale: Scale) -> dict:
    """Over a long float64 rollout of ``scale.drift_systems`` test systems: how many diverged (grew past
    ``hamnet.rollouts.DIVERGENCE_FACTOR`` times their start or stopped being finite), and the largest
    relative momentum changes and the median and largest true-energy change of the others."""
    few = test.select(slice(0, scale.drift_systems))
    started = time.perf_counter()
    result = rollout_systems(model, few.z[:, 0], few.params, scale.drift_steps, DT, method=default_method(model))
    healthy = result.diverged_at < 0
    drifts = {f"drift_{name}": math.inf for name in ("linear_momentum", "angular_momentum", "energy", "energy_median")}
    if bool(healthy.any()):
        report = conservation_report(result.z[healthy], few.system().hamiltonian,
                                     {k: v[healthy] for k, v in few.params.items()})
        drifts = {f"drift_{name}": float(values.max()) for name, values in report.items()}
        drifts["drift_energy_median"] = float(report["energy"].median())
    return drifts | {"drift_diverged": len(result.diverged), "drift_systems": few.n_systems,
                     "drift_diverged_at": min((int(result.diverged_at[b]) for b in result.diverged), default=None),
                     "drift_seconds": round(time.perf_counter() - started, 2)}


def run_one(scale: Scale, work: Path, paths: dict, test, label: str, name: str, group: str, windows: int,
            seed: int, device: str = "cpu", retry_failed: bool = False) -> dict | None:
    """Train (or resume) on ``device`` and score one run; the score is cached in ``work/scores``. Scoring is
    on the CPU whatever the training device (``model_from_checkpoint`` loads there), so every score comes
    from the same float64 evaluator.

    A run whose training diverges is a result, not a crash: hamnet's message (paths relative to ``work``)
    goes to ``work/failed/<run>.txt``, the report lists it, and None is returned so the other runs go on.
    Later calls skip it (a resume would repeat the same steps from the same checkpoint and diverge
    again) unless ``retry_failed``: for after its run folder was deleted or the scale's settings changed."""
    run = run_name(label, windows, seed)
    score_path = work / "scores" / f"{run}.json"
    if score_path.exists():
        return json.loads(score_path.read_text())
    failure = work / "failed" / f"{run}.txt"
    if failure.exists() and not retry_failed:
        logging.info("%s: training diverged before; skipped (--retry-failed tries again)", run)
        return None
    config = train_config(scale, name, group, windows, seed)
    folder = work / "runs" / run
    started = time.perf_counter()
    record = work / "devices" / f"{run}.jsonl"
    try:
        train_run(config, paths["train"], folder, device, record)
    except TrainingDiverged as error:
        record_failure(work, run, str(error))
        return None
    failure.unlink(missing_ok=True)  # a retry that got through replaces the failure
    trained = time.perf_counter() - started
    model, _ = model_from_checkpoint(folder / "last.pt")
    started = time.perf_counter()
    result = {"model": label, "windows": windows, "seed": seed, "epochs": config.epochs,
              "threads": torch.get_num_threads(),
              "train_seconds_per_1000_windows": seconds_per_1000_windows(folder, windows),
              "train_wall_seconds": round(trained, 1)}
    result |= score(model, test, scale)
    result["score_seconds"] = round(time.perf_counter() - started, 1)
    score_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(score_path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    logging.info("%s: window MSE %.3g, rollout final %.3g (train %.0f s, score %.0f s)", run,
                 result["window_mse"], result["rollout_error_final"], trained, result["score_seconds"])
    return result


def record_failure(work: Path, run: str, message: str) -> None:
    """``work/failed/<run>.txt``: hamnet's one line on why ``run`` diverged, paths relative to ``work``."""
    logging.error("%s: %s", run, message)
    failure = work / "failed" / f"{run}.txt"
    failure.parent.mkdir(parents=True, exist_ok=True)
    for prefix in {str(work.resolve()), str(work)}:
        message = message.replace(prefix + os.sep, "")
    with atomic_path(failure) as tmp:
        tmp.write_text(message + "\n")


def train_together(scale: Scale, work: Path, paths: dict, entries: list[tuple], device: str) -> None:
    """The seeds of one model and size (``entries``: plan entries) trained as one ensemble
    (:func:`hamnet.ensemble.train_ensemble`); :func:`run_one` then finds them trained and scores them. A
    member that diverged is recorded as :func:`run_one` records it."""
    members = []
    for label, name, group, windows, seed in entries:
        run, config = run_name(label, windows, seed), train_config(scale, name, group, windows, seed)
        folder = work / "runs" / run
        if (work / "scores" / f"{run}.json").exists() or (work / "failed" / f"{run}.txt").exists():
            continue
        if not (folder / "last.pt").exists():
            shutil.rmtree(folder, ignore_errors=True)
        if not (folder / "last.pt").exists() or load_checkpoint(folder / "last.pt")["epoch"] < config.epochs:
            members.append((run, folder, config))
    for resume in (True, False):  # members cut short go on, members not begun start, each group together
        todo = [member for member in members if (member[1] / "last.pt").exists() == resume]
        if not todo:
            continue
        for run, folder, _ in todo:
            record = work / "devices" / f"{run}.jsonl"
            record.parent.mkdir(parents=True, exist_ok=True)
            done = load_checkpoint(folder / "last.pt")["epoch"] if resume else 0
            with open(record, "a" if done else "w") as lines:
                lines.write(json.dumps({"device": device_name(device), "first_epoch": done + 1}) + "\n")
        results = train_ensemble([config for _, _, config in todo], paths["train"], [folder for _, folder, _ in todo],
                                 resume=resume, device=device)
        for (run, _, _), result in zip(todo, results):
            if "diverged" in result:
                record_failure(work, run, result["diverged"])


# -- summary ------------------------------------------------------------------------------------
METRICS = (
    ("window_mse", "window MSE (ours)"),
    ("window_mse_with_initial", "window MSE (ref. conv.)"),
    ("rollout_error_geometric_mean", "rollout err. geo. mean"),
    ("rollout_error_final", "rollout err. final"),
    ("drift_linear_momentum", "lin. mom. drift"),
    ("drift_angular_momentum", "ang. mom. drift"),
    ("drift_energy", "energy drift"),
    ("drift_energy_median", "energy drift (median)"),
    ("valid_prediction_time_median", "valid pred. time (median)"),
    ("divergence_rate", "diverged (test horizon)"),
    ("drift_diverged", "diverged systems (long)"),
    ("train_seconds_per_1000_windows", "train s / 1000 win."),
)


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds, per model and training size."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["windows"]), []).append(run)
    summary = {}
    for (label, windows), members in groups.items():
        entry = {"seeds": [r["seed"] for r in members], "epochs": members[0]["epochs"]}
        for key, _ in METRICS:
            # a diverged rollout has no drift to average: statistics over the seeds that stayed
            # finite, with the number that did not; a value left out on purpose (None: the seconds of a
            # run trained on a GPU) is neither
            given = [r[key] for r in members if r[key] is not None]
            values = [value for value in given if math.isfinite(value)]
            entry[key] = {"mean": statistics.fmean(values) if values else math.inf if given else math.nan,
                          "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                          "diverged": len(given) - len(values), "left_out": len(members) - len(given)}
        summary.setdefault(label, {})[str(windows)] = entry
    return summary


def cell(stat: dict, key: str) -> str:
    mean, std, diverged = stat["mean"], stat["std"], stat.get("diverged", 0)
    if math.isnan(mean):
        return "GPU (below)"
    if not math.isfinite(mean):
        return "diverged (every seed)"
    if key == "train_seconds_per_1000_windows":
        text = f"{mean:.2f} ± {std:.2f}"
    else:
        scientific = key.startswith(("drift", "window_mse"))  # MSEs reach 1e-5 at the paper's scale
        text = f"{mean:.2e} ± {std:.1e}" if scientific else f"{mean:.4f} ± {std:.4f}"
    return text + (f" ({diverged} seed{'s' if diverged > 1 else ''} diverged)" if diverged else "")


def table(summary: dict, scale: Scale, failed: frozenset[str] = frozenset()) -> list[str]:
    """The results table; a size with no score says whether its training diverged (a run in ``failed``)."""
    lines = ["| model | windows | epochs | " + " | ".join(title for _, title in METRICS) + " |",
             "|---" * (len(METRICS) + 3) + "|"]
    for label, _, _ in MODELS:
        for windows in scale.sizes:
            entry = summary.get(label, {}).get(str(windows))
            stopped = [seed for seed in scale.seeds if run_name(label, windows, seed) in failed]
            if entry is None:
                why = "training diverged (below)" if stopped else "not run yet"
                lines.append(f"| {label} | {windows} | - | " + " | ".join([why] * len(METRICS)) + " |")
                continue
            cells = [cell(entry[key], key) for key, _ in METRICS]
            epochs = f"{entry['epochs']}" + (f" (seed {', '.join(map(str, stopped))}: training diverged, below)"
                                             if stopped else "")
            lines.append(f"| {label} | {windows} | {epochs} | " + " | ".join(cells) + " |")
    return lines


# -- comparison with the paper and the reference implementation (the paper authors' code) ----------
#: the reference measured beside hamnet by benchmarks/reference_side_by_side.py: same evaluator, its own
#: protocol (width 128, 4 layers, 30 epochs, 1000 windows, lr 1e-3) on that script's data
SIDE_BY_SIDE = RESULTS / "reference_side_by_side.json"
GROUP_LABELS = {"T2": "HLieConv T(2)", "SO2": "HLieConv SO(2)"}


def reference_figures(path: Path = SIDE_BY_SIDE) -> dict | None:
    """The reference's figures from the side-by-side results, means over its seeds: window MSE in its
    convention and final rollout error per HLieConv label, and both sides' training seconds per 1000
    windows of T(2) per width (interleaved, one thread); None where that file is absent."""
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    runs: dict[str, list[dict]] = {}
    for name, run in results["runs"].items():
        side, group, _ = name.split("_")
        if side == "reference" and group in GROUP_LABELS:
            runs.setdefault(GROUP_LABELS[group], []).append(run)
    return {"mse": {label: statistics.fmean(r["window_mse_with_initial"] for r in members)
                    for label, members in runs.items()},
            "final": {label: statistics.fmean(r["rollout_error_final"] for r in members)
                      for label, members in runs.items()},
            "seeds": {label: len(members) for label, members in runs.items()},
            "seconds": {t["width"]: {side: statistics.fmean(t["seconds_per_1000_windows"][side])
                                     for side in ("reference", "hamnet")}
                        for t in results["timing"] if t["group"] == "T2"}}


ROUND_OFF = 1e-10  # "machine precision" for a 10,000-step float64 drift


def comparison(summary: dict, scale: Scale, runs: list[dict]) -> list[str]:
    """Plain statements of which claims hold in these results, with the numbers behind them."""
    mean = lambda label, windows, key: summary[label][str(windows)][key]["mean"]  # noqa: E731
    baselines = [label for label, name, _ in MODELS if name != "hlieconv"]
    lines = []
    for label in HLIECONV_LABELS:
        held = [w for w in scale.sizes
                if all(mean(label, w, "window_mse") < mean(b, w, "window_mse") for b in baselines)]
        lines.append(f"- Paper: HLieConv has lower test error than every baseline at every training size. "
                     f"{label} beats every baseline's mean window MSE at {len(held)} of {len(scale.sizes)} sizes"
                     f" ({', '.join(map(str, held)) or 'none'}).")
    per_model = len(scale.sizes) * len(scale.seeds)
    diverged = lambda label: sum(mean(label, w, "drift_diverged") * len(scale.seeds) for w in scale.sizes)  # noqa: E731
    for label, keys in (("HLieConv SO(2)", ("drift_linear_momentum", "drift_angular_momentum")),
                        ("HLieConv T(2)", ("drift_linear_momentum",))):
        worst = max(mean(label, w, k) for w in scale.sizes for k in keys)
        verdict = "holds" if worst < ROUND_OFF else "does not hold"
        lines.append(f"- Paper: {label} conserves {' and '.join(k.split('_')[1] for k in keys)} momentum to "
                     f"machine precision: {verdict} here (largest mean drift {worst:.1e} over "
                     f"{scale.drift_steps} float64 steps, over the rollouts that stayed healthy; "
                     f"{diverged(label):.0f} of {per_model * scale.drift_systems} rollouts diverged).")
    so2 = mean("HLieConv SO(2)", scale.sizes[-1], "drift_angular_momentum")
    for label in ("FC-NODE", "FC-HNN"):
        lowest = min(mean(label, w, "drift_angular_momentum") for w in scale.sizes)
        lines.append(f"- {label} over the same rollouts: {diverged(label):.0f} of {per_model * scale.drift_systems} "
                     "diverged (non-finite, or beyond hamnet.rollouts.DIVERGENCE_FACTOR times their start); "
                     + (f"angular-momentum drift of the others at least {lowest:.1e} (mean over seeds)"
                        if math.isfinite(lowest) else "none stayed healthy")
                     + f", against {so2:.1e} for SO(2) at {scale.sizes[-1]} windows.")
    reference = reference_figures()
    if reference is None:
        return lines + [f"- Reference implementation: no {SIDE_BY_SIDE.name} to compare with (run "
                        "benchmarks/reference_side_by_side.py)."]
    if 1000 in scale.sizes:
        ours = ", ".join(f"{k} {mean(k, 1000, 'window_mse_with_initial'):.2e} (ref. {v:.2e})"
                         for k, v in reference["mse"].items())
        finals = ", ".join(f"{k} {mean(k, 1000, 'rollout_error_final'):.2f} (ref. {v:.2f})"
                           for k, v in reference["final"].items())
        lines.append(f"- Reference implementation ({SIDE_BY_SIDE.name}: its protocol, width 128, 30 epochs, 1000 "
                     f"windows, mean of {max(reference['seeds'].values())} seeds, on that script's data) against "
                     f"these runs at 1000 windows (width {scale.width}, {epochs_for(scale, 1000)} epochs, this "
                     f"script's data), window MSE in its convention: {ours}. 500-step rollout error at the end: "
                     f"{finals}.")
    speed = mean("HLieConv T(2)", scale.sizes[-1], "train_seconds_per_1000_windows")
    if math.isnan(speed):  # trained on a GPU: no CPU figure to set beside the reference's
        return lines
    widths = reference["seconds"]
    same = widths.get(scale.width) if scale.depth == 4 else None
    fastest = [r["train_seconds_per_1000_windows_fastest_epoch"] for r in runs  # CPU runs with their folder here
               if (r["model"], r["windows"]) == ("HLieConv T(2)", scale.sizes[-1])
               and "train_seconds_per_1000_windows_fastest_epoch" in r]
    lines.append(f"- Training speed, HLieConv T(2): {speed:.2f} s per 1000 windows at width {scale.width}, "
                 f"{scale.depth} layers" + (f", {statistics.fmean(fastest):.2f} s in its fastest epoch" if fastest
                                            else "") +
                 " (epoch time, validation left out; the mean counts whatever else ran on the machine meanwhile, "
                 "the fastest epoch the least). " + (
                     f"Training steps alone, interleaved with the reference's in one process "
                     f"({SIDE_BY_SIDE.name}): hamnet {same['hamnet']:.1f} s, the reference {same['reference']:.1f} s."
                     if same else "The side-by-side timed " + " and ".join(
                         f"width {w} (hamnet {v['hamnet']:.1f} s, the reference {v['reference']:.1f} s)"
                         for w, v in sorted(widths.items())) + " with 4 layers, so not comparable."))
    return lines




# -- main ---------------------------------------------------------------------------------------
def notes_below_table(runs: list[dict], failed: dict[str, str]) -> list[str]:
    """What the table cannot say: where runs trained on a GPU ran, and why runs have no score."""
    md: list[str] = []
    elsewhere = sorted(f"{run_name(r['model'], r['windows'], r['seed'])} " + ", ".join(
        f"on {span['device']} for epochs {span['epochs'][0]}-{span['epochs'][1]} "
        f"({span['seconds_per_1000_windows']:.2f} s / 1000 windows)" for span in r["train_seconds_by_device"])
        for r in runs if "train_seconds_by_device" in r)
    if elsewhere:
        md += ["", "Trained wholly or partly on a GPU with `--device cuda` (scored on the CPU like the rest; their "
               "training seconds, on a GPU shared by several processes (benchmarks/results/gpu/gpu_speed.md), stay out "
               "of the table's last column, which is one CPU thread's): "
               + "; ".join(elsewhere) + "."]
    if failed:
        md += ["", f"**Training diverged in {len(failed)} run(s)**, which have no score. Rerunning skips them: with "
               "the same settings a resume repeats the same steps and diverges again. To try again, change the "
               "scale's settings (`SCALES`) or delete the run's folder, and pass `--retry-failed`.", ""]
        md += [f"- {run}: {why}" for run, why in sorted(failed.items())]
    return md


def write_results(name: str, scale_name: str, scale: Scale, runs: list[dict], paths: dict, args,
                  wall: float, failed: dict[str, str] | None = None) -> None:
    """The results files: ``runs`` (scores), and ``failed`` (run name -> why its training stopped)."""
    failed = failed or {}
    summary = summarise(runs)
    # what the runs cost, whichever invocations ran them (a report alone runs nothing): each run's training
    # in the invocation that finished it (a run resumed across invocations counts its last piece) and scoring
    in_runs = sum(r["train_wall_seconds"] + r["score_seconds"] for r in runs)
    header = {"scale": scale_name, "settings": dataclasses.asdict(scale), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor()}".strip(),
              "data": {k: v.name for k, v in paths.items()}, "wall_seconds_this_invocation": round(wall, 1),
              "report_only": bool(args.report), "seconds_in_runs": round(in_runs, 1), "failed": failed,
              "command": f"python benchmarks/springs.py --scale {scale_name} --threads {args.threads}"
                         + (f" --seeds {' '.join(map(str, scale.seeds))}" if args.seeds else "")}
    md = [f"# Springs: the paper's experiment at scale `{scale_name}`", "",
          f"Command: `{header['command']}` ({header['machine']}, torch {torch.__version__}, "
          f"**{header['threads']} torch thread(s)**). Scale: {scale.note}.", "",
          f"Data: springs N = {N_PARTICLES}, D = {DIM}, {STEPS} steps of dt = {DT}; {scale.train_systems} training "
          f"systems (seed {TRAIN_DATA_SEED}; {scale.validation:.0%} of them held out for validation, "
          f"{scale.validation_windows} windows scored per epoch) and {scale.test_systems} test systems (seed "
          f"{TEST_DATA_SEED}). Windows of {CHUNK} states, rk4 over each window, batch {scale.batch_size}, "
          f"lr {scale.lr}, Adam with cosine decay; seeds {', '.join(map(str, scale.seeds))}; the last "
          "checkpoint (end of the schedule) is scored.", "",
          f"Window MSE over {EVALUATION_WINDOWS} test windows (or all, if fewer): ours leaves the initial state out, "
          "the reference's convention averages it in (x 4/5). Rollout error: bounded relative error over "
          f"{STEPS} steps from every test system's first state, float64, HLieConv with leapfrog and the others with "
          f"rk4; geometric mean over time and value at the end. Drifts: largest relative change over "
          f"{scale.drift_steps} float64 steps (same integrators) of the first {scale.drift_systems} test systems, "
          "maximum over those systems. Every cell is mean ± standard deviation over seeds; per-seed values are in "
          "the JSON file.", ""]
    md += table(summary, scale, frozenset(failed))
    md += notes_below_table(runs, failed)
    expected = len(MODELS) * len(scale.sizes) * len(scale.seeds)
    if len(runs) < expected:
        md += ["", f"**Partial results: {len(runs)} of {expected} runs scored** (seeds {', '.join(map(str, scale.seeds))}); "
               "the comparison with the paper and the reference is written once every run is scored"
               + (" (the runs whose training diverged included)." if failed else ".")]
    else:
        md += ["", "## Against the paper and the reference implementation", ""] + comparison(summary, scale, runs)
    write_result_files(RESULTS / name, header | {"summary": summary, "runs": runs}, md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=tuple(SCALES), default="small", help="settings (see SCALES)")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="folder for data, run folders and scores (default benchmarks/work)")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these of the scale's seeds (default: all)")
    parser.add_argument("--device", default="cpu",
                        help="train on this device (cpu or cuda); scoring is on the CPU either way (default cpu)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="train again the runs whose training diverged (skipped otherwise: with the same settings "
                        "they diverge again)")
    parser.add_argument("--ensemble", action="store_true",
                        help="train the seeds of each model and size as one ensemble (hamnet.ensemble.train_ensemble: "
                        "each as alone, to round-off; for a GPU, where it saves kernel launches); the recorded "
                        "training seconds are then the ensemble's")
    add_piece_arguments(parser)
    args, part, parts = start_pieces(parser)
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu or cuda (or cuda:N), not {args.device!r}")
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch sees no CUDA device; train on the CPU (--device cpu)")
    scale = SCALES[args.scale]
    if args.seeds:
        unknown = set(args.seeds) - set(scale.seeds)
        if unknown:
            parser.error(f"--seeds {sorted(unknown)} not among the scale's seeds {scale.seeds}")
        scale = dataclasses.replace(scale, seeds=tuple(dict.fromkeys(args.seeds)))  # each seed once
    started = time.perf_counter()
    work = args.work / f"springs_{args.scale}"
    paths = {"train": data_file(work / "data", scale.train_systems, TRAIN_DATA_SEED),
             "test": data_file(work / "data", scale.test_systems, TEST_DATA_SEED)}
    test = load_trajectories(paths["test"])
    # largest training sizes first: they matter most and take longest, so pieces of a long run end on them
    plan = {run_name(label, windows, seed): (label, name, group, windows, seed) for seed in scale.seeds
            for windows in sorted(scale.sizes, reverse=True) for label, name, group in MODELS}
    if not args.report:
        if args.ensemble:
            together: dict[str, list[tuple]] = {}
            for label, name, group, windows, seed in plan.values():
                together.setdefault(run_name(label, windows, 0)[:-1] + "s-together", []).append(
                    (label, name, group, windows, seed))
            for key in my_runs(list(together), part, parts, work / "claims"):
                train_together(scale, work, paths, together[key], args.device)
        for run in my_runs(list(plan), part, parts, work / "claims"):
            run_one(scale, work, paths, test, *plan[run], device=args.device, retry_failed=args.retry_failed)
    scored = [work / "scores" / f"{run}.json" for run in plan]
    runs = [where_trained(json.loads(path.read_text()), work) for path in scored if path.exists()]
    failed = {run: (work / "failed" / f"{run}.txt").read_text().strip() for run in plan
              if (work / "failed" / f"{run}.txt").exists() and not (work / "scores" / f"{run}.json").exists()}
    write_results(f"springs_{args.scale}", args.scale, scale, runs, paths, args, time.perf_counter() - started,
                  failed)
    logging.info("done in %.0f s; wrote %s", time.perf_counter() - started, RESULTS / f"springs_{args.scale}.md")
    if failed:
        raise SystemExit(f"springs.py: training diverged in {len(failed)} run(s) ({', '.join(sorted(failed))}); "
                         f"the others are scored in {RESULTS / f'springs_{args.scale}.md'}")


if __name__ == "__main__":
    run_script(main)
