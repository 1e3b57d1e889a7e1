"""hamnet's HLieConv side by side with the reference implementation's: same data, same windows, one
evaluator, training speed interleaved in one process, peak training memory at equal width.

The reference is the paper authors' code, github mfinzi/LieConv (package ``lie_conv``) with its
trainer library mfinzi/olive-oil-ml (package ``oil``). It is read and run from checkouts given by
path, in an environment of its own: never vendored, never imported into hamnet, never a dependency.
Its side runs in ``benchmarks/reference_adapter.py`` under ``--reference-python`` (that module says
which two imports it steers so the reference runs unchanged on torch 2.13).

Building the reference's environment (outside the project; about a minute, torch 2.13.0 installs
from local disk here)::

    git clone https://github.com/mfinzi/LieConv /work/refenv/LieConv            # measured: 93affb1
    git clone https://github.com/mfinzi/olive-oil-ml /work/refenv/olive-oil-ml  # measured: 96412bf
    python3.11 -m venv /work/refenv/venv
    /work/refenv/venv/bin/pip install -c constraints.txt torch==2.13.0 torchdiffeq==0.2.5 numpy \
        matplotlib pillow tqdm filelock pandas dill natsort

The reference is not pip-installed (its setup.py fetches its dependencies from git). The first seven
packages are hamnet's (the evaluation and timing jobs import hamnet next to the reference); pandas,
dill and natsort are what oil's trainer imports. Neither torchvision nor h5py is needed.

Running (``--scale smoke`` checks the whole script in about a minute; ``protocol`` is the reference's
springs protocol as its side-by-side script ran it and takes hours on one thread; ``documented-1000`` and
``documented-3000`` are its springs study's own settings, width 384 and 100 or 57 epochs, many hours)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reference_side_by_side.py --scale protocol \\
        --reference /work/refenv/LieConv --oil /work/refenv/olive-oil-ml \\
        --reference-python /work/refenv/venv/bin/python

What a run does, per group (T(2), SO(2)) and seed:

1. Data: a springs training file and a held-out test file made by ``hamnet.generate`` (or given by
   ``--train-data`` / ``--test-data``), and ``--windows``-many 5-state training windows chosen once
   from the training file (seed ``WINDOW_SEED``: distinct systems, one window each at a random start,
   as the reference's own data takes one window per system), written as a *windows file* that both
   sides train on: hamnet as a trajectory file whose systems are the windows, the reference through
   its ``DynamicsDataset`` layout. Every window's clock starts at 0 on both sides.
2. Training: the reference's ``HLieResNet`` with its own ``IntegratedDynamicsTrainer``, loss (the
   initial state averaged in), Adam and ``cosLr`` schedule; hamnet's ``hlieconv`` with ``hamnet
   train``'s defaults plus the protocol's flags (the equivalent command is in the results), the kernel
   bound included (``--kernel-bound auto``, the default); and hamnet at its own settings, ``hamnet
   train``'s defaults but for the network's size (the integrator the rollouts use for the windows,
   lr 1e-2, batch 50), for as many epochs as fit in the reference's training time for that group
   (calibrated on one epoch). The reference is trained first for every seed, and its fastest time of
   the group is the budget: its seeds do the same work, so slower times measure the machine's load.
   Each side keeps its last weights (end of its schedule).
3. Evaluation: ``hamnet.evaluation.evaluate`` for all three models, in one interpreter. The
   reference's learned Hamiltonian is wrapped as a hamnet model (``ReferenceHamiltonian``: its own
   ``EuclideanK`` and ``compute_V``), so both are integrated by the same code: window MSE over the
   evaluator's test windows with rk4 in float32 (hamnet's convention and the reference's, initial state
   averaged in), and float64 rollouts over the test file's horizon (leapfrog for both, unless
   ``--rollout-method``): bounded relative error (geometric mean over time, final), valid prediction
   time (median; error above 0.1) and diverged systems. As a check of the wrapper, the reference's own
   ``get_rollout_mse`` (its odeint rk4) over the same test windows is reported next to it.
4. Speed: both sides' training steps interleaved in one process at equal width (``timing_widths``,
   T(2), rk4 windows, batch 200, one thread) over the same batches, order flipped every repetition;
   seconds per 1000 windows and the ratio.
5. Memory: peak resident memory (``VmHWM``) of a few training batches of each side, each in a fresh
   process, at the same widths.

Resumable: data, trained models and scores are cached under
``benchmarks/work/reference_side_by_side/<scale>/`` (git-ignored); a rerun does only what is missing.
Writes ``benchmarks/results/reference_side_by_side.{md,json}`` for ``--scale protocol`` and
``reference_side_by_side_<scale>.{md,json}`` otherwise (``--results`` moves them); ``--report`` only
writes them from what is cached.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hamnet.data import Windows
from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.paths import atomic_path
from hamnet.simulation import generate
from hamnet.training import train, with_kernel_bound
from hamnet.version import __version__
from hamnet.systems import make_system

sys.path.insert(0, str(Path(__file__).parent))
# the benchmarks' shared helpers; the scales and hamnet's cached training are the ablations' too
from pieces import (SCALES, Scale, hamnet_config, hamnet_flags, run_script, train_hamnet,  # noqa: E402
                    windows_file, write_result_files)

HERE = Path(__file__).resolve().parent
ADAPTER = HERE / "reference_adapter.py"
SYSTEM, N_PARTICLES, DIM, DT, CHUNK = "springs", 6, 2, 0.01, 5
TRAIN_DATA_SEED, TEST_DATA_SEED, WINDOW_SEED = 0, 1, 0
#: the group of the speed and memory measurements (the reference protocol's timing was T(2))
TIMING_GROUP = "T2"
#: (key, label): the three models of every group and seed
MODELS = (("reference", "reference, its protocol"), ("hamnet", "hamnet, the protocol"),
          ("hamnet-own", "hamnet, its defaults, same time"))


# -- data ---------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    """The file's sha256 (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_file(folder: Path, n_systems: int, steps: int, seed: int) -> Path:
    """The cached springs file for these generation parameters, generated on first use."""
    path = folder / f"{SYSTEM}_N{N_PARTICLES}_D{DIM}_steps{steps}_dt{DT:g}_systems{n_systems}_seed{seed}.npz"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        system = make_system(SYSTEM, n_particles=N_PARTICLES, dim=DIM)
        save_trajectories(path, generate(system, n_systems=n_systems, steps=steps, dt=DT, seed=seed))
        logging.info("generated %s", path.name)
    return path


# -- hamnet's side (its flags, config and cached training: pieces.py) --------------------------------
def hamnet_command(data_path: Path, flags: list[str]) -> str:
    """The ``hamnet train`` command line equivalent to a run (placeholders in capitals)."""
    return shlex.join(["hamnet", "train", "--data", data_path.name, "--out", "RUN", *flags, "--threads", "1"])


def own_settings_epochs(scale: Scale, group: str, windows: Path, budget: float, folder: Path) -> dict:
    """How many epochs of hamnet's own settings fit in ``budget`` seconds: one calibration epoch
    (its whole ``train`` call, setup included, so the estimate errs on the short side), decided once
    and kept in ``<folder>.plan.json``, beside the run (which a fresh start clears), so a resumed run
    keeps its schedule."""
    plan = folder.parent / f"{folder.name}.plan.json"
    if plan.exists():
        return json.loads(plan.read_text())
    calibration = folder.parent / f"calibration_{folder.name}"
    shutil.rmtree(calibration, ignore_errors=True)
    config = hamnet_config(hamnet_flags(scale, group, 0, own_epochs=1), windows)
    started = time.perf_counter()
    train(config, windows, calibration)
    per_epoch = time.perf_counter() - started
    shutil.rmtree(calibration, ignore_errors=True)
    decided = {"budget_seconds": budget, "calibration_seconds_per_epoch": per_epoch,
               "epochs": max(1, math.floor(budget / per_epoch))}
    plan.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(plan) as tmp:
        tmp.write_text(json.dumps(decided, indent=2) + "\n")
    return decided


# -- the reference's side (a subprocess in its own environment) ------------------------------------
@dataclass(frozen=True)
class Reference:
    """Where the reference lives and how to run it."""

    checkout: Path
    oil: Path
    python: str
    threads: int
    logs: Path

    def run(self, job: str, spec: dict, out: Path) -> dict:
        """Run one adapter job; its result (the JSON it wrote to ``out``). A failure is one line, with the
        job's log named."""
        out.parent.mkdir(parents=True, exist_ok=True)
        spec = spec | {"reference": str(self.checkout), "oil": str(self.oil), "out": str(out), "threads": self.threads}
        spec_path = out.with_name(out.stem + ".spec.json")
        spec_path.write_text(json.dumps(spec, indent=2))
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / ("_".join(out.relative_to(self.logs.parent).with_suffix("").parts) + ".log")
        env = os.environ | {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        with open(log, "w") as handle:
            finished = subprocess.run([self.python, str(ADAPTER), job, str(spec_path)], stdout=handle, stderr=handle,
                                      env=env, cwd=self.logs)
        if finished.returncode != 0:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            last = lines[-1] if lines else "no output"
            hint = ("; is --reference-python the reference's environment? (this script's docstring says how to "
                    "build it)" if "ModuleNotFoundError" in last else "")
            raise RuntimeError(f"the reference's {job} job failed under {self.python}: {last}{hint} (log: {log})")
        return json.loads(out.read_text())


def train_reference(reference: Reference, scale: Scale, group: str, seed: int, windows: Path, folder: Path) -> dict:
    """The reference trained at its protocol on the windows (cached in ``folder``)."""
    out, model = folder / "train.json", folder / "model.pt"
    if out.exists() and model.exists():
        return json.loads(out.read_text())
    spec = {"windows": str(windows), "group": group, "width": scale.width, "depth": scale.depth, "epochs": scale.epochs,
            "lr": scale.lr_for(group), "batch_size": scale.batch_size, "seed": seed, "model": str(model)}
    return reference.run("train", spec, out)


def reference_budget(runs: Path, group: str) -> float:
    """hamnet's training budget for ``group``: the fastest training time of the reference's runs of that
    group cached so far. Every seed does the same work (same windows, epochs and network), so the
    spread of its times is the machine's load, not the reference: its least loaded time is the fair
    one, and the smallest budget for hamnet."""
    times = [json.loads(path.read_text())["train_seconds"] for path in runs.glob(f"reference_{group}_seed*/train.json")]
    if not times:
        raise ValueError(f"no reference run of {group} in {runs} to take the training budget from")
    return min(times)


# -- one group and seed ---------------------------------------------------------------------------
def run_group_seed(reference: Reference, scale: Scale, group: str, seed: int, windows: Path, runs: Path) -> dict:
    """Train hamnet's two models of one group and seed (each skipped when done) after the reference's
    (trained first, for every seed: see :func:`reference_budget`); their training figures, also written
    to ``runs/<group>_seed<seed>.training.json``."""
    name = f"{group}_seed{seed}"
    reference_run = train_reference(reference, scale, group, seed, windows, runs / f"reference_{name}")
    protocol = hamnet_config(hamnet_flags(scale, group, seed), windows)
    hamnet_run = train_hamnet(protocol, windows, runs / f"hamnet_{name}")
    logging.info("%s: hamnet (protocol) trained, %.0f s of epochs", name, hamnet_run["epoch_seconds"])
    plan = own_settings_epochs(scale, group, windows, reference_budget(runs, group), runs / f"hamnet-own_{name}")
    own = hamnet_config(hamnet_flags(scale, group, seed, own_epochs=plan["epochs"]), windows)
    own_run = train_hamnet(own, windows, runs / f"hamnet-own_{name}")
    logging.info("%s: hamnet (own settings) trained, %d epochs, %.0f s of epochs", name, own_run["epochs"],
                 own_run["epoch_seconds"])
    figures = {"reference": {"train_seconds": reference_run["train_seconds"], "epochs": reference_run["epochs"],
                          "neighbourhood_radii": reference_run["neighbourhood_radii"],
                          "parameters": reference_run["parameters"]},
            "hamnet": hamnet_run | {"train_seconds": hamnet_run["wall_seconds"] or hamnet_run["epoch_seconds"]},
            "hamnet-own": own_run | {"train_seconds": own_run["wall_seconds"] or own_run["epoch_seconds"],
                                     "budget_seconds": plan["budget_seconds"],
                                     "calibration_seconds_per_epoch": plan["calibration_seconds_per_epoch"]}}
    with atomic_path(runs / f"{name}.training.json") as tmp:
        tmp.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def evaluate_models(reference: Reference, scale: Scale, runs: Path, scores: Path, test: Path,
                    method: str | None) -> None:
    """Score every trained model not yet scored, all in one evaluation job (one interpreter, one evaluator).
    A group and seed counts as trained once all three of its models are (its ``.training.json``)."""
    models = []
    for group in scale.groups:
        for seed in scale.seeds:
            name = f"{group}_seed{seed}"
            if not (runs / f"{name}.training.json").exists():
                continue
            for key, _ in MODELS:
                path = runs / f"{key}_{name}" / ("model.pt" if key == "reference" else "last.pt")
                out = scores / f"{key}_{name}.json"
                if path.exists() and not out.exists():
                    models.append({"label": f"{key}_{name}", "kind": "reference" if key == "reference" else "hamnet",
                                   "path": str(path), "out": str(out)})
    if models:
        started = time.perf_counter()
        reference.run("evaluate", {"test": str(test), "rollout_method": method, "models": models},
                      scores / "evaluate.json")
        logging.info("scored %d models in %.0f s", len(models), time.perf_counter() - started)


def measure_speed_and_memory(reference: Reference, scale: Scale, windows: Path, folder: Path) -> None:
    """Interleaved timing and per-side peak memory at each of ``scale.timing_widths``, each cached in
    ``folder``."""
    data = load_trajectories(windows)
    data = Trajectories(data.t, data.z.float(), {k: v.float() for k, v in data.params.items()}, data.meta)
    for width in scale.timing_widths:
        config = hamnet_config(hamnet_flags(scale, TIMING_GROUP, 0, width=width), windows)
        config = with_kernel_bound(config, Windows(data, config.chunk))
        spec = {"windows": str(windows), "group": TIMING_GROUP, "width": width, "depth": scale.depth,
                "lr": scale.lr_for(TIMING_GROUP),
                "batch_size": scale.batch_size, "seed": 0, "hamnet_config": config.as_dict()}
        out = folder / f"timing_width{width}.json"
        if not out.exists():
            reference.run("timing", spec | {"windows_per_repeat": scale.timing_windows,
                                            "repeats": scale.timing_repeats}, out)
            logging.info("timing at width %d done", width)
        for side in ("reference", "hamnet"):
            out = folder / f"memory_{side}_width{width}.json"
            if not out.exists():
                reference.run("memory", spec | {"side": side, "batches": scale.memory_batches}, out)
                logging.info("memory of %s at width %d done", side, width)


# -- summary --------------------------------------------------------------------------------------
SCORE_COLUMNS = (
    ("window_mse", "window MSE (hamnet conv.)", "{:.2e}"),
    ("window_mse_with_initial", "window MSE (ref. conv.)", "{:.2e}"),
    ("reference_own_window_mse", "ref.'s own MSE (check)", "{:.2e}"),
    ("rollout_error_geometric_mean", "rollout err. geo. mean", "{:.3f}"),
    ("rollout_error_final", "rollout err. final", "{:.3f}"),
    ("valid_prediction_time_median", "valid pred. time (median)", "{:.2f}"),
    ("train_seconds", "training s", "{:.0f}"),
)


def flatten_score(score: dict, training: dict) -> dict:
    """One model's figures as flat numbers."""
    flat = {key: score.get(key, math.nan) for key in ("window_mse", "window_mse_with_initial",
                                                      "reference_own_window_mse", "rollout_error_geometric_mean",
                                                      "rollout_error_final")}
    flat["valid_prediction_time_median"] = score.get("valid_prediction_time", {}).get("median", math.nan)
    flat["diverged"] = score.get("diverged", math.nan)
    flat["n_systems"] = score.get("n_systems")
    flat["rollout_method"] = score.get("rollout_method")
    flat["train_seconds"] = training.get("train_seconds", math.nan)
    flat["epochs"] = training.get("epochs")
    return flat


def mean_std(values: list[float], form: str = "{:.3g}") -> str:
    """``mean ± standard deviation`` of the finite values (the mean alone for one value)."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return "n/a"
    mean = form.format(statistics.fmean(finite))
    return f"{mean} ± {statistics.stdev(finite):.1g}" if len(finite) > 1 else mean


def score_table(runs: dict, scale: Scale) -> list[str]:
    """One row per group and model: mean ± standard deviation over the seeds scored."""
    lines = ["| group | model | seeds | epochs | " + " | ".join(title for _, title, _ in SCORE_COLUMNS)
             + " | diverged |",
             "|---" * (len(SCORE_COLUMNS) + 5) + "|"]
    for group in scale.groups:
        for key, label in MODELS:
            seeds = [seed for seed in scale.seeds if f"{key}_{group}_seed{seed}" in runs]
            members = [runs[f"{key}_{group}_seed{seed}"] for seed in seeds]
            if not members:
                cells = " | ".join(["not run yet"] * len(SCORE_COLUMNS))
                lines.append(f"| {group} | {label} | - | - | {cells} | - |")
                continue
            cells = [mean_std([m[column] for m in members], form)
                     if key == "reference" or column != "reference_own_window_mse" else "-"
                     for column, _, form in SCORE_COLUMNS]
            diverged = "+".join(str(m["diverged"]) for m in members) + f" of {members[0]['n_systems']}"
            epochs = "/".join(str(m["epochs"]) for m in members)
            lines.append(f"| {group} | {label} | {', '.join(map(str, seeds))} | {epochs} | " + " | ".join(cells)
                         + f" | {diverged} |")
    return lines


def speed_lines(timing: list[dict], memory: list[dict]) -> list[str]:
    """The timing table (mean ± standard deviation over repetitions, and the ratio of means), the memory
    table, and whether hamnet's peak is at most the reference's at each width."""
    lines = ["| width | reference s / 1000 windows | hamnet s / 1000 windows | reference / hamnet | "
             "same, CPU seconds |", "|---|---|---|---|---|"]
    for entry in timing:
        wall, cpu = entry["seconds_per_1000_windows"], entry["cpu_seconds_per_1000_windows"]
        ratio = statistics.fmean(wall["reference"]) / statistics.fmean(wall["hamnet"])
        cpu_ratio = statistics.fmean(cpu["reference"]) / statistics.fmean(cpu["hamnet"])
        lines.append(f"| {entry['width']} | {mean_std(wall['reference'])} | {mean_std(wall['hamnet'])} | "
                     f"{ratio:.2f}x | {cpu_ratio:.2f}x |")
    lines += ["", "| width | side | peak RSS | RSS before training | growth in training |", "|---|---|---|---|---|"]
    gib = 1024 ** 3
    for entry in memory:
        sizes = [f"{entry[key] / gib:.2f} GiB" for key in ("peak_rss_bytes", "rss_before_training_bytes",
                                                            "training_growth_bytes")]
        lines.append(f"| {entry['width']} | {entry['side']} | " + " | ".join(sizes) + " |")
    for width in sorted({entry["width"] for entry in memory}):
        sides = {e["side"]: e for e in memory if e["width"] == width}
        if len(sides) == 2:
            ours, theirs = sides["hamnet"], sides["reference"]
            verdicts = ["at most" if ours[key] <= theirs[key] else "above"
                        for key in ("peak_rss_bytes", "training_growth_bytes")]
            lines.append(f"\nAt width {width}, hamnet's peak training memory is {verdicts[0]} the reference's "
                         f"({ours['peak_rss_bytes'] / gib:.2f} GiB against {theirs['peak_rss_bytes'] / gib:.2f} GiB), "
                         f"and its growth in training {verdicts[1]} ({ours['training_growth_bytes'] / gib:.2f} GiB "
                         f"against {theirs['training_growth_bytes'] / gib:.2f} GiB).")
    return lines


def machine() -> str:
    """Architecture, CPU model and core count, in words."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()} {model} ({os.cpu_count()} cores), {platform.system()}"


def write_results(path: Path, header: dict, runs: dict, training: dict, timing: list, memory: list,
                  scale: Scale) -> None:
    """``path.json`` with every figure and ``path.md`` with the tables and how they were made."""
    document = header | {"runs": runs, "training": training, "timing": timing, "memory": memory}
    md = how_it_was_made(header, scale) + score_table(runs, scale)
    md += ["", f"## Training speed and memory (T(2), rk4 windows, batch {scale.batch_size}, one thread)", "",
           f"Interleaved in one process, batch by batch over the same {scale.timing_windows} windows, "
           f"{scale.timing_repeats} repetitions (order flipped each), a warm-up batch first; a step is each side's "
           "per-batch training work, data included, without logging, checkpoints or validation. Memory: each side in "
           f"a fresh process, {scale.memory_batches} batches, peak resident memory (VmHWM); the growth column "
           "leaves out what each side's imports and setup hold.", ""]
    md += speed_lines(timing, memory) if timing else ["Not measured yet."]
    md += ["", "## What still differs", ""] + [f"- {note}" for note in FAIRNESS_NOTES]
    write_result_files(path, document, md)


def learning_rates(scale: Scale) -> str:
    """The scale's learning rate, or each group's."""
    rates = {group: scale.lr_for(group) for group in scale.groups}
    return (f"{scale.lr:g}" if set(rates.values()) == {scale.lr} else
            ", ".join(f"{rate:g} for {group}" for group, rate in rates.items()) + " (LR in the commands below)")


def how_it_was_made(header: dict, scale: Scale) -> list[str]:
    """The results' opening: command, machine, environments, data, both sides' settings, the evaluator."""
    probe = header["reference_environment"]
    return [f"# hamnet against the reference implementation, side by side (scale `{header['scale']}`)", "",
          "Commands (each added to the cache the results are read from): "
          + "; ".join(f"`{line}`" for line in header["commands"]), "",
          f"Machine: {header['machine']}; **{header['threads']} torch thread(s)**. hamnet {__version__} under "
          f"{header['hamnet_python']} (torch {header['hamnet_torch']}); the reference (mfinzi/LieConv "
          f"{probe['reference_revision'][:12]}, mfinzi/olive-oil-ml {probe['oil_revision'][:12]}, run from "
          f"`{probe['reference_checkout']}`) under {probe['executable']} (torch {probe['torch']}).", "",
          f"Scale: {scale.note}.", "",
          f"Data: {header['data']['train']} (training) and {header['data']['test']} (held out); {scale.windows} "
          f"training windows of {CHUNK} states chosen once (seed {WINDOW_SEED}, one per system, random start), "
          f"the same for both sides and every seed: `{header['data']['windows']}`.", "",
          "Training, both sides on those windows, seeds " + ", ".join(map(str, scale.seeds))
          + " (the table's seeds column says which are measured):", "",
          f"- reference: its `HLieResNet` (width {scale.width}, {scale.depth} layers, its defaults otherwise) with its "
          f"`IntegratedDynamicsTrainer`: its loss (initial state averaged in), Adam lr {learning_rates(scale)}, `cosLr` over "
          f"{scale.epochs} epochs, shuffled batches of {scale.batch_size}, float32, its logging off;",
          f"- hamnet, the protocol: `{header['hamnet_commands']['protocol']}`;",
          f"- hamnet, its defaults: `{header['hamnet_commands']['own']}` (everything else `hamnet train`'s defaults), "
          "EPOCHS as many as fit in the reference's fastest training time of the group (calibrated on one epoch).", "",
          "Both keep their last weights. Evaluator: `hamnet.evaluation.evaluate` for all models in one interpreter; "
          "the reference's learned H wrapped as a hamnet model, so both sides are integrated by the same code: "
          "window MSE over the evaluator's test windows (rk4, float32; hamnet's convention leaves the initial state "
          f"out, the reference's averages it in), rollouts in float64 with {header['rollout_method']} over the test "
          "horizon (bounded relative error: geometric mean over time and final; valid prediction time: median time "
          "until it exceeds 0.1; diverged systems). \"ref.'s own MSE\" is the reference's own `get_rollout_mse` (its "
          "odeint rk4) over the same test windows: it should equal the reference-convention column. Cells are "
          "mean ± standard deviation over seeds; per-seed values are in the JSON file.", ""]


FAIRNESS_NOTES = (
    "Each side keeps its own loss, schedule and batch shuffling: the reference's loss averages the exact initial "
    "state in (x 4/5, which Adam all but cancels) and its cosine floors at 1e-3 of the learning rate; hamnet's decays "
    "to 0.",
    "hamnet trains with its default kernel bound (`--kernel-bound auto`: twice the largest kernel input in the "
    "training windows); the reference's LieConv instead drops pairs beyond its neighbourhood radius (fill 1). Both "
    "are each side's own default.",
    "Rollouts use hamnet's integrator for both models (leapfrog in float64 by default); the reference's own "
    "rollouts used torchdiffeq's rk4 in float32. `--rollout-method rk4` scores both with rk4.",
    "The reference's training time is `trainer.train` alone, with its logging switched off (its example script "
    "evaluates validation and test batches during training, up to a quarter of the time); hamnet's includes writing "
    "a checkpoint every epoch. The fastest of those times over the group's seeds is the budget of hamnet's "
    "defaults for every seed (the seeds do the same work; slower runs met a busier machine); hamnet's epochs are "
    "calibrated on one epoch, setup included, under the load of that moment.",
    "Valid prediction time is capped by the test horizon (500 steps, 5 time units): a median of 5 means more than "
    "half the systems stayed within 0.1 throughout.",
    "Every window's clock starts at 0 on both sides (the reference's own data used absolute times, whose float32 "
    "round-off perturbs its rk4 steps).",
)




# -- main -----------------------------------------------------------------------------------------
def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=tuple(SCALES), default="smoke", help="settings (see pieces.SCALES)")
    parser.add_argument("--reference", type=Path, help="checkout of mfinzi/LieConv (holds lie_conv/); needed unless "
                        "--report")
    parser.add_argument("--oil", type=Path, default=None,
                        help="checkout of mfinzi/olive-oil-ml (holds oil/; default: olive-oil-ml beside --reference)")
    parser.add_argument("--reference-python", default=sys.executable,
                        help="interpreter of the reference's environment (default: this one)")
    parser.add_argument("--train-data", type=Path, help="springs training file (default: generated, seed 0)")
    parser.add_argument("--test-data", type=Path, help="held-out springs file (default: generated, seed 1)")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these of the scale's seeds")
    parser.add_argument("--groups", nargs="+", choices=("T2", "SO2"), help="only these of the scale's groups")
    parser.add_argument("--rollout-method", default=None, help="rollout integrator for both (default: the evaluator's, "
                        "leapfrog for these separable models)")
    parser.add_argument("--skip-speed", action="store_true", help="no timing or memory measurements")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default: 1)")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "reference_side_by_side",
                        help="cache of data, models and scores (default: benchmarks/work/reference_side_by_side)")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="folder for the results files")
    parser.add_argument("--report", action="store_true", help="write the results from what is cached; run nothing")
    args = parser.parse_args()
    if args.reference is None and not args.report:
        parser.error("--reference PATH (a checkout of mfinzi/LieConv) is needed to run the reference")
    if args.reference is not None:
        args.oil = args.oil or args.reference.parent / "olive-oil-ml"
        if not (args.reference / "lie_conv" / "dynamicsTrainer.py").is_file():
            parser.error(f"--reference {args.reference} is not a checkout of mfinzi/LieConv "
                         "(no lie_conv/dynamicsTrainer.py)")
        if not (args.oil / "oil" / "model_trainers" / "trainer.py").is_file():
            parser.error(f"--oil {args.oil} is not a checkout of mfinzi/olive-oil-ml "
                         "(no oil/model_trainers/trainer.py)")
    for flag, path in (("--train-data", args.train_data), ("--test-data", args.test_data)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path} is not a file")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def chosen_scale(args: argparse.Namespace) -> Scale:
    """The scale, narrowed to ``--seeds`` / ``--groups``."""
    scale = SCALES[args.scale]
    for name in ("seeds", "groups"):
        chosen = getattr(args, name)
        if chosen:
            unknown = set(chosen) - set(getattr(scale, name))
            if unknown:
                raise SystemExit(f"--{name} {sorted(unknown)} not among the scale's {getattr(scale, name)}")
            scale = dataclasses.replace(scale, **{name: tuple(chosen)})
    return scale


def main() -> None:
    args = parse_arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamnet.training").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    scale = chosen_scale(args)
    root = args.work / args.scale
    train_path = args.train_data or data_file(root / "data", scale.train_systems, scale.steps, TRAIN_DATA_SEED)
    test_path = args.test_data or data_file(root / "data", scale.test_systems, scale.steps, TEST_DATA_SEED)
    windows = windows_file(root / "data", train_path, scale.windows, WINDOW_SEED, CHUNK)
    folder = root / f"{windows.stem}_test{sha256(test_path)[:12]}"
    runs, scores = folder / "runs", folder / f"scores_{args.rollout_method or 'default'}"
    command = folder / "command.json"
    if not args.report:
        reference = Reference(args.reference.resolve(), args.oil.resolve(), args.reference_python, args.threads,
                              folder / "logs")
        probe = reference.run("probe", {}, folder / "probe.json")
        if probe["torch"] != torch.__version__:
            logging.warning("torch differs: %s here, %s in the reference's environment", torch.__version__,
                            probe["torch"])
        record_command(command, shlex.join(["python", *sys.argv]))
        for seed in scale.seeds:
            for group in scale.groups:
                trained = train_reference(reference, scale, group, seed, windows, runs / f"reference_{group}_seed{seed}")
                logging.info("%s seed %d: reference trained in %.0f s", group, seed, trained["train_seconds"])
        for seed in scale.seeds:
            for group in scale.groups:
                run_group_seed(reference, scale, group, seed, windows, runs)
        evaluate_models(reference, scale, runs, scores, test_path, args.rollout_method)
        if not args.skip_speed:
            measure_speed_and_memory(reference, scale, windows, folder)
    if not command.exists():
        raise SystemExit(f"nothing cached in {folder} yet: run without --report first")
    training = collect_training(runs, scale)
    timing, memory = collect_speed(folder, scale)
    header = {"scale": args.scale, "settings": dataclasses.asdict(scale), "commands": commands_run(command),
              "machine": machine(), "threads": args.threads, "hamnet_version": __version__,
              "hamnet_python": sys.executable, "hamnet_torch": torch.__version__,
              "reference_environment": json.loads((folder / "probe.json").read_text()),
              "rollout_method": args.rollout_method or "leapfrog",
              "data": {"train": train_path.name, "test": test_path.name, "windows": windows.name},
              "hamnet_commands": {"protocol": hamnet_command(windows, hamnet_flags(scale, "GROUP", "SEED")),
                                  "own": hamnet_command(windows, hamnet_flags(scale, "GROUP", "SEED",
                                                                              own_epochs="EPOCHS"))}}
    name = "reference_side_by_side" + ("" if args.scale == "protocol" else f"_{args.scale}")
    write_results(args.results / name, header, collect_scores(scores, training, scale), training, timing, memory, scale)
    logging.info("wrote %s", args.results / f"{name}.md")


def commands_run(path: Path) -> list[str]:
    """The command lines recorded in ``path`` (a run in pieces has several; an old cache holds one string)."""
    recorded = json.loads(path.read_text())
    return [recorded] if isinstance(recorded, str) else recorded


def record_command(path: Path, line: str) -> None:
    """Add ``line`` to the commands recorded in ``path`` (once)."""
    lines = commands_run(path) if path.exists() else []
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(lines if line in lines else [*lines, line]))


def collect_training(runs: Path, scale: Scale) -> dict:
    """The training figures of every group and seed trained so far, keyed ``<group>_seed<seed>``."""
    return {f"{group}_seed{seed}": json.loads(path.read_text()) for group in scale.groups for seed in scale.seeds
            if (path := runs / f"{group}_seed{seed}.training.json").exists()}


def collect_speed(folder: Path, scale: Scale) -> tuple[list, list]:
    """The timing and memory measurements made so far."""
    timing = [json.loads(p.read_text()) for w in scale.timing_widths
              if (p := folder / f"timing_width{w}.json").exists()]
    memory = [json.loads(p.read_text()) for w in scale.timing_widths for side in ("reference", "hamnet")
              if (p := folder / f"memory_{side}_width{w}.json").exists()]
    return timing, memory


def collect_scores(scores: Path, training: dict, scale: Scale) -> dict:
    """Every scored model's flat figures, keyed ``<model>_<group>_seed<seed>``."""
    results = {}
    for group in scale.groups:
        for seed in scale.seeds:
            name = f"{group}_seed{seed}"
            for key, _ in MODELS:
                path = scores / f"{key}_{name}.json"
                if path.exists() and name in training:
                    results[f"{key}_{name}"] = flatten_score(json.loads(path.read_text()), training[name][key])
    return results


if __name__ == "__main__":
    run_script(main)
