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

The peers' side (``peers_side_by_side.py``, ``long_horizon.py``): SEGNO's and EGNN's checkouts checked
against their pinned commits (:data:`PEERS`), their code extracted, hamnet's protocol files converted to
the layout their loaders read, and a peer model trained by its own code through ``peers_adapter.py`` in a
fresh process (:func:`run_peer`).
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import logging
import math
import shutil
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from hamnet.checkpoint import model_from_checkpoint
from hamnet.cli import build_parser
from hamnet.cli_train import train_config_from_args
from hamnet.diagnostics import conservation_report
from hamnet.evaluation import evaluate
from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.paths import atomic_path
from hamnet.provenance import file_sha256
from hamnet.protocols import Protocol, check_protocol, generate_protocol
from hamnet.rollouts import Rollout, RolloutError, rollout_systems
from hamnet.runs import changed_settings
from hamnet.simulation import generate
from hamnet.training import TrainConfig, train
from hamnet.version import __version__


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


def best_rollout_error(epochs: list[dict]) -> float:
    """The lowest finite ``validation_rollout_mse`` of a run's metrics (inf if none is finite): the figure
    by which a recipe chooses between its phases (a rollout that left the data may have logged NaN, and an
    epoch undone by ``rollback`` logged none before hamnet wrote NaN there)."""
    figures = [e.get("validation_rollout_mse", math.nan) for e in epochs]
    return min((figure for figure in figures if math.isfinite(figure)), default=math.inf)


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
    group_lr: tuple[tuple[str, float], ...] = ()  # a learning rate of its own for these groups (else ``lr``)

    def lr_for(self, group: str) -> float:
        return dict(self.group_lr).get(group, self.lr)


#: the reference's springs study (examples/spring_dynamics_study.py at 93affb1): width 384, 4 layers, batch 200,
#: int(sqrt(1e7 / n_train)) epochs, lr 1e-3 for T(2) and 3e-4 for SO(2) (its best_hypers); its README's command
#: instead runs T(2) for 100 epochs at 3000 windows: the study's rule is taken for both sizes and groups
DOCUMENTED = dict(test_systems=300, steps=500, width=384, depth=4, lr=1e-3, group_lr=(("T2", 1e-3), ("SO2", 3e-4)),
                  batch_size=200, groups=("T2", "SO2"), seeds=(0, 1, 2), timing_widths=(), timing_windows=1000,
                  timing_repeats=4, memory_batches=3)

SCALES = {
    "protocol": Scale(train_systems=1000, test_systems=300, steps=500, windows=1000, width=128, depth=4, epochs=30,
                      lr=1e-3, batch_size=200, groups=("T2", "SO2"), seeds=(0, 1, 2), timing_widths=(384, 128),
                      timing_windows=1000, timing_repeats=4, memory_batches=3,
                      note="the reference's springs protocol: width 128, 4 layers, 30 epochs, 1000 windows, lr 1e-3, "
                           "rk4 windows, batch 200; 300 test systems over 500 steps of dt 0.01"),
    **{f"documented-{n}": Scale(train_systems=n, windows=n, epochs=int(math.sqrt(1e7 / n)), **DOCUMENTED,
                                note=f"the reference's own springs study at {n} windows: width 384, 4 layers, "
                                     f"{int(math.sqrt(1e7 / n))} epochs (int(sqrt(1e7 / windows))), lr 1e-3 for T(2) "
                                     "and 3e-4 for SO(2), rk4 windows, batch 200; 300 test systems over 500 steps of "
                                     "dt 0.01; speed and memory: the protocol scale's results")
       for n in (1000, 3000)},
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
    lr = "LR" if scale.group_lr and group not in scale.groups else f"{scale.lr_for(group):g}"  # GROUP: a placeholder
    return [*network, "--epochs", str(scale.epochs), "--batch-size", str(scale.batch_size), "--lr", lr,
            "--method", "rk4", *split]


def hamnet_config(flags: list[str], data_path: Path) -> TrainConfig:
    """The TrainConfig ``hamnet train --data DATA --out RUN FLAGS`` would train with."""
    args = build_parser().parse_args(["train", "--data", str(data_path), "--out", "RUN", *flags])
    return train_config_from_args(args, load_trajectories(data_path))


def train_hamnet(config: TrainConfig, data_path: Path, folder: Path, until: int | None = None) -> dict:
    """Train (or resume) into ``folder``, up to epoch ``until`` (None: all of them); returns the epochs'
    summed seconds and, for a run done in one call, its wall-clock seconds (recorded in ``folder/wall.json``)."""
    metrics, last, wall = folder / "metrics.jsonl", folder / "last.pt", folder / "wall.json"
    if (folder / "config.json").exists():
        # read as hamnet reads a checkpoint's settings: one added since the run was saved had its default's
        # effect then (and a run from before the kernel bound was unbounded)
        saved = TrainConfig.from_dict(json.loads((folder / "config.json").read_text())["train_config"])
        if config.model.kernel_bound is None:  # decided in the run, from the data
            saved = replace(saved, model=replace(saved.model, kernel_bound=None))
        changed = changed_settings(saved, config)
        if changed:
            raise ValueError(f"{folder} holds a run with other settings ({', '.join(changed)} differ, e.g. after a "
                             "change of hamnet train's defaults); delete that run and the scores made from it to "
                             "retrain")
    until = config.epochs if until is None else until
    done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    if done < until:
        if not last.exists():
            shutil.rmtree(folder, ignore_errors=True)
        resumed = last.exists()
        started = time.perf_counter()
        # a kill can leave metrics one epoch ahead of last.pt: resuming drops it, so count from last.pt
        done = model_from_checkpoint(last)[1]["epoch"] if resumed else 0
        wall.unlink(missing_ok=True)  # not a run's own file: hamnet train refuses to resume beside it
        train(config, data_path, folder, resume=resumed, stop_after_epochs=until - done)
        seconds = time.perf_counter() - started
        if until >= config.epochs:  # the wall time of a run done in pieces is not known
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


# -- held-out studies: a training file and a long held-out file of one system ----------------------
@dataclass(frozen=True)
class HeldOutScale:
    """The files of a study that trains on short trajectories and scores on long held-out ones, and the
    training windows; a study's own scale adds its fields."""

    train_systems: int
    train_steps: int
    test_systems: int
    test_steps: int
    windows: int


def held_out_files(work: Path, system, scale: HeldOutScale) -> tuple[Path, Path]:
    """The training (seed 0) and held-out (seed 1) files of ``system`` at dt 0.01, each generated once under
    a claim, so processes sharing ``work`` wait for one another (the generator is exact: a seed gives one
    file)."""
    return (generated_file(work, system, f"train_systems{scale.train_systems}_steps{scale.train_steps}_seed0", 0,
                           scale.train_systems, scale.train_steps),
            generated_file(work, system, f"test_systems{scale.test_systems}_steps{scale.test_steps}_seed1", 1,
                           scale.test_systems, scale.test_steps))


def generated_file(work: Path, system, name: str, seed: int, systems: int, steps: int) -> Path:
    """``work/data/NAME.npz``: ``systems`` x ``steps`` of ``system`` at dt 0.01 from ``seed``, generated once
    under a claim (a process sharing ``work`` waits for the one generating it)."""
    path = work / "data" / f"{name}.npz"
    with claimed(work / "claims", path.stem, wait=True):
        if not path.exists():
            logging.info("generating %s", path.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_trajectories(path, generate(system, n_systems=systems, steps=steps, dt=0.01, seed=seed))
    return path


def true_leapfrog(test: Trajectories) -> tuple[Rollout, dict]:
    """The held-out file's own system from every first state through float64 leapfrog at the file's dt (the
    integrator alone, no learned part): the rollout and its true energy's largest relative change, median
    and largest over systems."""
    system = test.system()
    result = rollout_systems(system, test.z[:, 0], test.params, test.n_times - 1, float(test.meta["dt"]),
                             method="leapfrog")
    energy = conservation_report(result.z, system.hamiltonian, test.params)["energy"]
    return result, {"median": float(energy.median()), "max": float(energy.max())}


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


# -- the peers' own code (SEGNO, EGNN), run from their checkouts by peers_side_by_side.py and long_horizon.py -----
ADAPTER = Path(__file__).resolve().parent / "peers_adapter.py"
#: seeds of the data splits: nbody_peers.py's, so both benchmarks use the same files
DATA_SEEDS = {"train": 43, "valid": 44, "test": 45}


@dataclass(frozen=True)
class Peer:
    """A peer's public code: where it lives, what of it runs, and which sets and horizons its loader knows."""

    name: str
    label: str
    repository: str
    commit: str  # the commit whose code is run (its README's commands are at this commit)
    entry: str  # a file the commit must have, to tell its repository from another
    paths: tuple[str, ...]  # what is extracted (a whole archive of SEGNO fails on a missing large file)
    code: str  # the folder, inside the extraction, that the adapter runs in
    files: dict  # protocol -> (folder of the loader's files, relative to ``code``; the files' suffix)
    horizons: tuple[int, ...] | None  # None: the protocol's three


PEERS = {
    "segno": Peer("segno", "SEGNO (its code)", "yliukj/SEGNO", "46e748b", "N-body/main.py", ("N-body",), "N-body",
                  {"egnn-charged5": ("nbody/dataset", "charged5_initvel1small"),
                   "segno-gravity5": ("nbody/dataset_gravity", "gravity5_initvel1small")}, None),
    # EGNN's loader knows the charged set and the 1000-step horizon only (frames 30 -> 40), as its paper
    "egnn": Peer("egnn", "EGNN (its code)", "vgsatorras/egnn", "e9ca6c0", "main_nbody.py",
                 ("main_nbody.py", "n_body_system", "models"), ".",
                 {"egnn-charged5": ("n_body_system/dataset", "charged5_initvel1small")}, (1000,)),
}


@dataclass(frozen=True)
class Training:
    """A peer's training settings: its scripts' flags."""

    epochs: int
    layers: int
    hidden: int
    lr: float
    test_interval: int
    batch_size: int = 100
    weight_decay: float = 1e-12


@dataclass(frozen=True)
class PeerScale:
    """Data sizes per split, and each peer's training settings."""

    train: int
    valid: int
    test: int
    training: dict  # peer name -> Training
    seeds: tuple[int, ...] = (0, 1, 2)


PEER_SCALES = {
    # SEGNO at its README's settings; EGNN at its own sweep's for egnn_vel at the nearest larger training
    # size (2000 epochs at 400 samples, a check every 10000 / samples epochs)
    "small": PeerScale(train=300, valid=200, test=300,
                   training={"segno": Training(epochs=500, layers=8, hidden=64, lr=5e-3, test_interval=5),
                             "egnn": Training(epochs=2000, layers=4, hidden=64, lr=5e-4, test_interval=33)}),
    # the papers' sizes and their READMEs' commands
    "full": PeerScale(train=3000, valid=2000, test=2000,
                  training={"segno": Training(epochs=500, layers=8, hidden=64, lr=5e-3, test_interval=5),
                            "egnn": Training(epochs=10000, layers=4, hidden=64, lr=5e-4, test_interval=5)}),
    "smoke": PeerScale(train=100, valid=100, test=100, seeds=(0,),
                   training={"segno": Training(epochs=2, layers=2, hidden=16, lr=5e-3, test_interval=1),
                             "egnn": Training(epochs=2, layers=2, hidden=16, lr=5e-4, test_interval=1)}),
}


class PeerCheckoutError(ValueError):
    """A peer checkout that is missing, not a git repository, or at another commit."""


def peer_commit(peer: Peer, checkout: Path, commit: str | None = None) -> str:
    """The full hash of ``commit`` (default: the peer's pinned one) in ``checkout``, once the checkout is shown
    to be the peer's at that commit (a work tree or a bare repository); a one-line :class:`PeerCheckoutError`
    otherwise."""
    commit, flag = commit or peer.commit, f"--{peer.name} {checkout}"
    if not checkout.is_dir():
        raise PeerCheckoutError(f"{flag}: no such folder; give a git checkout of {peer.repository}")
    head = _git(checkout, "rev-parse", "HEAD")
    if head is None:
        raise PeerCheckoutError(f"{flag}: not a git checkout; clone {peer.repository} there (commit {peer.commit})")
    wanted = _git(checkout, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if wanted != head:
        raise PeerCheckoutError(f"{flag}: HEAD is {head[:7]}, not {peer.repository}'s {commit}; check out {commit} "
                                "(the figures are for that commit's code)")
    if _git(checkout, "cat-file", "-e", f"{wanted}:{peer.entry}") is None:
        raise PeerCheckoutError(f"{flag}: commit {wanted[:7]} has no {peer.entry}; is it {peer.repository}?")
    return wanted


def _git(checkout: Path, *args: str) -> str | None:
    done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def extract(peer: Peer, checkout: Path, commit: str, work: Path) -> Path:
    """The folder the peer's code runs in: its ``paths`` at ``commit``, extracted once into ``work``."""
    target = work / f"{peer.name}-{commit[:7]}"
    if not (target / peer.entry).exists():
        archive = subprocess.run(["git", "-C", str(checkout), "archive", "--format=tar", commit, *peer.paths],
                                 capture_output=True, check=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target / peer.code


# -- data -------------------------------------------------------------------------------------------------

def windows_file(folder: Path, source: Path, n_windows: int, seed: int, chunk: int) -> Path:
    """Training windows chosen once, for a trainer that reads windows (the reference's): ``n_windows``
    distinct systems of ``source`` (seeded), one window of ``chunk`` states each at a random start, as a
    trajectory file whose systems are the windows (times ``0, dt, ...``); the choice is recorded in its meta."""
    path = folder / f"windows{n_windows}_chunk{chunk}_seed{seed}_of_{file_sha256(source)[:12]}.npz"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    data = load_trajectories(source)
    if n_windows > data.n_systems:
        raise ValueError(f"{n_windows} windows need as many training systems (one window each, as the reference's "
                         f"data has), but {source} holds {data.n_systems}")
    generator = torch.Generator().manual_seed(seed)
    systems = torch.randperm(data.n_systems, generator=generator)[:n_windows].sort().values
    starts = torch.randint(0, data.n_times - chunk + 1, (n_windows,), generator=generator)
    times = starts.unsqueeze(-1) + torch.arange(chunk)
    meta = {key: data.meta[key] for key in ("system", "system_settings", "dt")} | {
        "hamnet_version": __version__, "windows_of": source.name, "windows_of_sha256": file_sha256(source),
        "window_seed": seed, "window_systems": systems.tolist(), "window_starts": starts.tolist()}
    windows = Trajectories(torch.arange(chunk, dtype=torch.float64) * float(data.meta["dt"]),
                           data.z[systems.unsqueeze(-1), times], {k: v[systems] for k, v in data.params.items()}, meta)
    save_trajectories(path, windows)
    return path


def protocol_file(data: Path, protocol: Protocol, split: str, n_systems: int) -> Path:
    """nbody_peers.py's cached split (its name holds every generation parameter), generated on first use."""
    path = data / f"{protocol.name}_{split}_n{n_systems}_seed{DATA_SEEDS[split]}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_trajectories(path, generate_protocol(protocol.name, split, n_systems, seed=DATA_SEEDS[split]))
    return path


def load_split(path: Path, protocol: Protocol, split: str) -> Trajectories:
    """A protocol file, refused in one line unless it is ``split`` of ``protocol``."""
    data = load_trajectories(path)
    check_protocol(data, protocol.name, str(path))
    made = data.meta["protocol"].get("split")
    if made != split:
        raise ValueError(f"{path} holds the {made!r} split of {protocol.name}, not {split!r}; "
                         f"generate it with `hamnet generate --protocol {protocol.name} --split {split}`")
    return data


def segno_arrays(data: Trajectories, protocol: Protocol) -> dict[str, np.ndarray]:
    """The arrays SEGNO's loader reads, from a hamnet protocol file. Charged: ``loc`` and ``vel``
    ``(B, T - 1, 3, N)`` (EGNN's layout, hamnet's frame 0 dropped), ``charges`` ``(B, N, 1)``, ``edges``
    ``(B, N, N)`` (products of charges). Gravity: ``loc`` and ``vel`` ``(B, T, N, 3)`` (SEGNN's layout)."""
    velocity = data.z[:, :, 1] / data.params["m"][:, None, :, None]
    positions = data.z[:, :, 0]
    if protocol.name == "egnn-charged5":
        charge = data.params["charge"]
        return {"loc": positions[:, 1:].transpose(2, 3).numpy(), "vel": velocity[:, 1:].transpose(2, 3).numpy(),
                "charges": charge[..., None].numpy(), "edges": (charge[:, :, None] * charge[:, None, :]).numpy()}
    return {"loc": positions.numpy(), "vel": velocity.numpy()}


def segno_interval(protocol: Protocol, horizon: int) -> list[int]:
    """SEGNO's ``interval``: the start and target frame in the arrays of :func:`segno_arrays`."""
    dropped = 1 if protocol.name == "egnn-charged5" else 0
    return [protocol.frame_of(protocol.start_step) - dropped, protocol.frame_of(protocol.start_step + horizon) - dropped]


def write_peer_files(code: Path, peer: Peer, protocol: Protocol, splits: dict[str, Trajectories]) -> None:
    """The arrays of :func:`segno_arrays` where the peer's loader reads them (EGNN's and SEGNO's loaders
    read the same layout and names)."""
    folder, suffix = peer.files[protocol.name]
    target = code / folder
    target.mkdir(parents=True, exist_ok=True)
    for split, data in splits.items():
        for key, array in segno_arrays(data, protocol).items():
            np.save(target / f"{key}_{split}_{suffix}.npy", array)


# -- runs ---------------------------------------------------------------------------------------------------

def run_name(peer: str, protocol: str, horizon: int, seed: int) -> str:
    return f"{peer}_{protocol}_h{horizon}_seed{seed}"


def run_peer(work: Path, code: Path, peer: Peer, protocol: Protocol, horizon: int, seed: int, scale: PeerScale,
             test: Trajectories, data_sha: dict[str, str]) -> dict:
    """One peer model trained by its own code (in a fresh process), scored here; cached by name, and a
    cached run of other settings refused in one line."""
    name = run_name(peer.name, protocol.name, horizon, seed)
    training = scale.training[peer.name]
    path = work / "runs" / f"{name}.json"
    settings = {"peer": peer.name, "commit": peer.commit, "train": scale.train, "valid": scale.valid,
                "test": scale.test, **asdict(training), "data_sha256": data_sha}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("settings") != settings:
            raise ValueError(f"{path} holds a run of other settings; delete it or give another --work")
        return cached
    folder = work / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {**asdict(training), "max_samples": scale.train, "seed": seed, "out": str(folder.resolve()),
            "threads": torch.get_num_threads(), "interval": segno_interval(protocol, horizon),
            "dataset": "charged" if protocol.name == "egnn-charged5" else "gravity",
            "dataset_dir": Path(peer.files[protocol.name][0]).name}
    (folder / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    subprocess.run([sys.executable, str(ADAPTER), peer.name, str(folder.resolve() / "spec.json")], check=True,
                   cwd=code)
    result = json.loads((folder / "result.json").read_text())
    predicted = torch.from_numpy(np.load(folder / "predictions.npy"))
    truth = test.z[:, protocol.frame_of(protocol.start_step + horizon), 0]
    result |= {"peer": peer.name, "protocol": protocol.name, "horizon": horizon, "seed": seed, "settings": settings,
               "position_mse": float((predicted - truth).square().mean())}
    write_json(path, result)
    return result


