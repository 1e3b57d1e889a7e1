"""Why a learned Lennard-Jones cluster's true energy drifts, and what training does about it.

The question (issue 24): a learned springs model keeps the true energy within 1% over 10,000 steps; a
learned soft-core Lennard-Jones cluster (``systems/lennard_jones.py``, six particles in 2D) drifted 13%.
Which part is the integrator, which the learned potential, and what in training changes it?

Data: ``hamnet generate --system lennard-jones`` at its defaults (kT 0.1, dt 0.01): 1000 training systems
over 500 steps (seed 0) and 300 held-out systems over 10,000 steps (seed 1). Every run is ``hamnet train``
on the training file with 3000 windows and the flags of its row (:data:`ROWS`), then measured as
``hamnet evaluate`` measures a model (its ``best.pt``; float64 leapfrog from every held-out system's first
state over all 10,000 steps, at the sub-steps it trained with): the true energy's largest relative change
``|H(t) - H(0)| / |H(0)|``, median and largest over systems, the momenta's, divergences and exits from the
training region. Beside them, on the held-out systems' true states (every 100th of the 10,000 steps):

* **force error**: ``|F_learned - F_true| / |F_true|`` per state (norms over the particles), the median;
* **potential error spread**: per system, ``max - min`` over its true states of ``V_learned - V_true``,
  relative to ``|H(0)|``, the median. A learned flow keeps the *learned* energy, so along it the true
  energy changes by the change of that error between the states it visits: this is the drift a perfect
  integrator of the learned ``H`` would show if it visited the true states;
* **integrator**: the true Hamiltonian rolled out by the same float64 leapfrog at dt 0.01 (no learned part):
  the drift the integrator alone causes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lennard_jones.py &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lennard_jones.py &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lennard_jones.py --report

Two processes share the runs (``pieces.py``); each run is resumable. ``--scale smoke`` checks the script end
to end in a minute (its numbers mean nothing). Writes ``benchmarks/results/lennard_jones[_smoke].{md,json}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hamnet.checkpoint import model_from_checkpoint
from hamnet.data import DEFAULT_CHUNK, Windows
from hamnet.evaluation import EVALUATION_WINDOWS, evaluate
from hamnet.loss import window_mse
from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.rollouts import trained_substeps
from hamnet.simulation import generate
from hamnet.systems import LennardJones, Springs

sys.path.insert(0, str(Path(__file__).parent))
from pieces import (HeldOutScale, add_piece_arguments, hamnet_config, held_out_files, my_runs,  # noqa: E402
                    run_script, start_pieces, train_hamnet, true_leapfrog, write_json, write_result_files)

HERE = Path(__file__).parent
#: the spans of :func:`windows_by_time`: the first and the last 5 time units of the held-out trajectories
SPAN_STEPS = 500


@dataclass(frozen=True)
class Scale(HeldOutScale):
    width: int | None
    epochs_scale: float
    probe_every: int
    note: str


SCALES = {
    "small": Scale(1000, 500, 300, 10_000, 3000, None, 1.0, 100,
                   "1000 training systems x 500 steps, 3000 windows; 300 held-out systems x 10,000 steps"),
    "smoke": Scale(40, 30, 6, 60, 60, 8, 0.04, 10, "a check that the script runs end to end; its numbers mean nothing"),
}

#: (row, group, flags added to ``--max-windows``, what it is, seeds, training data): each row is one change from a
#: row above it. Training data "lattice": the first 5 time units after the lattice starts (what ``hamnet generate``
#: gives); "equilibrated": of the same systems, 5 time units starting at a random time in [0, 100] (see
#: :func:`equilibrated_file`), the states a 10,000-step rollout visits.
ROWS = [
    ("SO(2), defaults", "SO2", ["--epochs", "30"], "hamnet train's defaults (lr 1e-2, 30 epochs)", (0,), "lattice"),
    ("SO(2), lr 3e-3, 100 epochs", "SO2", ["--epochs", "100", "--lr", "3e-3"],
     "a lower learning rate, more than three times the optimiser steps", (0, 1, 2), "lattice"),
    ("SO(2), lr 3e-3, 100 epochs, equilibrated data", "SO2", ["--epochs", "100", "--lr", "3e-3"],
     "the row above, trained on states from the whole 100 time units", (0,), "equilibrated"),
    ("SE(2), defaults", "SE2", ["--epochs", "30"], "the first row's training, the group of rigid motions", (0,),
     "lattice"),
    ("SO(2), 100 epochs", "SO2", ["--epochs", "100"], "the second row's optimiser steps at the default lr 1e-2",
     (0,), "lattice"),
    ("T(2), defaults", "T2", ["--epochs", "30"], "the first row's training, translations only", (0,), "lattice"),
]


def run_names(scale: Scale) -> list[str]:
    return [run_name(row[0], seed) for row in ROWS for seed in row[4]]


def run_name(row: str, seed: int) -> str:
    slug = row.lower().replace("(", "").replace(")", "").replace(",", "").replace(" ", "-")
    return f"{slug}_seed{seed}"


def equilibrated_file(work: Path, scale: Scale) -> Path:
    """The training file's systems (the same seed), each over ``train_steps`` steps from a start drawn uniformly
    from the held-out horizon's steps: training states spread over the 100 time units a rollout covers, where
    the lattice file has the first 5 only (the clusters keep rearranging long after their lattice start)."""
    path = work / "data" / f"equilibrated_systems{scale.train_systems}_steps{scale.train_steps}_seed0.npz"
    if not path.exists():
        logging.info("generating %s (each system over %d steps)", path.name, scale.test_steps + scale.train_steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        full = generate(LennardJones(), n_systems=scale.train_systems, steps=scale.test_steps + scale.train_steps,
                        dt=0.01, seed=0)
        starts = torch.randint(0, scale.test_steps + 1, (scale.train_systems,), generator=torch.Generator().manual_seed(0))
        index = starts[:, None] + torch.arange(scale.train_steps + 1)
        z = full.z[torch.arange(scale.train_systems)[:, None], index]
        meta = {**full.meta, "steps": scale.train_steps,
                "note": f"lennard_jones.py: system i over steps [s_i, s_i + {scale.train_steps}] of a "
                        f"{scale.test_steps + scale.train_steps}-step run, s_i uniform in [0, {scale.test_steps}]"}
        save_trajectories(path, Trajectories(full.t[: scale.train_steps + 1].clone(), z.clone(), full.params, meta))
    return path


def flags(scale: Scale, row: tuple, seed: int) -> list[str]:
    _, group, extra, _, _, _ = row
    extra = list(extra)
    if scale.epochs_scale != 1:
        at = extra.index("--epochs") + 1
        extra[at] = str(max(1, round(int(extra[at]) * scale.epochs_scale)))
    width = ["--width", str(scale.width), "--depth", "1"] if scale.width else []
    return ["--model", "hlieconv", "--group", group, "--max-windows", str(scale.windows), "--seed", str(seed),
            *width, *extra]


def probe(model, test: Trajectories, every: int) -> dict:
    """Force error and potential error spread of ``model`` on the held-out systems' true states (a float64
    copy of ``model``; the caller's keeps its dtype)."""
    model = copy.deepcopy(model).double()
    system = test.system()
    z = test.z[:, ::every].double()
    b, t = z.shape[:2]
    q = z[:, :, 0].reshape(b * t, *z.shape[3:])
    params = {k: v.double().repeat_interleave(t, 0) for k, v in test.params.items()}
    with torch.no_grad():
        error = (model.potential(q, params) - system.potential(q, params)).reshape(b, t)
        h0 = system.hamiltonian(z[:, 0], {k: v.double() for k, v in test.params.items()}).abs()
    truth = system.forces(q, params)
    forces = torch.cat([model.forces(part, {k: v[i:i + 2000] for k, v in params.items()}).detach()
                        for i, part in zip(range(0, len(q), 2000), q.split(2000))])
    force_error = (forces - truth).norm(dim=(1, 2)) / truth.norm(dim=(1, 2))
    spread = (error.amax(1) - error.amin(1)) / h0
    return {"force_error_median": float(force_error.median()), "force_error_q90": float(force_error.quantile(0.9)),
            "potential_error_spread_median": float(spread.median()), "states": int(b * t)}


def integrator_floor(test: Trajectories) -> dict:
    """The true Hamiltonian through the same float64 leapfrog at the data's dt: the integrator's own drift, and
    its own window MSE (the error a model that had learned the true ``H`` exactly would be trained against)."""
    result, energy = true_leapfrog(test)
    return {"energy": energy, "diverged": len(result.diverged), **windows_by_time(test.system(), test, "leapfrog")}


def windows_by_time(model, test: Trajectories, method: str) -> dict:
    """Window MSE (5-state windows, ``method``, the model's dtype) over the held-out systems' first and last
    :data:`SPAN_STEPS` steps: how well a model trained on the first 5 time units after a lattice start fits the
    states the clusters reach 100 time units later."""
    spans = {"window_mse_first": slice(0, SPAN_STEPS + 1), "window_mse_last": slice(-SPAN_STEPS - 1, None)}
    dtype = next(model.parameters()).dtype if isinstance(model, torch.nn.Module) else torch.float64
    out = {}
    for key, span in spans.items():
        part = Trajectories(test.t[: SPAN_STEPS + 1], test.z[:, span], test.params, dict(test.meta))
        windows = Windows(part, DEFAULT_CHUNK, max_windows=EVALUATION_WINDOWS, seed=0)
        out[key] = window_mse(model, windows, float(test.meta["dt"]), method=method, dtype=dtype,
                              substeps=trained_substeps(model))["mse"]
    return out


def springs_probe(work: Path, scale: Scale) -> dict:
    """The same probe for the shipped ``springs-so2`` on springs systems drawn as its training ones were (300
    systems over 500 steps, seed 1; every 5th state): how well a model that keeps springs' energy within 1% fits."""
    path = work / "data" / f"springs_systems{scale.test_systems}_steps500_seed1.npz"
    if not path.exists():
        save_trajectories(path, generate(Springs(), n_systems=scale.test_systems, steps=500, dt=0.01, seed=1))
    return {"model": "springs-so2 (pretrained)", **probe(model_from_checkpoint("springs-so2")[0],
                                                         load_trajectories(path), 5)}


def score(run: Path, test: Trajectories, scale: Scale) -> dict:
    model, state = model_from_checkpoint(run / "best.pt")
    started = time.perf_counter()
    scores = evaluate(model, test, region=(state.get("data") or {}).get("region"),
                      window_method=state["train_config"]["method"])
    drift = scores["drift"]
    return {"best_epoch": state["epoch"], "window_mse": scores["window_mse"],
            "valid_prediction_time_median": scores["valid_prediction_time"]["median"],
            "energy": drift["energy"], "linear_momentum": drift["linear_momentum"],
            "angular_momentum": drift["angular_momentum"], "diverged": len(scores["divergence"]["systems"]),
            "left_region": scores.get("left_region", {}).get("count"),
            **probe(model, test, scale.probe_every), **windows_by_time(model, test, state["train_config"]["method"]),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    add_piece_arguments(parser)
    args, part, parts = start_pieces(parser)
    scale = SCALES[args.scale]
    work = HERE / "work" / ("lennard_jones" if args.scale == "small" else f"lennard_jones_{args.scale}")
    if not args.report:
        train_file, test_file = held_out_files(work, LennardJones(), scale)
        test = load_trajectories(test_file)
        by_name = {run_name(row[0], seed): (row, seed) for row in ROWS for seed in row[4]}
        for name in my_runs(["integrator", "springs", *run_names(scale)], part, parts, work / "claims"):
            out = work / "scores" / f"{name}.json"
            if out.exists():
                continue
            if name in ("integrator", "springs"):
                write_json(out, integrator_floor(test) if name == "integrator" else springs_probe(work, scale))
                continue
            row, seed = by_name[name]
            data = train_file if row[5] == "lattice" else equilibrated_file(work, scale)
            config = hamnet_config(flags(scale, row, seed), data)
            training = train_hamnet(config, data, work / "runs" / name)
            write_json(out, {**score(work / "runs" / name, test, scale), "train_seconds": training["epoch_seconds"]})
            logging.info("%s scored", name)
    report(work, scale, args)


def report(work: Path, scale: Scale, args: argparse.Namespace) -> None:
    scores = {path.stem: json.loads(path.read_text()) for path in (work / "scores").glob("*.json")}
    for name, entry in scores.items():
        metrics = work / "runs" / name / "metrics.jsonl"
        if metrics.exists():
            entry["epochs_to_halve"] = epochs_to_halve(metrics)
    table = {}
    for row, group, extra, what, seeds, _ in ROWS:
        done = [scores[run_name(row, seed)] for seed in seeds if run_name(row, seed) in scores]
        if done:
            table[row] = {"what": what, "seeds": [s for s in seeds if run_name(row, s) in scores], "runs": done}
    name = "lennard_jones" + ("" if args.scale == "small" else f"_{args.scale}")
    results = {"scale": args.scale, "note": scale.note, "threads": args.threads, "torch": torch.__version__,
               "command": "python benchmarks/lennard_jones.py" + ("" if args.scale == "small" else f" --scale {args.scale}"),
               "flags": {row: ["--max-windows", str(scale.windows), *extra] for row, _, extra, _, _, _ in ROWS},
               "data": {row: data for row, _, _, _, _, data in ROWS},
               "integrator": scores.get("integrator"), "springs": scores.get("springs"), "table": table}
    write_result_files(HERE / "results" / name, results, markdown(results))


def epochs_to_halve(metrics: Path) -> int | None:
    """The first epoch whose validation MSE is below half the first epoch's: how long training sits on the
    plateau of a model that has learned next to no force (None: never within the run)."""
    values = [json.loads(line)["validation_mse"] for line in metrics.read_text().splitlines() if line.strip()]
    return next((epoch for epoch, value in enumerate(values, 1) if value < values[0] / 2), None)


def _mean(runs: list[dict], key, sub=None) -> str:
    values = [run[key][sub] if sub else run[key] for run in runs]
    value = statistics.fmean(values)
    spread = f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else ""
    return f"{value:.3g}{spread}"


def markdown(results: dict) -> list[str]:
    lines = ["# Lennard-Jones cluster: what the true energy does along a learned rollout", "",
             f"Command: `{results['command']}` (torch {results['torch']}, {results['threads']} thread per process). "
             f"Scale: {results['note']}. `lennard_jones.py`'s docstring defines every column. Mean ± standard "
             "deviation over the seeds listed.", "",
             "| model | what | seeds | true energy change, median | largest | force error, median | "
             "potential error spread, median | window MSE | window MSE, first 5 time units | last 5 time units | "
             "linear momentum, largest | angular momentum, largest | diverged | left the training region | "
             "epoch the validation MSE halves | train s |",
             "|" + "---|" * 16]
    for row, entry in results["table"].items():
        runs = entry["runs"]
        lines.append(f"| {row} | {entry['what']} | {', '.join(map(str, entry['seeds']))} | "
                     f"{_mean(runs, 'energy', 'median')} | {_mean(runs, 'energy', 'max')} | "
                     f"{_mean(runs, 'force_error_median')} | {_mean(runs, 'potential_error_spread_median')} | "
                     f"{_mean(runs, 'window_mse')} | {_mean(runs, 'window_mse_first')} | {_mean(runs, 'window_mse_last')} | "
                     f"{_mean(runs, 'linear_momentum', 'max')} | "
                     f"{_mean(runs, 'angular_momentum', 'max')} | {sum(r['diverged'] for r in runs)} | "
                     f"{sum(r['left_region'] or 0 for r in runs)} | "
                     f"{', '.join(str(r.get('epochs_to_halve')) for r in runs)} | {_mean(runs, 'train_seconds')} |")
    floor = results.get("integrator")
    if floor:
        lines += ["", f"The true Hamiltonian, same float64 leapfrog at dt 0.01: true energy change median "
                  f"{floor['energy']['median']:.2g}, largest {floor['energy']['max']:.2g}, {floor['diverged']} diverged; "
                  f"its window MSE {floor['window_mse_first']:.2g} (first 5 time units), {floor['window_mse_last']:.2g} "
                  "(last)."]
    springs = results.get("springs")
    if springs:
        lines += ["", f"For comparison, {springs['model']} on 300 springs systems: force error median "
                  f"{springs['force_error_median']:.2g}, potential error spread median "
                  f"{springs['potential_error_spread_median']:.2g} (over 5 time units)."]
    return lines


if __name__ == "__main__":
    run_script(main)
