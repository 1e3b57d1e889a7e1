"""Springs past the first few time units: how long learned spring rollouts stay valid, and what training buys.

Issue 20, item 6. The shipped springs models were scored on 500-step held-out files, where a valid
prediction time (VPT: the time until the bounded relative error first exceeds 0.1) cannot exceed 5 time
units. Here every model is scored as ``hamnet evaluate`` scores it, on 300 held-out systems over 10,000
float64 leapfrog steps (100 time units; the first state of each, the training run's sub-steps): VPT
(median, quartiles, how many systems never exceed 0.1), the true energy's largest relative change over
the whole rollout (median and largest over systems), the momenta and divergences. Beside them, the
integrator's own limit: the true Hamiltonian rolled out by the same leapfrog at dt 0.01.

Data: ``hamnet generate`` springs (the paper's: N = 6, 2D), 1000 training systems x 500 steps (seed 0,
the shipped models' training file) and 300 held-out systems x 10,000 steps (seed 1). Rows (:data:`ROWS`)
are HLieConv SO(2), width 128, depth 4, 3000 windows, seeds :data:`SEEDS`: the shipped ``springs-so2`` recipe (lr 1e-2,
batch 50, leapfrog windows of 5 states, 30 epochs), the same at lr 3e-3 for 100 and 300 epochs (the
300-epoch one also on other training data, :data:`TRAINING_DATA`: 3000 systems, a wider start), and
phases started from another row's ``best.pt`` (``--init-from``): windows of 20 states, a float64
finish, each with ``best.pt`` chosen on a rollout of the validation systems (``--select rollout``), and
training on true trajectories from where the parent's own rollouts go wrong (:data:`OWN_STATES`) or
through the far tail of the systems' own motion (:data:`FAR_REACH`); two phases are scored with the weights
picked on the benchmark's own two measures over a selection set of fresh systems (:data:`SELECTION`). Each run
also counts the held-out systems whose true energy changes by more than 10%.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/springs_long.py &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/springs_long.py &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/springs_long.py --report

Two processes share the runs (``pieces.py``); a phase waits for the run it starts from. The results
table in the docs is ``benchmarks/tables.py``'s ``springs-long``. Training is
compiled (``--compile on``) and so are the scoring rollouts (the eager numbers to round-off). ``--scale
smoke`` checks the script end to end in a minute (its numbers mean nothing). Writes
``benchmarks/results/springs_long[_smoke].{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

from hamnet.checkpoint import model_from_checkpoint
from hamnet.diagnostics import conservation_report
from hamnet.evaluation import bounded_errors, evaluate, valid_prediction_time
from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.paths import atomic_path
from hamnet.rollouts import rollout_systems
from hamnet.simulation import simulate
from hamnet.systems import Springs

sys.path.insert(0, str(Path(__file__).parent))
from pieces import (HeldOutScale, add_piece_arguments, claimed, generated_file, hamnet_config,  # noqa: E402
                    held_out_files, my_runs, run_script, start_pieces, train_hamnet, true_leapfrog, write_json,
                    write_result_files)

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Scale(HeldOutScale):
    width: int
    depth: int
    epochs_scale: float
    select_steps: int
    note: str


SCALES = {
    "small": Scale(1000, 500, 300, 10_000, 3000, 128, 4, 1.0, 400,
                   "1000 training systems x 500 steps, 3000 windows; 300 held-out systems x 10,000 steps"),
    "smoke": Scale(30, 40, 6, 200, 60, 8, 1, 0.1, 20, "a check that the script runs end to end; its numbers mean nothing"),
}

#: (row, the row it starts from or None, flags of its phase, what it is). Each phase is one run; runs are
#: taken in the order of :func:`plan`, so that two processes walk the two chains side by side.
ROWS = [
    ("SO(2), shipped recipe", None, ["--epochs", "30"],
     "springs-so2's recipe: lr 1e-2, batch 50, 30 epochs on leapfrog windows of 5 states"),
    ("+ 20-state windows", "SO(2), shipped recipe",
     ["--chunk", "20", "--lr", "1e-3", "--epochs", "10", "--select", "rollout"],
     "10 epochs on windows of 20 states (19 leapfrog steps through the learned flow) at lr 1e-3, best.pt the "
     "epoch whose 200 validation windows rolled out 400 steps fit best"),
    ("SO(2), lr 3e-3, 100 epochs", None, ["--epochs", "100", "--lr", "3e-3"],
     "the shipped recipe with a lower learning rate and 3.3 times the optimiser steps (what the Lennard-Jones "
     "cluster needed)"),
    ("+ 20-state windows, after 100 epochs", "SO(2), lr 3e-3, 100 epochs",
     ["--chunk", "20", "--lr", "1e-3", "--epochs", "10", "--select", "rollout"],
     "the second row's phase, started from the row above"),
    ("+ float64 finish", "+ 20-state windows, after 100 epochs",
     ["--chunk", "20", "--lr", "3e-4", "--epochs", "3", "--dtype", "float64", "--select", "rollout"],
     "3 more epochs on 20-state windows in float64 at lr 3e-4, selected the same way"),
    ("SO(2), lr 3e-3, 300 epochs", None, ["--epochs", "300", "--lr", "3e-3"],
     "three times the 100-epoch row's optimiser steps"),
    ("SO(2), lr 3e-3, 300 epochs, 3000 systems", None, ["--epochs", "300", "--lr", "3e-3"],
     "the row above with its 3000 windows drawn from 3000 training systems instead of 1000 (about one window "
     "per system, as the paper's data has): more of the initial distribution's tails seen"),
    ("SO(2), lr 3e-3, 300 epochs, 1 in 4 spread 3x", None, ["--epochs", "300", "--lr", "3e-3"],
     "the 300-epoch row with every 4th of its 1000 training systems started with its positions 3 times as "
     "spread (the same springs, a wider start): training states out where the failing rollouts go"),
    ("+ own-rollout states", "SO(2), lr 3e-3, 300 epochs, 3000 systems", ["--epochs", "60", "--lr", "1e-3"],
     "60 epochs at lr 1e-3 on the 3000-system row's training file grown by true trajectories from the states "
     "where that row's model's own 100-unit rollouts of 1000 training systems leave the true motion (DAgger)"),
    ("+ own-rollout states, lr 3e-4", "SO(2), lr 3e-3, 300 epochs, 3000 systems", ["--epochs", "60", "--lr", "3e-4"],
     "the row above at a third of its learning rate, on the same grown file: does a gentler phase keep the median?"),
    ("+ own-rollout states, round 2", "+ own-rollout states", ["--epochs", "60", "--lr", "1e-3"],
     "a second round from the lr 1e-3 row: its training file grown again, from that row's own rollouts of 300 "
     "training systems the first round did not roll out (1000-1299), then 60 epochs at lr 1e-3"),
    ("+ 60 more epochs", "+ own-rollout states", ["--epochs", "60", "--lr", "1e-3"],
     "the lr 1e-3 own-rollout phase again on its own grown file (what round 2 is, less its 9 new systems, for "
     "seed 2, whose rollouts gave round 2 nothing to add)"),
    ("+ own rollouts of far-reaching systems", "+ own-rollout states, round 2", ["--epochs", "60", "--lr", "1e-3"],
     "the own-rollout loop again, its 300 rollouts started from the far-reaching systems' states (picked as for "
     "the '+ far-reaching systems' row) instead of training systems, then 60 epochs at lr 1e-3"),
    ("+ own rollouts of far-reaching systems, after 60 more epochs", "+ 60 more epochs",
     ["--epochs", "60", "--lr", "1e-3"], "the row above for seed 2's chain"),
    ("+ own-rollout states, round 2, picked on 100-unit rollouts", "+ own-rollout states",
     ["--epochs", "60", "--lr", "1e-3"],
     "round 2 trained again, keeping its weights every 15 epochs; the one scored is picked on its own rollouts of "
     "fresh systems (:data:`SELECTION`), not on the validation window MSE"),
    ("+ 60 more epochs, picked on 100-unit rollouts", "+ own-rollout states", ["--epochs", "60", "--lr", "1e-3"],
     "'+ 60 more epochs' picked the same way (seed 2's chain)"),
    ("SO(2), lr 3e-3, 300 epochs, 3000 systems, states from 95 units", None, ["--epochs", "300", "--lr", "3e-3"],
     "the 3000-system row with each system's 500 training steps starting at a uniformly random time within its "
     "first 95 time units (the same systems): the states a 100-unit rollout passes through, not only its first 5 "
     "units"),
    ("+ states from 95 units", "SO(2), lr 3e-3, 300 epochs, 3000 systems", ["--epochs", "60", "--lr", "1e-3"],
     "60 epochs at lr 1e-3 from the 3000-system row on the row above's training file"),
    ("+ far-reaching systems", "SO(2), lr 3e-3, 300 epochs, 3000 systems", ["--epochs", "60", "--lr", "1e-3"],
     "60 epochs at lr 1e-3 on the 3000-system row's training file grown by 300 true trajectories through the "
     "moments when a particle is farthest from the centroid, in the 2% of 15,000 fresh systems that reach "
     "farthest over 100 time units"),
    ("+ 60 epochs at lr 1e-3", "SO(2), lr 3e-3, 300 epochs, 3000 systems", ["--epochs", "60", "--lr", "1e-3"],
     "60 more epochs at lr 1e-3 on the same file: what the phases from the 3000-system row gain from their phase "
     "alone, without new data or a new loss"),
    ("+ force-weighted loss", "SO(2), lr 3e-3, 300 epochs, 3000 systems",
     ["--epochs", "60", "--lr", "1e-3", "--weight-floor", "0.1"],
     "the row above with each particle's error weighed by the inverse of the force it feels in its window, "
     "floored at 1% of the window's mean (`--weight-floor 0.1`, up to 100 times): a nearly free particle (k close "
     "to 0, what the failing far systems share) fitted as closely, relative to its force, as the rest"),
    ("SE(2), lr 3e-3, 100 epochs, 3000 systems", None, ["--epochs", "100", "--lr", "3e-3", "--group", "SE2"],
     "HLieConv over the plane's rigid motions (a pair's kernel input: its squared distance) instead of rotations "
     "about the centroid, 100 epochs on the 3000-system file"),
    ("SE(2) with coupling, lr 3e-3, 100 epochs, 3000 systems", None,
     ["--epochs", "100", "--lr", "3e-3", "--group", "SE2", "--coupling", "affine"],
     "the row above with `--coupling affine`: every pair's interaction times learned affine functions of both "
     "particles' (m, k), so a particle of k = 0 can drop out, if the fit makes its function vanish there"),
    ("SE(2) coupled by k, lr 3e-3, 100 epochs, 3000 systems", None,
     ["--epochs", "100", "--lr", "3e-3", "--group", "SE2", "--coupling", "k"],
     "the SE(2) row with `--coupling k`: every pair's interaction times both particles' spring constants, so a "
     "particle of k = 0 drops out of every pair and feels no force whatever the fit, and one of small k feels a "
     "force of order k, as in the true k_i k_j springs"),
    ("SE(2) coupled by k, lr 3e-3, 300 epochs, 3000 systems", None,
     ["--epochs", "300", "--lr", "3e-3", "--group", "SE2", "--coupling", "k"],
     "the 100-epoch `SE(2) coupled by k` row at the SO(2) 3000-system row's 300 epochs"),
]


@dataclass(frozen=True)
class TrainingData:
    """A row's training systems where they are not the scale's: ``multiple`` times as many, every
    ``spread_every``-th one (0: none) started with its positions ``spread`` times as far apart, or each one's
    trajectory starting at a uniformly random time within its first ``start_within`` time units of true motion
    (seed 0, the scale's steps)."""
    multiple: int = 1
    spread_every: int = 0
    spread: float = 1.0
    start_within: float = 0.0


TRAINING_DATA = {"SO(2), lr 3e-3, 300 epochs, 3000 systems": TrainingData(multiple=3),
                 "SE(2), lr 3e-3, 100 epochs, 3000 systems": TrainingData(multiple=3),
                 "SE(2) with coupling, lr 3e-3, 100 epochs, 3000 systems": TrainingData(multiple=3),
                 "SE(2) coupled by k, lr 3e-3, 100 epochs, 3000 systems": TrainingData(multiple=3),
                 "SE(2) coupled by k, lr 3e-3, 300 epochs, 3000 systems": TrainingData(multiple=3),
                 "SO(2), lr 3e-3, 300 epochs, 1 in 4 spread 3x": TrainingData(spread_every=4, spread=3.0),
                 "SO(2), lr 3e-3, 300 epochs, 3000 systems, states from 95 units":
                     TrainingData(multiple=3, start_within=95.0),
                 "+ states from 95 units": TrainingData(multiple=3, start_within=95.0)}


@dataclass(frozen=True)
class OwnStates:
    """A phase's training data grown from its parent's own rollouts (DAgger: Ross, Gordon and Bagnell, 2011).
    The parent model rolls out the first states of ``systems`` of its training systems (from the ``first``-th)
    for ``steps`` float64 leapfrog steps (at most the scale's held-out steps), or with ``far`` the first
    ``systems`` of the far-reaching systems' starts (:class:`FarReach`). Every ``every``-th state where the
    rollout has left the true motion (its true energy changed by more than ``energy_change``, or a particle
    lies past the training positions' 99.9% quantile, within ``reach`` times it) starts a new training
    system, which the true springs carry on for the training file's steps: at most ``per_system`` evenly
    spaced states of one rollout. Needs the true system, so it is a recipe for simulated data only."""
    systems: int = 1000
    steps: int = 10_000
    every: int = 200
    energy_change: float = 0.02
    reach: float = 4.0
    per_system: int = 10
    first: int = 0
    far: FarReach | None = None


@dataclass(frozen=True)
class FarReach:
    """A phase's training data grown by the far tail of the systems' own motion: ``pool`` fresh systems (seed
    ``seed``, neither the training nor the held-out file's) run by the true springs over the held-out
    horizon, sampled every ``frame`` time units; the ``keep`` whose particles get farthest from their
    centroid each start a true trajectory of the training file's length, half of it before that moment."""
    pool: int = 15_000
    keep: int = 300
    seed: int = 2
    frame: float = 0.1


FAR_REACH = {"+ far-reaching systems": FarReach()}

OWN_STATES = {"+ own-rollout states": OwnStates(), "+ own-rollout states, lr 3e-4": OwnStates(),
              "+ own-rollout states, round 2": OwnStates(systems=300, first=1000),
              "+ own-rollout states, round 2, picked on 100-unit rollouts": OwnStates(systems=300, first=1000),
              "+ own rollouts of far-reaching systems": OwnStates(systems=300, far=FarReach()),
              "+ own rollouts of far-reaching systems, after 60 more epochs": OwnStates(systems=300, far=FarReach())}


@dataclass(frozen=True)
class RolloutSelection:
    """The weights a phase is scored with, picked on the benchmark's own two measures instead of the validation
    window MSE: the run keeps its weights every ``every`` epochs (scaled as its epochs are), and each of these
    rolls out a selection set for the held-out steps: fresh systems (seed ``seed``, neither the training nor the
    held-out file's), the ``far`` of a ``pool`` that reach farthest from their centroid (sampled every
    ``frame``; where the held-out failures are) and the pool's first ``plain`` others. Picked: the fewest
    selection systems whose true energy changes by more than 10%, then the highest median VPT of the plain ones,
    then the earliest."""
    every: int = 15
    pool: int = 5000
    far: int = 100
    plain: int = 100
    seed: int = 3
    frame: float = 0.1


#: a spring constant below which a particle is nearly free (k ~ U(0, 5)): the far systems that fail have one
WEAK_SPRING = 0.05

SELECTION = {"+ own-rollout states, round 2, picked on 100-unit rollouts": RolloutSelection(),
             "+ 60 more epochs, picked on 100-unit rollouts": RolloutSelection()}


class LaterSprings(Springs):
    """The paper's springs, each system's first state taken at a uniformly random time (a multiple of ``dt``) within
    its first ``within`` time units of true motion; the times are drawn after the plain first states, so the
    systems, and the file's system, are the plain springs'."""

    def __init__(self, within: float, dt: float = 0.01, chunk: int = 200) -> None:
        super().__init__()
        self.within, self.dt, self.chunk = within, dt, chunk

    def sample_state(self, params, generator):
        z0 = super().sample_state(params, generator).to(torch.float64)
        at = torch.randint(0, round(self.within / self.dt) + 1, (z0.shape[0],), generator=generator)
        params = {k: v.to(torch.float64) for k, v in params.items()}
        later = torch.empty_like(z0)
        for part in range(0, z0.shape[0], self.chunk):  # all the systems' motion at once would take gigabytes
            kept = slice(part, part + self.chunk)
            _, z, _ = simulate(Springs(), z0[kept], {k: v[kept] for k, v in params.items()},
                               steps=max(1, int(at[kept].max())), dt=self.dt)
            later[kept] = z[torch.arange(z.shape[0]), at[kept]]
        return later


class SpreadSprings(Springs):
    """The paper's springs whose every ``every``-th system starts with its positions ``spread`` times as
    far apart; the dynamics, and so the file's system, are plain springs."""

    def __init__(self, every: int, spread: float) -> None:
        super().__init__()
        self.every, self.spread = every, spread

    def sample_state(self, params, generator):
        z = super().sample_state(params, generator)
        z[:: self.every, 0] *= self.spread
        return z


#: seeds of each row: 1 for all, three for the 300-epoch row (the first to reach a median VPT of 10: its
#: spread is the figure), two for its variants of other training data
SEEDS = {row[0]: (1,) for row in ROWS} | {"SO(2), lr 3e-3, 300 epochs": (1, 2, 3),
                                          "SO(2), lr 3e-3, 300 epochs, 3000 systems": (1, 2),
                                          "SO(2), lr 3e-3, 300 epochs, 1 in 4 spread 3x": (1, 2),
                                          "+ own-rollout states": (1, 2), "+ own-rollout states, lr 3e-4": (1, 2),
                                          "+ own-rollout states, round 2": (1,), "+ 60 more epochs": (2,),
                                          "+ own rollouts of far-reaching systems": (1,),
                                          "+ own rollouts of far-reaching systems, after 60 more epochs": (2,),
                                          "+ far-reaching systems": (1,),
                                          "+ own-rollout states, round 2, picked on 100-unit rollouts": (1,),
                                          "+ 60 more epochs, picked on 100-unit rollouts": (2,),
                                          "+ states from 95 units": (1, 2),
                                          "SE(2) coupled by k, lr 3e-3, 300 epochs, 3000 systems": (1, 2, 3)}
#: validation windows of a phase that selects on a rollout (each rolled out select_steps steps every epoch)
VALIDATION_WINDOWS = 200


def run_name(row: str, seed: int) -> str:
    slug = row.lower().replace("(", "").replace(")", "").replace(",", "").replace("+ ", "").replace(" ", "-")
    return f"{slug}_seed{seed}"


def plan() -> list[str]:
    """The runs, the integrator's limit first, then seed 1's, then the other seeds', each by depth (every
    chain's first phase, then every second one, ...): a process walking every other one follows a chain of
    its own, and a phase comes after the run it starts from."""
    depth = {}
    for row in ROWS:
        depth[row[0]] = 0 if row[1] is None else depth[row[1]] + 1
    runs = sorted(((row[0], seed) for row in ROWS for seed in SEEDS[row[0]]), key=lambda run: (run[1] != 1, depth[run[0]]))
    return ["integrator"] + [run_name(row, seed) for row, seed in runs]


def flags(scale: Scale, row: tuple, seed: int, work: Path) -> list[str]:
    name, parent, extra, _ = row
    extra = list(extra)
    at = extra.index("--epochs") + 1
    extra[at] = str(max(1, round(int(extra[at]) * scale.epochs_scale)))
    if "--select" in extra:
        extra += ["--select-steps", str(scale.select_steps)]
    start = ["--init-from", str(work / "runs" / run_name(parent, seed) / "best.pt")] if parent else []
    # a row's own flags come last, so its --group overrides SO2
    return ["--model", "hlieconv", "--group", "SO2", "--width", str(scale.width), "--depth", str(scale.depth),
            "--max-windows", str(scale.windows), "--seed", str(seed), "--compile", "on", *start, *extra]


def score(run: Path, test, checkpoint: Path | None = None) -> dict:
    """``checkpoint`` (default: the run's ``best.pt``) scored on the held-out file ``test``."""
    model, state = model_from_checkpoint(checkpoint or run / "best.pt")
    started = time.perf_counter()
    scores = evaluate(model, test, region=(state.get("data") or {}).get("region"),
                      window_method=state["train_config"]["method"], compile=True)
    valid, energy = scores["valid_prediction_time"], scores["drift"]["energy"]["per_system"]
    return {"best_epoch": state["epoch"], "window_mse": scores["window_mse"],
            "valid_prediction_time": {key: valid[key] for key in ("min", "q1", "median", "q3", "max", "never_exceeded")},
            "diverged": len(scores["divergence"]["systems"]),
            "drift": {name: {"median": drift["median"], "max": drift["max"]} for name, drift in scores["drift"].items()},
            **energy_past(energy),
            "left_region": scores.get("left_region", {}).get("count"),
            "score_seconds": round(time.perf_counter() - started, 1)}


def energy_past(change: list[float | None]) -> dict:
    """How many systems' true energy changed by more than 10% and 5% (``change``: per system, None where the
    rollout diverged, which counts as past both)."""
    return {f"systems_over_{percent}_percent": sum(value is None or value > percent / 100 for value in change)
            for percent in (10, 5)}


def worst_systems(run: Path, test, count: int = 5, compile: bool = True) -> dict:
    """The ``count`` held-out systems whose true energy the learned rollout changes most, each with what might
    explain it: its energy |H(0)| (against the median over all), the farthest any particle of its true
    trajectory and of the learned rollout gets from the origin (against the training positions' 99.9%
    quantile: a learned rollout far past its true reach has escaped the potential it learned), and the
    change the integrator alone makes (the true Hamiltonian through the same leapfrog)."""
    model, state = model_from_checkpoint(run / "best.pt")
    system = test.system()
    learned = rollout_systems(model, test.z[:, 0], test.params, test.n_times - 1, float(test.meta["dt"]),
                              method="leapfrog", keep_diverged=True, compile=compile)
    change = conservation_report(learned.z, system.hamiltonian, test.params)["energy"]
    true_change = conservation_report(true_leapfrog(test)[0].z, system.hamiltonian, test.params)["energy"]
    energy = system.hamiltonian(test.z[:, 0], test.params).abs()
    radius = test.z[:, :, 0].norm(dim=-1).amax((1, 2))
    learned_radius = learned.z[:, :, 0].norm(dim=-1).amax((1, 2))
    train = load_trajectories(state["data"]["path"]) if Path(state["data"]["path"]).exists() else None
    worst = change.argsort(descending=True)[:count].tolist()
    return {"run": run.name, **energy_past(change.tolist()), "median_energy": float(energy.median()),
            "training_radius_q999": None if train is None else edge_radius(train),
            "worst": [{"system": i, "energy_change": float(change[i]), "energy": float(energy[i]),
                       "largest_radius": float(radius[i]), "learned_largest_radius": float(learned_radius[i]),
                       "integrator_energy_change": float(true_change[i])}
                      for i in worst]}


def edge_radius(data, centred: bool = False) -> float:
    """The distance from the origin (``centred``: from each state's centroid) within which 99.9% of
    ``data``'s particle positions lie (over at most 2**24 evenly spaced of them, what ``torch.quantile`` takes)."""
    q = data.z[:, :, 0]
    positions = (q - q.mean(-2, keepdim=True) if centred else q).norm(dim=-1).flatten()
    return float(positions[torch.linspace(0, positions.numel() - 1, min(positions.numel(), 2**24),
                                               dtype=torch.float64).long()]  # float32 rounds past the end
                 .quantile(0.999))


def training_file(work: Path, scale: Scale, row: str, seed: int = 1) -> Path:
    """The training file of ``row``: the scale's (seed 0), the one its :data:`TRAINING_DATA` describes, its
    parent's grown by the parent's run of ``seed`` (:data:`OWN_STATES`) or by :data:`FAR_REACH`, or else, for a
    phase, its parent's."""
    parent = next(entry[1] for entry in ROWS if entry[0] == row)
    if parent is not None and row not in TRAINING_DATA:
        base = training_file(work, scale, parent, seed)
        if row in FAR_REACH:
            return far_reach_file(work, scale, base, FAR_REACH[row])
        if row in OWN_STATES:
            return own_states_file(work, scale, base, work / "runs" / run_name(parent, seed), OWN_STATES[row])
        return base
    data = TRAINING_DATA.get(row, TrainingData())
    systems = scale.train_systems * data.multiple
    if data.start_within:
        name = f"train_systems{systems}_steps{scale.train_steps}_seed0_within{data.start_within:g}"
        return generated_file(work, LaterSprings(data.start_within), name, 0, systems, scale.train_steps)
    if not data.spread_every:
        return held_out_files(work, Springs(), dataclasses.replace(scale, train_systems=systems))[0]
    name = f"train_systems{systems}_steps{scale.train_steps}_seed0_spread{data.spread:g}_every{data.spread_every}"
    return generated_file(work, SpreadSprings(data.spread_every, data.spread), name, 0, systems, scale.train_steps)


def own_states_file(work: Path, scale: Scale, base: Path, parent: Path, own: OwnStates, compile: bool = True) -> Path:
    """``base`` grown as :class:`OwnStates` says from the ``parent`` run's ``best.pt``, made once under a claim;
    ``meta["own_states"]`` records how many states each test picked and what was simulated."""
    path = work / "data" / f"{base.stem}_own_states_{parent.name}.npz"
    with claimed(work / "claims", path.stem, wait=True):
        if path.exists():
            made = json.loads(str(numpy.load(path)["meta"]))["own_states"]
            wanted = {**dataclasses.asdict(own), "steps": min(own.steps, scale.test_steps)}  # as recorded
            if any(made.get(key, getattr(OwnStates(), key)) != value for key, value in wanted.items()):
                raise ValueError(f"{path} was grown with other settings ({made}); delete it to grow it anew")
            return path
        logging.info("growing %s from %s's own rollouts", base.name, parent.name)
        train, (model, _) = load_trajectories(base), model_from_checkpoint(parent / "best.pt")
        system, dt = train.system(), float(train.meta["dt"])
        if own.far is None:
            first = own.first % train.n_systems  # wraps only in a file of fewer systems (the smoke scale's)
            chosen = slice(first, min(first + own.systems, train.n_systems))
            z0, params = train.z[chosen, 0], {k: v[chosen] for k, v in train.params.items()}
        else:
            z0, params, _, _ = far_starts(system, own.far, scale.test_steps * dt, (train.n_times - 1) * dt / 2)
            z0, params = z0[:own.systems].to(train.z.dtype), {k: v[:own.systems] for k, v in params.items()}
        count, steps = z0.shape[0], min(own.steps, scale.test_steps)
        learned = rollout_systems(model, z0, params, steps, dt, method="leapfrog",
                                  keep_diverged=True, compile=compile)
        states = learned.z[:, :: max(1, own.every * steps // own.steps)]  # (count, S, 2, N, D): the candidates
        repeated = {k: v.repeat_interleave(states.shape[1], 0) for k, v in params.items()}
        energy = system.hamiltonian(states.flatten(0, 1), repeated).view(states.shape[:2])
        change = ((energy - energy[:, :1]) / energy[:, :1]).abs()
        radius = states[:, :, 0].norm(dim=-1).amax(-1)
        edge = edge_radius(train)
        finite = torch.isfinite(states).flatten(2).all(-1)
        wrong, out = change > own.energy_change, radius > edge
        picked = (wrong | out) & (radius <= own.reach * edge) & finite
        starts, owners = [], []
        for index in picked.any(1).nonzero().squeeze(-1).tolist():
            times = picked[index].nonzero().squeeze(-1)
            times = times[torch.linspace(0, times.numel() - 1, min(times.numel(), own.per_system)).round().long()]
            starts.append(states[index, times])
            owners += [index] * times.numel()
        if not starts:
            raise ValueError(f"{parent.name}'s rollouts of {count} {'far-reaching' if own.far else 'training'} systems "
                             "never leave the true motion; nothing to grow its training file with")
        owners = torch.tensor(owners)
        _, z, _ = simulate(system, torch.cat(starts), {k: v[owners] for k, v in params.items()},
                           steps=train.n_times - 1, dt=dt)
        record = {**dataclasses.asdict(own), "parent": parent.name, "rollouts": count, "steps": steps,
                  "edge_radius": edge, "states_off_energy": int((wrong & finite).sum()),
                  "states_out": int((out & finite).sum()), "rollouts_picked": int(picked.any(1).sum()),
                  "systems_added": int(owners.numel())}
        logging.info("%s: %d new training systems from %d rollouts", path.name, owners.numel(), record["rollouts_picked"])
        grown = Trajectories(train.t, torch.cat([train.z, z]),
                             {k: torch.cat([v, params[k][owners].to(v.dtype)]) for k, v in train.params.items()},
                             {**train.meta, "own_states": record})
        save_trajectories(path, grown)
    return path


def centred_reach(z: torch.Tensor) -> torch.Tensor:
    """How far the farthest particle is from the centroid (the unweighted mean, as SO(2) models centre):
    ``z: (..., 2, N, D)`` -> ``(...)``."""
    q = z[..., 0, :, :]
    return (q - q.mean(-2, keepdim=True)).norm(dim=-1).amax(-1)


def far_starts(system, far: FarReach, horizon: float, before: float, chunk: int = 1000) -> tuple:
    """The :class:`FarReach` pool run over ``horizon`` time units: the ``keep`` systems that reach farthest
    from their centroid, each's state ``before`` time units ahead of that moment (or its first): ``(starts:
    (keep, 2, N, D), their params, every pool system's reach (pool,), the kept ones' indices (keep,))``."""
    _, params, reach, starts = reaching_pool(system, far.pool, far.seed, horizon, far.frame, before, chunk)
    chosen = reach.argsort(descending=True)[:far.keep]
    return starts[chosen], {k: v[chosen] for k, v in params.items()}, reach, chosen


def reaching_pool(system, pool: int, seed: int, horizon: float, frame: float, before: float,
                  chunk: int = 1000) -> tuple:
    """``pool`` fresh systems of ``system`` (seed ``seed``, float64) run by the true dynamics over ``horizon``
    time units, sampled every ``frame``: ``(first states (pool, 2, N, D), params, how far each one's farthest
    particle gets from the centroid (pool,), each's state ``before`` time units ahead of that moment, or its
    first (pool, 2, N, D))``."""
    generator = torch.Generator().manual_seed(seed)
    params = system.sample_params(pool, generator)
    z0 = system.sample_state(params, generator).to(torch.float64)
    params = {k: v.to(torch.float64) for k, v in params.items()}
    reach, starts = [], []
    for part in range(0, pool, chunk):  # a whole pool's trajectories at once would take gigabytes
        kept = slice(part, part + chunk)
        _, z, _ = simulate(system, z0[kept], {k: v[kept] for k, v in params.items()}, steps=round(horizon / frame),
                           dt=frame)
        each = centred_reach(z)  # (chunk, frames + 1)
        at = (each.argmax(1) - round(before / frame)).clamp_min(0)
        reach.append(each.amax(1))
        starts.append(z[torch.arange(z.shape[0]), at])
    return z0, params, torch.cat(reach), torch.cat(starts)


def selection_file(work: Path, test, selection: RolloutSelection) -> Path:
    """The :class:`RolloutSelection` set, made once under a claim: its ``far`` systems first, then its
    ``plain`` ones, each a true trajectory as long as the held-out file's (``test``: its steps, dt and
    system); ``meta["selection"]`` records the settings and the reach of both parts."""
    steps = test.n_times - 1
    path = work / "data" / (f"selection_pool{selection.pool}_far{selection.far}_plain{selection.plain}_seed"
                            f"{selection.seed}_frame{selection.frame:g}_steps{steps}.npz")
    with claimed(work / "claims", path.stem, wait=True):
        if path.exists():
            return path
        system, dt = test.system(), float(test.meta["dt"])
        logging.info("making the selection set %s", path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        z0, params, reach, _ = reaching_pool(system, selection.pool, selection.seed, steps * dt, selection.frame, 0.0)
        order = reach.argsort(descending=True)
        far = order[:selection.far]
        plain = order[selection.far:].sort().values[:selection.plain]
        if plain.numel() < selection.plain:
            raise ValueError(f"a pool of {selection.pool} has no {selection.plain} systems besides its "
                             f"{selection.far} far-reaching ones; make the pool larger")
        chosen = torch.cat([far, plain])
        _, z, _ = simulate(system, z0[chosen], {k: v[chosen] for k, v in params.items()}, steps=steps, dt=dt)
        record = {**dataclasses.asdict(selection), "far_reach_min": float(reach[far].min()),
                  "plain_reach_median": float(reach[plain].median())}
        save_trajectories(path, Trajectories(test.t, z.to(test.z.dtype),
                                             {k: v[chosen].to(test.params[k].dtype) for k, v in params.items()},
                                             {**test.meta, "selection": record}))
    return path


def rollout_measures(checkpoint: Path, chosen, far: int, compile: bool = True) -> dict:
    """The :class:`RolloutSelection` measures of ``checkpoint`` on the selection set ``chosen`` (its first
    ``far`` systems the far-reaching ones): float64 leapfrog over the whole file from each first state."""
    model, state = model_from_checkpoint(checkpoint)
    learned = rollout_systems(model, chosen.z[:, 0], chosen.params, chosen.n_times - 1, float(chosen.meta["dt"]),
                              method="leapfrog", keep_diverged=True, compile=compile)
    change = conservation_report(learned.z, chosen.system().hamiltonian, chosen.params)["energy"]
    change = [float(value) if math.isfinite(value) else None for value in change.tolist()]
    vpt = valid_prediction_time(bounded_errors(learned, chosen), chosen.t)
    weak = (chosen.params["k"][:far] < WEAK_SPRING).any(-1).tolist()
    return {"epoch": state["epoch"], **energy_past(change), "far_over_10_percent": energy_past(change[:far])[
                "systems_over_10_percent"], "largest_energy_change": max((v for v in change if v is not None),
                                                                         default=None),
            "plain_vpt_median": float(vpt[far:].median()), "far_vpt_median": float(vpt[:far].median()),
            "far_weak": sum(weak), "far_weak_over_10_percent": sum(
                w and (c is None or c > 0.1) for w, c in zip(weak, change[:far])),
            **force_errors(model.double(), chosen, far)}


def force_errors(model, chosen, far: int, every: int = 500) -> dict:
    """For a float64 ``model``: the median relative error ``|F_learned - F_true| / |F_true|`` of the far selection
    systems' nearly free particles (``k < WEAK_SPRING``) and of their other particles, at every ``every``-th state of
    their true motion."""
    q = chosen.z[:far, ::every, 0].double()
    params = {key: value[:far].double().repeat_interleave(q.shape[1], 0) for key, value in chosen.params.items()}
    q = q.flatten(0, 1)
    true = chosen.system().forces(q, params)
    relative = (model.forces(q, params).detach() - true).norm(dim=-1) / true.norm(dim=-1)
    weak = params["k"] < WEAK_SPRING
    return {"weak_force_error": float(relative[weak].median()) if weak.any() else None,
            "held_force_error": float(relative[~weak].median()) if not weak.all() else None}


def picked(measures: list[dict]) -> dict:
    """Of the snapshots' :func:`rollout_measures`, the one :class:`RolloutSelection` picks."""
    return min(measures, key=lambda m: (m["systems_over_10_percent"], -m["plain_vpt_median"], m["epoch"]))


def train_and_pick(config, data: Path, run: Path, selection: RolloutSelection, chosen, scale: Scale,
                   compile: bool = True) -> tuple[Path, list[dict], dict]:
    """Train ``run`` keeping its weights every ``selection.every`` epochs (scaled) in ``work/snapshots/RUN``,
    measure each on the selection set ``chosen`` (cached beside it) and return the picked snapshot's path,
    every snapshot's measures and the training summary."""
    every = max(1, round(selection.every * scale.epochs_scale))
    folder = run.parent.parent / "snapshots" / run.name
    folder.mkdir(parents=True, exist_ok=True)
    measures = []
    for stop in sorted({*range(every, config.epochs, every), config.epochs}):
        snapshot, measured = folder / f"epoch{stop}.pt", folder / f"epoch{stop}.json"
        if not snapshot.exists():
            train_hamnet(config, data, run, until=stop)
            if model_from_checkpoint(run / "last.pt")[1]["epoch"] != stop:
                raise RuntimeError(f"{run} is past epoch {stop} without its snapshot; delete the run to train it anew")
            with atomic_path(snapshot) as tmp:
                shutil.copyfile(run / "last.pt", tmp)
        if not measured.exists():
            write_json(measured, rollout_measures(snapshot, chosen, selection.far, compile=compile))
        measures.append(json.loads(measured.read_text()))
    training = train_hamnet(config, data, run)
    best = picked(measures)
    return folder / f"epoch{best['epoch']}.pt", measures, training


def far_reach_file(work: Path, scale: Scale, base: Path, far: FarReach, chunk: int = 1000) -> Path:
    """``base`` grown as :class:`FarReach` says, made once under a claim (its name carries every setting);
    ``meta["far_reach"]`` records the settings, the reach of the systems kept against the pool's and the base
    file's."""
    path = work / "data" / f"{base.stem}_far_pool{far.pool}_keep{far.keep}_seed{far.seed}_frame{far.frame:g}.npz"
    with claimed(work / "claims", path.stem, wait=True):
        if path.exists():
            return path
        train = load_trajectories(base)
        system, dt = train.system(), float(train.meta["dt"])
        logging.info("growing %s by the farthest-reaching %d of %d fresh systems", base.name, far.keep, far.pool)
        starts, params, reach, chosen = far_starts(system, far, scale.test_steps * dt, (train.n_times - 1) * dt / 2,
                                                   chunk)
        _, z, _ = simulate(system, starts, params, steps=train.n_times - 1, dt=dt)
        record = {**dataclasses.asdict(far), "kept_reach_min": float(reach[chosen].min()),
                  "pool_reach_median": float(reach.median()), "base_centred_q999": edge_radius(train, centred=True),
                  "systems_added": int(chosen.numel())}
        logging.info("%s: %d new training systems, reaching at least %.3g", path.name, chosen.numel(),
                     record["kept_reach_min"])
        grown = Trajectories(train.t, torch.cat([train.z, z.to(train.z.dtype)]),
                             {k: torch.cat([v, params[k].to(v.dtype)]) for k, v in train.params.items()},
                             {**train.meta, "far_reach": record})
        save_trajectories(path, grown)
    return path


def integrator_limit(test) -> dict:
    """The true Hamiltonian through the same float64 leapfrog at the data's dt: its VPT and energy change."""
    result, energy = true_leapfrog(test)
    vpt = valid_prediction_time(bounded_errors(result, test), test.t)
    return {"valid_prediction_time": {"median": float(vpt.median()), "min": float(vpt.min()),
                                      "never_exceeded": int((vpt >= float(test.t[-1])).sum())},
            "energy": energy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="small", choices=SCALES)
    parser.add_argument("--work", default=None, help="work folder (default: benchmarks/work/springs_long[_smoke])")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--explain", nargs="+", default=[], metavar="RUN",
                        help="only: for these trained runs, the held-out systems whose energy changes most and what "
                        "sets them apart (written to work/explained/RUN.json, quoted by --report)")
    parser.add_argument("--measure", nargs="+", default=[], metavar="RUN",
                        help="only: these trained runs' best.pt on the selection set of the picked rows (the far "
                        "systems past 10%%, the others' median VPT; written to work/measured/RUN.json, quoted by "
                        "--report)")
    add_piece_arguments(parser)
    args, part, parts = start_pieces(parser)
    scale = SCALES[args.scale]
    suffix = "" if args.scale == "small" else f"_{args.scale}"
    work = Path(args.work) if args.work else HERE / "work" / f"springs_long{suffix}"
    test_file = held_out_files(work, Springs(), scale)[1]
    for name in args.measure:
        chosen = load_trajectories(selection_file(work, load_trajectories(test_file), RolloutSelection()))
        write_json(work / "measured" / f"{name}.json",
                   {"run": name, **rollout_measures(work / "runs" / name / "best.pt", chosen, RolloutSelection().far)})
        logging.info("%s measured on the selection set", name)
    for name in args.explain:
        write_json(work / "explained" / f"{name}.json", worst_systems(work / "runs" / name, load_trajectories(test_file)))
        logging.info("%s explained", name)
    if not args.report and not args.explain and not args.measure:
        rows = {run_name(row[0], seed): (row, seed) for row in ROWS for seed in SEEDS[row[0]]}
        for name in my_runs(plan(), part, parts, work / "claims"):
            out = work / "scores" / f"{name}.json"
            if out.exists():
                continue
            test = load_trajectories(test_file)
            if name == "integrator":
                write_json(out, integrator_limit(test))
                continue
            row, seed = rows[name]
            if row[1] is not None:  # the run it starts from: wait for whoever trains it
                with claimed(work / "claims", run_name(row[1], seed), wait=True):
                    pass
            data = training_file(work, scale, row[0], seed)
            config = hamnet_config(flags(scale, row, seed, work), data)
            if config.select == "rollout":  # a rollout of every validation window each epoch: 200 of them
                config = dataclasses.replace(config, validation_windows=VALIDATION_WINDOWS)
            if row[0] in SELECTION:
                selection = SELECTION[row[0]]
                chosen = load_trajectories(selection_file(work, test, selection))
                best, measures, training = train_and_pick(config, data, work / "runs" / name, selection, chosen, scale)
                write_json(out, {**score(work / "runs" / name, test, best), "training": training,
                                 "selection": {"settings": chosen.meta["selection"], "snapshots": measures}})
            else:
                training = train_hamnet(config, data, work / "runs" / name)
                write_json(out, {**score(work / "runs" / name, test), "training": training})
            logging.info("%s trained and scored", name)
    report(work, scale, args, suffix)


def report(work: Path, scale: Scale, args, suffix: str) -> None:
    scores = {path.stem: json.loads(path.read_text()) for path in sorted((work / "scores").glob("*.json"))}
    for path in sorted((work / "explained").glob("*.json")):  # runs scored before scores counted them
        if path.stem in scores and "systems_over_10_percent" not in scores[path.stem]:
            scores[path.stem]["systems_over_10_percent"] = json.loads(path.read_text())["systems_over_10_percent"]
    results = {"command": "python benchmarks/springs_long.py" + (f" --scale {args.scale}" if suffix else ""),
               "scale": args.scale, "note": scale.note, "threads": args.threads, "torch": torch.__version__,
               "rows": [{"row": row[0], "starts_from": row[1], "what": row[3], "seeds": list(SEEDS[row[0]]),
                         "runs": {str(seed): scores.get(run_name(row[0], seed)) for seed in SEEDS[row[0]]}} for row in ROWS],
               "integrator": scores.get("integrator"),
               "worst_systems": [json.loads(path.read_text()) for path in sorted((work / "explained").glob("*.json"))],
               "measured": [json.loads(path.read_text()) for path in sorted((work / "measured").glob("*.json"))],
               "own_states": [json.loads(str(numpy.load(path)["meta"]))["own_states"]
                              for path in sorted((work / "data").glob("*_own_states_*.npz"))],
               "far_reach": [json.loads(str(numpy.load(path)["meta"]))["far_reach"]
                             for path in sorted((work / "data").glob("*_far_pool*.npz"))]}
    write_result_files(Path(args.out) / f"springs_long{suffix}", results, markdown(results))


def markdown(results: dict) -> list[str]:
    lines = ["# Springs past the first few time units", "",
             f"`{results['command']}` ({results['note']}; {results['threads']} thread per process, torch "
             f"{results['torch']}). HLieConv SO(2) width 128, depth 4; a row marked + is a phase started from "
             "another's best.pt (which: docs/results/springs.md). Scored as `hamnet evaluate` scores: float64 leapfrog over all 10,000 steps from each "
             "held-out system's first state.", "",
             "| row | what | VPT median [q1, q3] | never past 0.1 | true energy change, median (largest) | "
             "systems past 10% | momenta, largest | diverged |", "|---|---|---|---|---|---|---|---|"]
    limit = results.get("integrator")
    if limit:
        vpt = limit["valid_prediction_time"]
        lines.append(f"| true H, same leapfrog | the integrator's limit | {vpt['median']:.1f} (min {vpt['min']:.1f}) | "
                     f"{vpt['never_exceeded']} | {limit['energy']['median']:.2g} ({limit['energy']['max']:.2g}) | - | - | 0 |")
    for row in results["rows"]:
        for seed, run in row["runs"].items():
            if run is None:
                lines.append(f"| {row['row']} (seed {seed}) | {row['what']} | not run yet | | | | | |")
                continue
            vpt, drift = run["valid_prediction_time"], run["drift"]
            momenta = max(drift["linear_momentum"]["max"], drift["angular_momentum"]["max"])
            lines.append(f"| {row['row']} (seed {seed}) | {row['what']} | {vpt['median']:.2f} [{vpt['q1']:.2f}, "
                         f"{vpt['q3']:.2f}] | {vpt['never_exceeded']} | {drift['energy']['median']:.2g} "
                         f"({drift['energy']['max']:.2g}) | {run.get('systems_over_10_percent', '-')} | {momenta:.1e} | "
                         f"{run['diverged']} |")
    for row in results["rows"]:
        for seed, run in row["runs"].items():
            if run is None or "selection" not in run:
                continue
            chosen = run["selection"]["settings"]
            lines += ["", f"{row['row']} (seed {seed}): its weights every {chosen['every']} epochs rolled out over the "
                      f"selection set ({chosen['far']} of {chosen['pool']} fresh systems, seed {chosen['seed']}, reaching "
                      f"at least {chosen['far_reach_min']:.3g} from their centroid, and {chosen['plain']} others, median "
                      f"reach {chosen['plain_reach_median']:.3g}); epoch {run['best_epoch']} scored above.", "",
                      f"| epoch | {MEASURED_COLUMNS}", "|---|---|---|---|---|---|---|"]
            lines += [f"| {m['epoch']} | {measured_cells(m)} |" for m in run["selection"]["snapshots"]]
    if results.get("measured"):
        lines += ["", "Runs' best.pt on the same selection set (`--measure RUN`):", "",
                  f"| run | epoch | {MEASURED_COLUMNS}", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {m['run']} | {m['epoch']} | {measured_cells(m)} |" for m in results["measured"]]
    for grown in results.get("own_states", []):
        lines += ["", f"Own-rollout states of {grown['parent']}"
                  + (" (rollouts of far-reaching systems)" if grown.get("far") else "")
                  + f": {grown['rollouts_picked']} of its {grown['rollouts']} "
                  f"rollouts ({grown['steps']} steps) left the true motion ({grown['states_off_energy']} of the states "
                  f"looked at every {grown['every']} steps with the true energy moved by more than "
                  f"{grown['energy_change']:.0%}, {grown['states_out']} with a particle past {grown['edge_radius']:.3g}); "
                  f"{grown['systems_added']} new training systems."]
    for far in results.get("far_reach", []):
        lines += ["", f"Far-reaching systems: of {far['pool']} fresh systems (seed {far['seed']}, every {far['frame']:g} "
                  f"time units), the {far['keep']} whose particles get farthest from their centroid (at least "
                  f"{far['kept_reach_min']:.3g}; the pool's median {far['pool_reach_median']:.3g}; 99.9% of the training "
                  f"file's particles within {far['base_centred_q999']:.3g} of theirs): {far['systems_added']} new "
                  "training systems."]
    for explained in results.get("worst_systems", []):
        radius = explained["training_radius_q999"]
        lines += ["", f"Systems whose true energy {explained['run']} changes most (`--explain {explained['run']}`): "
                  f"{explained['systems_over_10_percent']} over 10%, {explained['systems_over_5_percent']} over 5%; "
                  f"median energy H(0) of all {explained['median_energy']:.3g}"
                  + (f", 99.9% of training positions within {radius:.3g} of the origin" if radius else "") + ".", "",
                  "| system | energy change | H(0) | farthest particle from the origin, true"
                  + (" (learned)" if all("learned_largest_radius" in row for row in explained["worst"]) else "")
                  + " | the integrator's own change |", "|---|---|---|---|---|"]
        lines += [f"| {row['system']} | {row['energy_change']:.3g} | {row['energy']:.3g} | {row['largest_radius']:.3g}"
                  + (f" ({row['learned_largest_radius']:.3g})" if "learned_largest_radius" in row else "")
                  + f" | {row['integrator_energy_change']:.2g} |" for row in explained["worst"]]
    return lines


#: the header of :func:`measured_cells`' columns
MEASURED_COLUMNS = ("selection systems past 10% (far ones) | past 5% | largest energy change | VPT median, others "
                    f"(far ones) | far ones past 10% with a particle of k < {WEAK_SPRING:g} (far ones with one) | "
                    "force error of those particles (of the others) |")


def measured_cells(m: dict) -> str:
    """One :func:`rollout_measures` as table cells, past its epoch (measures made before the weak-particle
    count show "-" there)."""
    weak = f"{m['far_weak_over_10_percent']} ({m['far_weak']})" if "far_weak" in m else "-"
    cell = lambda value: "-" if value is None else f"{value:.2g}"  # noqa: E731
    force = f"{cell(m['weak_force_error'])} ({cell(m['held_force_error'])})" if "weak_force_error" in m else "-"
    return (f"{m['systems_over_10_percent']} ({m['far_over_10_percent']}) | {m['systems_over_5_percent']} | "
            f"{m['largest_energy_change']:.3g} | {m['plain_vpt_median']:.2f} ({m['far_vpt_median']:.2f}) | {weak} | "
            f"{force}")


if __name__ == "__main__":
    run_script(main)
