"""What the benchmarks share: running in pieces on several processes, logging, results files any JSON
parser reads, the side by side's hamnet side (shared with its ablations) and two measurements. It is the
one module the benchmark scripts import from one another; no script imports another script.

Several processes started with the same command share a benchmark's runs: each takes the next run of the
list that no live process holds (a claim is a lock on ``<work>/claims/<run>.claim``, which the system
drops when its process ends, killed or not), so one long run does not leave a core idle the way a fixed
split can; at the end each waits for the runs it passed over (resuming any whose holder died), so the
last report written has every run. ``--part K/N`` still restricts a process to every N-th run, from the
K-th (for machines that share no folder); ``--report`` writes the results from the scores present.

The side by side (``reference_side_by_side.py``) and its ablations (``ablation_reference_protocol.py``,
``ablation_batch_size.py``) train hamnet with :data:`SCALES`' settings through :func:`hamnet_config` and
:func:`train_hamnet`, and score every model with :func:`score_model`, the reference's models too (in the
reference's environment, ``reference_adapter.py``'s ``evaluate`` job imports it from here).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import math
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from hamnet.checkpoint import model_from_checkpoint
from hamnet.cli import build_parser
from hamnet.cli_train import train_config_from_args
from hamnet.diagnostics import conservation_report
from hamnet.evaluation import evaluate
from hamnet.io import Trajectories, load_trajectories
from hamnet.paths import atomic_path
from hamnet.rollouts import RolloutError, rollout_systems
from hamnet.training import TrainConfig, train


def run_script(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``, ending a foreseen failure (a cached run of other settings, a missing
    checkout, a file that cannot be written) with one line naming the script, not a traceback."""
    try:
        main()
    except (RuntimeError, ValueError, OSError) as error:
        raise SystemExit(f"{Path(sys.argv[0]).name}: error: {error}") from None


def add_piece_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, help="torch threads (recorded in the results)")
    parser.add_argument("--part", default="1/1", help="K/N: this process takes every N-th run, starting at the K-th")
    parser.add_argument("--report", action="store_true", help="write the results from the scores present; train nothing")


def start_pieces(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, int, int]:
    """Parse the arguments, check ``--part``, set torch's threads and log lines with the time."""
    args = parser.parse_args()
    try:
        part, parts = (int(x) for x in args.part.split("/"))
        assert 1 <= part <= parts
    except (ValueError, AssertionError):
        parser.error(f"--part must be K/N with 1 <= K <= N, not {args.part!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamnet.training").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    return args, part, parts


@contextmanager
def claimed(folder: Path, name: str, wait: bool = False) -> Iterator[bool]:
    """True, holding the claim on run ``name`` until the block ends, or False if another process (or another
    claim in this one) holds it; with ``wait``, blocks until the holder lets go, and is always True. The claim
    is an exclusive ``flock`` on ``folder/<name>.claim``: the system drops it when its holder ends, however
    it ends, so a killed process leaves nothing stale."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.claim", "a") as handle:  # the file stays: deleting it would let two hold it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            mine = True
        except BlockingIOError:
            mine = False
        yield mine


def my_runs(plan: Sequence[str], part: int, parts: int, claims: Path) -> Iterator[str]:
    """This process's runs of ``plan`` (run names): every ``parts``-th from the ``part``-th, each while this process
    holds its claim in ``claims`` (held until the loop moves on). Runs another process holds are passed
    over, then waited for at the end and given too: their holder may have been killed (the run resumes
    here), and when this generator ends every run is done, so a report written after it is complete.
    A run must check its own cached result, since another process may have finished it. Two walkers in
    one process can block each other (a lock held through one open file blocks another in the same
    process); one per process is the use."""
    passed_over = []
    for run in plan[part - 1::parts]:
        with claimed(claims, run) as mine:
            if mine:
                yield run
            else:
                logging.info("%s: another process has it; taking the next", run)
                passed_over.append(run)
    for run in passed_over:
        logging.info("%s: waiting for the process that holds it", run)
        with claimed(claims, run, wait=True):
            yield run


def strict_json(value):
    """``value`` with non-finite floats as the strings "inf" / "nan", so any JSON parser reads it."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: Path, value) -> None:
    """``value`` as strict JSON in ``path``, written whole or not at all (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(strict_json(value), indent=2) + "\n")


def write_result_files(stem: Path, results: dict, lines: list[str]) -> None:
    """``<stem>.json`` (``results``, strict JSON) and ``<stem>.md`` (``lines``), each written whole or not
    at all (the JSON first: a failure leaves the old Markdown beside new figures, never a torn file)."""
    write_json(stem.parent / f"{stem.name}.json", results)
    with atomic_path(stem.parent / f"{stem.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    logging.info("wrote %s.md", stem)


# -- the side by side's hamnet side, shared with its ablations -------------------------------------
@dataclass(frozen=True)
class Scale:
    """A scale of the side by side (its ``--scale``); everything it decides: data sizes, the protocol (both sides), hamnet's own settings, and
    the speed and memory measurements."""

    train_systems: int
    test_systems: int
    steps: int
    windows: int
    width: int
    depth: int
    epochs: int
    lr: float
    batch_size: int
    groups: tuple[str, ...]
    seeds: tuple[int, ...]
    timing_widths: tuple[int, ...]
    timing_windows: int
    timing_repeats: int
    memory_batches: int
    note: str = ""


SCALES = {
    "protocol": Scale(train_systems=1000, test_systems=300, steps=500, windows=1000, width=128, depth=4, epochs=30,
                      lr=1e-3, batch_size=200, groups=("T2", "SO2"), seeds=(0, 1, 2), timing_widths=(384, 128),
                      timing_windows=1000, timing_repeats=4, memory_batches=3,
                      note="the reference's springs protocol: width 128, 4 layers, 30 epochs, 1000 windows, lr 1e-3, "
                           "rk4 windows, batch 200; 300 test systems over 500 steps of dt 0.01"),
    "smoke": Scale(train_systems=60, test_systems=20, steps=50, windows=50, width=16, depth=4, epochs=2, lr=1e-3,
                   batch_size=25, groups=("T2", "SO2"), seeds=(0,), timing_widths=(16,), timing_windows=50,
                   timing_repeats=2, memory_batches=2,
                   note="a check that the script runs end to end (width 16, 2 epochs, 50 windows, 20 test systems "
                        "over 50 steps); its numbers mean nothing"),
}


def hamnet_flags(scale: Scale, group: str, seed: int | str, *, width: int | None = None,
                 own_epochs: int | str | None = None) -> list[str]:
    """The flags given to ``hamnet train``: the network's size and the protocol's training settings
    (epochs, batch, lr, rk4 windows); with ``own_epochs``, hamnet's own settings: ``hamnet train``'s
    defaults for all of training but the epoch count. Both give validation and test fractions 0 (every
    given window trains) and the seed. (A string seed or epoch count is a placeholder, for
    the command lines shown in the results.)"""
    network = ["--model", "hlieconv", "--group", group, "--width", str(width or scale.width), "--depth", str(scale.depth)]
    split = ["--validation", "0", "--test", "0", "--seed", str(seed)]
    if own_epochs is not None:
        return [*network, "--epochs", str(own_epochs), *split]
    return [*network, "--epochs", str(scale.epochs), "--batch-size", str(scale.batch_size), "--lr", f"{scale.lr:g}",
            "--method", "rk4", *split]


def hamnet_config(flags: list[str], data_path: Path) -> TrainConfig:
    """The TrainConfig ``hamnet train --data DATA --out RUN FLAGS`` would train with."""
    args = build_parser().parse_args(["train", "--data", str(data_path), "--out", "RUN", *flags])
    return train_config_from_args(args, load_trajectories(data_path))


def train_hamnet(config: TrainConfig, data_path: Path, folder: Path) -> dict:
    """Train (or resume) into ``folder``; returns the epochs' summed seconds and, for a run done in one
    call, its wall-clock seconds (recorded in ``folder/wall.json``)."""
    metrics, last, wall = folder / "metrics.jsonl", folder / "last.pt", folder / "wall.json"
    if (folder / "config.json").exists():
        saved = json.loads((folder / "config.json").read_text())["train_config"]
        wanted = json.loads(json.dumps(config.as_dict()))  # as saved: tuples read back as lists
        if wanted["model"]["kernel_bound"] is None:
            saved["model"]["kernel_bound"] = None  # decided in the run, from the data
        if saved != wanted:
            changed = sorted(key for key in wanted.keys() | saved.keys() if saved.get(key) != wanted.get(key))
            raise ValueError(f"{folder} holds a run with other settings ({', '.join(changed)} differ, e.g. after a "
                             "change of hamnet train's defaults); delete that run and the scores made from it to "
                             "retrain")
    done = metrics.exists() and len(metrics.read_text().splitlines()) >= config.epochs
    if not done:
        if not last.exists():
            shutil.rmtree(folder, ignore_errors=True)
        resumed = last.exists()
        started = time.perf_counter()
        train(config, data_path, folder, resume=resumed)
        seconds = time.perf_counter() - started
        with atomic_path(wall) as tmp:
            tmp.write_text(json.dumps({"wall_seconds": None if resumed else seconds}))
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    saved = json.loads((folder / "config.json").read_text())["train_config"]
    return {"epochs": len(lines), "epoch_seconds": sum(line["seconds"] for line in lines),
            "wall_seconds": json.loads(wall.read_text())["wall_seconds"] if wall.exists() else None,
            "kernel_bound": saved["model"]["kernel_bound"], "final_train_loss": lines[-1]["train_loss"]}


def side_by_side_files(folder: Path) -> tuple[Path, Path, Path]:
    """The side-by-side's windows file, test file and scores folder (the one of its default rollouts)."""
    windows = sorted((folder / "data").glob("windows*_chunk5_*.npz"))
    tests = sorted((folder / "data").glob("springs_*_systems300_seed1.npz"))
    runs = sorted(folder.glob("windows*_test*/scores_default"))
    if len(windows) != 1 or len(tests) != 1 or len(runs) != 1:
        raise SystemExit(f"{folder} does not hold one side-by-side run at the protocol scale: run "
                         "benchmarks/reference_side_by_side.py --scale protocol first")
    return windows[0], tests[0], runs[0]


def train_and_score(config: TrainConfig, windows: Path, test: Path, folder: Path, out: Path) -> tuple[dict, dict]:
    """Train (or resume) ``config`` into ``folder`` and score its last weights as the side-by-side does,
    the score cached in ``out``: ``(training figures, score)``. Training comes first even when scored,
    so a cached run of other settings is refused rather than reused."""
    training = train_hamnet(config, windows, folder)
    if not out.exists():
        score = score_model(model_from_checkpoint(folder / "last.pt")[0], load_trajectories(test), None)
        write_json(out, score)
        logging.info("%s trained (%.0f s of epochs) and scored", folder.name, training["epoch_seconds"])
    return training, json.loads(out.read_text())


def score_model(model: nn.Module, test: Trajectories, method: str | None) -> dict:
    """The evaluator's figures for one model, without per-time and per-system arrays."""
    try:
        scores = evaluate(model, test, method=method)
    except RolloutError as error:
        return {"rollout_error": str(error).splitlines()[0], "n_systems": test.n_systems}
    error, valid = scores["rollout_error"], scores["valid_prediction_time"]
    return {"n_systems": scores["n_systems"], "window_mse": scores["window_mse"],
            "window_mse_with_initial": scores["window_mse_with_initial"],
            "window_method": scores["window_method"], "rollout_method": scores["rollout_method"],
            "rollout_error_geometric_mean": error["geometric_mean_over_time"], "rollout_error_final": error["final"],
            "valid_prediction_time": {key: valid[key] for key in ("threshold", "min", "q1", "median", "q3", "max",
                                                                  "never_exceeded")},
            "diverged": len(scores["divergence"]["systems"]), "diverged_steps": scores["divergence"]["steps"],
            "drift": scores["drift"]}


# -- measurements shared by several benchmarks ------------------------------------------------------
def long_rollout(model: nn.Module, test: Trajectories, steps: int) -> dict:
    """Divergence and drifts of a float64 leapfrog rollout of ``steps`` steps from every test system (the
    pretrained cards' measure, which the training ablations repeat)."""
    started = time.perf_counter()
    result = rollout_systems(model, test.z[:, 0], test.params, steps, float(test.meta["dt"]), method="leapfrog")
    healthy = result.diverged_at < 0
    report = conservation_report(result.z[healthy], test.system().hamiltonian,
                                 {k: v[healthy] for k, v in test.params.items()})
    return {"steps": steps, "systems": test.n_systems, "diverged": len(result.diverged),
            "seconds": round(time.perf_counter() - started, 1),
            **{f"{name}_drift": {"median": float(values.median()), "max": float(values.max())}
               for name, values in report.items()}}


#: Adam steps, states per step and learning rate of :func:`fit_to_springs`
FIT_STEPS = 300
FIT_BATCH = 64
FIT_LR = 3e-3


def fit_to_springs(model, system, generator):
    """Force matching on sampled spring states: a stand-in for a trained model (``rollout_speed.py``,
    ``long_rollout.py``). Returns the final relative force error on a fresh batch."""
    optimiser = torch.optim.Adam(model.parameters(), lr=FIT_LR)
    for _ in range(FIT_STEPS):
        params = {k: v.float() for k, v in system.sample_params(FIT_BATCH, generator).items()}
        q = system.sample_state(params, generator)[:, 0].float()
        loss = (model.forces(q, params) - system.forces(q, params)).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    params = {k: v.float() for k, v in system.sample_params(FIT_BATCH, generator).items()}
    q = system.sample_state(params, generator)[:, 0].float()
    truth = system.forces(q, params)
    with torch.no_grad():
        return float((model.forces(q, params) - truth).norm() / truth.norm())
