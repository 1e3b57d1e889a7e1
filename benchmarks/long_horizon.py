"""Past the peers' horizon: 10,000 steps from the test states of the two 5-body sets.

The question: the peers publish nothing past 2000 steps; 5 times further, are hamnet's learned Hamiltonians,
rolled out symplectically, ahead of SEGNO and EGNN applied autoregressively, and what do the true energy
and the momenta do? From the test states of ``egnn-charged5`` (its start frame, step 3100) and
``segno-gravity5`` (the initial state), position MSE at 2000, 5000 and 10,000 protocol steps, and on the
grid of every 1000 steps from the start: the largest relative change of the protocol's own energy (its
``Trajectories.system()``: Coulomb without softening, gravity with softening 0.1; relative to ``|H(0)|``)
and of the linear and angular momentum (``hamnet.diagnostics.conservation_report``), per test system,
then the median and the largest over systems; for hamnet's rows also the change of the model's own learned
energy, which leapfrog keeps bounded (the true energy follows only as far as the learned ``H`` is the true
one). Every figure is the mean ± standard deviation over three seeds (training seeds; the data are the
same).

The rows, and exactly what each does:

* **hamnet's learned Hamiltonians**: ``nbody_peers.py``'s HLieConv SE(3) and EGNN-H (small scale: one
  leapfrog step per frame interval) and, where their runs are finished, three of ``frame_recipe.py``'s
  HLieConv SE(3) recipes: ``substeps4-steady`` (4 sub-steps, warm-up and clipping, then longer windows: per
  seed the phase of ``steady4+long`` and ``steady4+long+longer`` with the lower validation rollout error,
  as its row "steady4 recipe" picks, else ``substeps4-steady``), ``coupled4`` (the same with every pair
  weighted by ``q_u q_v``; charged set only), ``coupled10`` (its first phase at 10 sub-steps), ``coupled``
  (per seed, whichever of those four phases has the lowest validation rollout error, as the row "coupled
  recipe" picks) and ``auto`` (10 sub-steps: the last finished phase of
  ``auto+long+f64`` and ``auto``). Each ``best.pt`` is rolled out from the start state
  with leapfrog in float64 at the frame interval (0.1 time units, 100 protocol steps), taking the sub-steps
  its checkpoint records (``train_config["substeps"]``; 1 where it records none) per interval: 100
  intervals.
* **SEGNO and EGNN, chained**: their 1000-step predictors (one per seed, trained by their own code at
  ``peers_side_by_side.py``'s small settings on the same 300 training trajectories, the weights of the
  best validation epoch kept under the work folder), applied 10 times, each link from the state the last
  one reached, through their own loaders and test passes (``peers_adapter.py``'s ``chain`` job; float32,
  as they run). The models map (positions, velocities) to positions 1000 steps later; the velocity handed
  to the next link is
  - **SEGNO, its velocity**: SEGNO's layers integrate a velocity (``v += a / L``, ``x += v / L`` in each of
    its ``L`` layers), which its ``forward`` computes and drops; the chain takes the last layer's ``v``,
    the model's own velocity at the target time;
  - **finite difference** (SEGNO and EGNN): the position change over the link divided by its duration
    (1 time unit), the mean velocity over the link rather than the velocity at its end. EGNN's
    ``EGNN_vel`` has no velocity of its own to hand on: each of its layers adds ``phi(h) * v`` with the
    *input* velocity ``v``, unchanged from layer to layer, so the finite difference is its only velocity.
  EGNN's loader knows the charged set only, so EGNN has no gravity row. Both peers were trained on states
  at one time (the charged set's step 3100, the gravity set's step 0) and are applied to later ones.
* **ground truth**: the protocol's own data (its generator, continued to 10,000 steps past the start:
  ``generate_protocol`` on the protocol with a 10,000-step horizon added, whose first frames are checked
  to be bit for bit the cached test split's), for its energy and momenta (the charged protocol clips
  forces and records velocities half a step late, so neither is exactly conserved there).
* **straight lines**: every particle moving at its start velocity, the MSE a predictor that learns
  nothing reaches.

"Velocity error at 1000 steps" is ``|v - v_true| / |v_true|`` (norms over all test systems) of the velocity
each row holds after 1000 steps, the one a chain hands to its second link; in the ground-truth row, that
of the finite difference of the true positions, the error the estimate makes by itself. A system whose
state stops being finite or grows past ``hamnet.rollouts.DIVERGENCE_FACTOR`` times its start size is held
at its last healthy state (MSE) and left out of the conservation figures; the "diverged" column counts them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/long_horizon.py --segno PATH --egnn PATH &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/long_horizon.py --segno PATH --egnn PATH &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/long_horizon.py --report

``PATH`` is a git checkout of yliukj/SEGNO or vgsatorras/egnn at the commit ``pieces.PEERS`` pins (a bare
repository will do). Needs ``nbody_peers.py --scale small``'s runs of HLieConv SE(3) and EGNN-H (three
seeds) and its data cache. Several processes share the runs (``pieces.py``); the peers' training (about 6
minutes a model on one thread), their weights, chains, rollouts and scores are kept under
``benchmarks/work/long_horizon/`` and skipped once done; ``--models coupled4`` (and no checkouts) adds one
hamnet row to the scores present without the others' runs. Writes
``benchmarks/results/long_horizon_<scale>.{md,json}`` from the scores present.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from hamnet.checkpoint import model_from_checkpoint
from hamnet.diagnostics import conservation_report
from hamnet.io import Trajectories, save_trajectories
from hamnet.protocols import PROTOCOLS, Protocol, generate_protocol
from hamnet.provenance import file_sha256
from hamnet.rollouts import DIVERGENCE_FACTOR, rollout_systems

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pieces import (ADAPTER, DATA_SEEDS, PEER_SCALES, PEERS, Peer, add_piece_arguments,  # noqa: E402
                    best_rollout_error, claimed, extract, load_split, my_runs, peer_commit, protocol_file,
                    run_name, run_peer, run_script, start_pieces, write_json, write_peer_files, write_result_files)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROTOCOL_NAMES = ("egnn-charged5", "segno-gravity5")
#: the peers' horizon, in protocol steps: one link of a chain
LINK = 1000


@dataclass(frozen=True)
class Scale:
    """How far, from how many test states, with which seeds; ``peers`` names the ``pieces.PEER_SCALES``
    entry (data sizes and the peers' training) and the ``nbody_peers.py`` scale whose runs are read."""

    peers: str
    steps: int
    reported: tuple[int, ...]
    seeds: tuple[int, ...]
    note: str


SCALES = {
    "small": Scale("small", 10_000, (2000, 5000, 10_000), (0, 1, 2),
                   "300 test systems; the models of the small scale (300 training trajectories)"),
    "smoke": Scale("smoke", 2000, (1000, 2000), (0,),
                   "a check that the script runs end to end (2 links, the smoke scale's models); its numbers mean "
                   "nothing"),
}


@dataclass(frozen=True)
class HamnetModel:
    """Where a hamnet model's runs are (``folder`` under ``--runs``, formatted with the scale, protocol and
    seed), which phase to take and how to make them: of ``choice`` (run folders under ``--runs``, formatted
    alike; they may span recipes), when all are finished, the one whose best epoch has the lowest validation
    rollout error (as ``frame_recipe.py`` chooses); otherwise the first finished of ``phases`` (folders
    in ``folder``; ``""``: the folder itself); ``protocols``: the sets it is trained on."""

    key: str
    label: str
    folder: str
    phases: tuple[str, ...]
    required: bool
    command: str
    choice: tuple[str, ...] = ()
    protocols: tuple[str, ...] = PROTOCOL_NAMES


def recipe_phases(recipe: str, *phases: str) -> tuple[str, ...]:
    """The run folders of ``frame_recipe.py``'s phases of ``recipe``, as :attr:`HamnetModel.choice` names them."""
    return tuple(f"frame_recipe/runs/{{protocol}}_{recipe}_seed{{seed}}/{phase}" for phase in phases)


COUPLED4 = recipe_phases("coupled4", "coupled4", "coupled4+long", "coupled4+long+longer")
HAMNET = (
    HamnetModel("hlieconv-se3", "HLieConv SE(3)", "nbody_peers_{scale}/runs/{protocol}_hlieconv-se3_seed{seed}",
                ("",), True, "benchmarks/nbody_peers.py --scale {scale} --models hlieconv-se3 egnn-h"),
    HamnetModel("egnn-h", "EGNN-H", "nbody_peers_{scale}/runs/{protocol}_egnn-h_seed{seed}", ("",), True,
                "benchmarks/nbody_peers.py --scale {scale} --models hlieconv-se3 egnn-h"),
    HamnetModel("steady4", "HLieConv SE(3), frame recipe substeps4-steady",
                "frame_recipe/runs/{protocol}_substeps4-steady_seed{seed}", ("substeps4-steady",), False,
                "benchmarks/frame_recipe.py --recipes substeps4-steady",
                recipe_phases("substeps4-steady", "steady4+long", "steady4+long+longer")),
    HamnetModel("recipe", "HLieConv SE(3), frame recipe auto", "frame_recipe/runs/{protocol}_auto_seed{seed}",
                ("auto+long+f64", "auto"), False, "benchmarks/frame_recipe.py --recipes auto"),
    HamnetModel("coupled4", "HLieConv SE(3), frame recipe coupled4", "frame_recipe/runs/{protocol}_coupled4_seed{seed}",
                ("coupled4",), False, "benchmarks/frame_recipe.py --recipes coupled4", COUPLED4, ("egnn-charged5",)),
    HamnetModel("coupled10", "HLieConv SE(3), frame recipe coupled10",
                "frame_recipe/runs/{protocol}_coupled10_seed{seed}", ("coupled10",), False, "benchmarks/frame_recipe.py --recipes coupled10", (), ("egnn-charged5",)),
    HamnetModel("coupled", "HLieConv SE(3), frame recipe coupled4 or coupled10",
                "frame_recipe/runs/{protocol}_coupled10_seed{seed}", (), False,
                "benchmarks/frame_recipe.py --recipes coupled4 coupled10", (*COUPLED4, *recipe_phases(
                    "coupled10", "coupled10")), ("egnn-charged5",)),
)
#: (peer, velocity handed to the next link, label)
CHAINS = (("segno", "model", "SEGNO (its code), chained, its velocity"),
          ("segno", "difference", "SEGNO (its code), chained, finite difference"),
          ("egnn", "difference", "EGNN (its code), chained, finite difference"))


# -- the ground truth, past the protocol's last stored step -------------------------------------------------
def truth_file(work: Path, data: Path, protocol: Protocol, scale: Scale) -> Path:
    """The test split continued to ``scale.steps`` past the start, generated once (under a claim, so two
    processes do not both make it) and refused unless its first frames are the cached test split's."""
    n_systems = PEER_SCALES[scale.peers].test
    last = protocol.start_step + scale.steps
    path = work / "data" / f"{protocol.name}_test_n{n_systems}_seed{DATA_SEEDS['test']}_to{last}.npz"
    with claimed(work / "claims", path.stem, wait=True):
        if not path.exists():
            cached = load_split(protocol_file(data, protocol, "test", n_systems), protocol, "test")
            started = time.perf_counter()
            longer = dataclasses.replace(protocol, horizons=(*protocol.horizons, scale.steps))
            with mock.patch.dict(PROTOCOLS, {protocol.name: longer}):  # the generator takes protocols by name
                made = generate_protocol(protocol.name, "test", n_systems, seed=DATA_SEEDS["test"])
            check_continuation(cached, made)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_trajectories(path, made)
            logging.info("generated %s in %.0f s", path.name, time.perf_counter() - started)
    truth = load_split(path, protocol, "test")
    if truth.n_times <= (last // protocol.frame_steps):
        raise ValueError(f"{path} stops before step {last}; delete it to generate it again")
    return path


def check_continuation(cached: Trajectories, made: Trajectories) -> None:
    """Refuse a longer generation whose parameters or first frames differ from the cached split in any bit:
    the protocol's sampler draws the same states from the same seed whatever the horizon, and its
    integrator gives the same bits however the systems are chunked."""
    frames = cached.n_times
    same = (made.n_systems == cached.n_systems and torch.equal(made.z[:, :frames], cached.z)
            and all(torch.equal(made.params[k], cached.params[k]) for k in cached.params))
    if not same:
        raise ValueError("the protocol generated with a longer horizon does not reproduce the cached test split "
                         "bit for bit; the continuation would not be of the same systems")


def link_frames(protocol: Protocol, scale: Scale) -> list[int]:
    """The truth file's frames every ``LINK`` steps from the start, the start included."""
    return [(protocol.start_step + k * LINK) // protocol.frame_steps for k in range(scale.steps // LINK + 1)]


# -- scoring, alike for every row ------------------------------------------------------------------------------
def hold_diverged(z: torch.Tensor) -> torch.Tensor:
    """Per system of ``z: (B, T, 2, N, D)``, the first time whose state is not finite or whose largest
    coordinate passes ``DIVERGENCE_FACTOR`` times the start's (-1 for none); from it on, ``z`` (changed in
    place) holds the last healthy state, as :func:`hamnet.rollouts.rollout_systems` does."""
    flat = z.flatten(2)
    size = flat[:, 0].abs().amax(-1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)
    bad = ~torch.isfinite(flat).all(-1) | (flat.abs().amax(-1) > DIVERGENCE_FACTOR * size)
    first = torch.where(bad.any(-1), bad.int().argmax(-1), torch.full_like(bad[:, 0], -1, dtype=torch.int64))
    for b in (first >= 0).nonzero().flatten().tolist():
        z[b, int(first[b]):] = z[b, int(first[b]) - 1]
    return first


def score(z: torch.Tensor, truth: Trajectories, protocol: Protocol, scale: Scale) -> dict:
    """Figures of states ``z: (B, L + 1, 2, N, D)`` (positions, momenta) at every ``LINK`` steps from the start
    (``L`` links; ``z`` changed in place where a system diverged): position MSE at the reported steps,
    conservation of the protocol's energy and both momenta on that grid (median and largest over the systems
    that stayed healthy), and the velocity error after one link."""
    frames = link_frames(protocol, scale)
    true = truth.z[:, frames]
    diverged = hold_diverged(z)
    healthy = diverged < 0
    mse = {str(s): float((z[:, s // LINK, 0] - true[:, s // LINK, 0]).square().mean()) for s in scale.reported}
    mass = truth.params["m"][:, None, :, None]
    velocity = z[:, 1, 1] / mass[:, 0]
    true_velocity = true[:, 1, 1] / mass[:, 0]
    result = {"mse": mse, "diverged": int((~healthy).sum()), "systems": truth.n_systems,
              "velocity_error_first_link": float((velocity - true_velocity).norm() / true_velocity.norm())}
    if healthy.any():
        report = conservation_report(z[healthy], truth.system().hamiltonian,
                                     {k: v[healthy] for k, v in truth.params.items()})
        result |= {name: {"median": float(values.median()), "max": float(values.max())}
                   for name, values in report.items()}
    return result


def cached_score(path: Path, settings: dict, make) -> dict:
    """The score in ``path`` if it was made with ``settings``, else ``make()``'s, written there; a cached
    score of other settings is refused in one line."""
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("settings") != settings:
            raise ValueError(f"{path} holds a score of other settings (another checkpoint, truth or length); "
                             "delete it to score again")
        return cached
    started = time.perf_counter()
    result = make() | {"settings": settings}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(path, result)
    return result


# -- hamnet's models ---------------------------------------------------------------------------------------------
def hamnet_checkpoint(runs: Path, model: HamnetModel, scale: Scale, protocol: str,
                      seed: int) -> tuple[Path, str] | None:
    """``best.pt`` of the phase of ``model``'s run to take (see :class:`HamnetModel`), and the phase; None if
    none is finished (refused in one line, saying which command makes it, if ``model`` is required)."""
    where = {"scale": scale.peers, "protocol": protocol, "seed": seed}
    folder = runs / model.folder.format(**where)
    choice = {run: _finished_epochs(run) for run in (runs / path.format(**where) for path in model.choice)}
    if choice and all(choice.values()):
        run = min(choice, key=lambda run: best_rollout_error(choice[run]))
        return run / "best.pt", run.name
    epochs = {phase: _finished_epochs(folder / phase if phase else folder) for phase in model.phases}
    for phase in model.phases:
        if epochs[phase]:
            return (folder / phase if phase else folder) / "best.pt", phase
    if model.required:
        raise ValueError(f"{folder / 'best.pt'} is missing or its training is not finished: run `python "
                         f"{model.command.format(scale=scale.peers)}` first")
    return None


def _finished_epochs(run: Path) -> list[dict]:
    """The epochs of the metrics of ``run`` once it holds a ``best.pt`` and all its epochs; [] otherwise."""
    config, metrics = run / "config.json", run / "metrics.jsonl"
    if not ((run / "best.pt").exists() and config.exists() and metrics.exists()):
        return []
    epochs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return epochs if len(epochs) >= json.loads(config.read_text())["train_config"]["epochs"] else []


def score_hamnet(checkpoint: Path, truth_path: Path, protocol: Protocol, scale: Scale) -> dict:
    """Leapfrog in float64 from the start frame at the frame interval, with the checkpoint's sub-steps."""
    model, state = model_from_checkpoint(checkpoint)
    substeps = state["train_config"].get("substeps", 1)  # checkpoints from before sub-steps took one
    truth = load_split(truth_path, protocol, "test")
    start = protocol.start_step // protocol.frame_steps
    intervals = scale.steps // protocol.frame_steps
    rolled = rollout_systems(model, truth.z[:, start], truth.params, intervals, float(truth.meta["dt"]),
                             method="leapfrog", dtype=torch.float64, substeps=substeps)
    every = LINK // protocol.frame_steps
    result = score(rolled.z[:, ::every].clone(), truth, protocol, scale)
    healthy = rolled.diverged_at < 0
    result |= {"substeps": substeps, "method": "leapfrog", "dtype": "float64"}
    if healthy.any():  # the true energy on every frame, and the model's own on the grid of the others
        params = {k: v[healthy] for k, v in truth.params.items()}
        fine = conservation_report(rolled.z[healthy], truth.system().hamiltonian, params)["energy"]
        with torch.no_grad():
            own = conservation_report(rolled.z[healthy, ::every], copy.deepcopy(model).double(), params)["energy"]
        result |= {"energy_every_frame": {"median": float(fine.median()), "max": float(fine.max())},
                   "learned_energy": {"median": float(own.median()), "max": float(own.max())}}
    return result


# -- the peers, chained ------------------------------------------------------------------------------------------
def peer_files(code: Path, peer: Peer, protocol: Protocol, data: Path, n: dict[str, int], work: Path) -> dict:
    """The three splits written where the peer's loader reads them, once (under a claim); their sha256."""
    paths = {split: protocol_file(data, protocol, split, size) for split, size in n.items()}
    sha = {split: file_sha256(path) for split, path in paths.items()}
    marker = code / peer.files[protocol.name][0] / f".written-{protocol.name}.json"
    with claimed(work / "claims", f"files_{peer.name}_{protocol.name}", wait=True):
        if not marker.exists() or json.loads(marker.read_text()) != sha:
            splits = {split: load_split(path, protocol, split) for split, path in paths.items()}
            write_peer_files(code, peer, protocol, splits)
            marker.write_text(json.dumps(sha))
    return sha


def chain_peer(work: Path, code: Path, peer: Peer, velocity: str, protocol: Protocol, seed: int, scale: Scale,
               truth_path: Path, data: Path, sha: dict[str, str]) -> dict:
    """Train (or find) the peer's 1000-step model of ``seed`` on the splits in ``data`` (``sha``: theirs),
    chain it ``scale.steps // LINK`` times from the test states and score the chain."""
    truth = load_split(truth_path, protocol, "test")
    peer_scale = PEER_SCALES[scale.peers]
    test = load_split(protocol_file(data, protocol, "test", peer_scale.test), protocol, "test")
    trained = run_peer(work / "peers", code, peer, protocol, LINK, seed, peer_scale, test, sha)
    folder = work / "peers" / "runs" / run_name(peer.name, protocol.name, LINK, seed)
    weights = folder / "weights.pt"
    if not weights.exists():
        raise ValueError(f"{folder} holds no weights.pt (trained before the adapter kept them); delete it and "
                         f"{folder}.json to train again")
    links = scale.steps // LINK
    name = f"chain_{velocity}_links{links}"
    start = truth.z[:, protocol.start_step // protocol.frame_steps]
    arrays = {"x": start[:, 0].numpy(), "v": (start[:, 1] / truth.params["m"][..., None]).numpy()}
    if "charge" in truth.params:
        arrays["charges"] = truth.params["charge"].numpy()
    np.savez(folder / "start.npz", **arrays)
    files, suffix = peer.files[protocol.name]
    spec = json.loads((folder / "spec.json").read_text()) | {
        "job": "chain", "name": name, "weights": str(weights.resolve()), "start": str((folder / "start.npz").resolve()),
        "links": links, "velocity": velocity, "link_time": LINK * protocol.dt,
        "files_folder": str((code / files).resolve()), "files_suffix": suffix, "threads": torch.get_num_threads()}
    spec_path = (folder / f"{name}.spec.json").resolve()
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    subprocess.run([sys.executable, str(ADAPTER), peer.name, str(spec_path)], check=True, cwd=code)
    states = np.load(folder / f"{name}.npz")
    x, v = torch.from_numpy(states["x"]).transpose(0, 1), torch.from_numpy(states["v"]).transpose(0, 1)
    z = torch.stack([x, v * truth.params["m"][:, None, :, None]], dim=2)  # (B, L + 1, 2, N, D)
    timing = json.loads((folder / f"{name}.json").read_text())
    return score(z, truth, protocol, scale) | {
        "peer": peer.name, "velocity": velocity, "chain_seconds": timing["seconds"],
        "train_seconds": trained["train_seconds"], "best_epoch": trained["best_epoch"],
        "position_mse_at_link": trained["position_mse"]}


def reproduction(work_root: Path, scale: Scale, peer: str, protocol: str, seed: int, folder: Path) -> float | None:
    """Largest difference between the test predictions of the model trained here and those of
    ``peers_side_by_side.py``'s run of the same settings and seed, where that run is cached (None if not)."""
    theirs = work_root / f"peers_{scale.peers}" / "runs" / run_name(peer, protocol, LINK, seed) / "predictions.npy"
    ours = folder / "predictions.npy"
    if not (theirs.exists() and ours.exists()):
        return None
    return float(np.abs(np.load(theirs) - np.load(ours)).max())


# -- the report ---------------------------------------------------------------------------------------------------
COLUMNS = ("energy", "linear_momentum", "angular_momentum", "learned_energy")
#: the conservation columns of the tables: (figure, median or largest over the test systems)
CONSERVATION = (("energy", "median"), ("energy", "max"), ("linear_momentum", "max"), ("angular_momentum", "max"),
                ("learned_energy", "median"), ("learned_energy", "max"))


def reference_rows(truth_path: Path, protocol: Protocol, scale: Scale) -> dict:
    """The ground truth's own conservation and its finite-difference velocity error; straight lines' MSE."""
    truth = load_split(truth_path, protocol, "test")
    frames = link_frames(protocol, scale)
    z = truth.z[:, frames].clone()
    result = score(z.clone(), truth, protocol, scale)
    difference = (z[:, 1, 0] - z[:, 0, 0]) / (LINK * protocol.dt)
    true_velocity = z[:, 1, 1] / truth.params["m"][..., None]
    result["velocity_error_first_link"] = float((difference - true_velocity).norm() / true_velocity.norm())
    q, v = z[:, 0, 0], z[:, 0, 1] / truth.params["m"][..., None]
    lines = {str(s): float((q + v * s * protocol.dt - z[:, s // LINK, 0]).square().mean()) for s in scale.reported}
    return {"ground truth": result, "straight lines": {"mse": lines}}


def summarise(scores: list[dict]) -> dict:
    """protocol -> row -> seeds and mean, std of every figure over them."""
    grouped: dict = {}
    for entry in scores:
        grouped.setdefault(entry["protocol"], {}).setdefault(entry["row"], []).append(entry)
    table: dict = {}
    for protocol, rows in grouped.items():
        for row, members in rows.items():
            figures = {f"mse_{s}": [m["mse"][s] for m in members] for s in members[0]["mse"]}
            for name in COLUMNS:
                for kind in ("median", "max"):
                    figures[f"{name}_{kind}"] = [m[name][kind] for m in members if name in m]
            figures["velocity_error_first_link"] = [m["velocity_error_first_link"] for m in members]
            table.setdefault(protocol, {})[row] = {
                "seeds": [m["seed"] for m in members], "diverged": sum(m["diverged"] for m in members),
                "sources": _sources(members),
                **{key: {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                         "per_seed": values} for key, values in figures.items() if values}}
    return table


def _sources(members: list[dict]) -> list[str]:
    """What a hamnet row was rolled out from: the recipe's phase of each seed, and the sub-steps per frame
    interval; nothing for a peer's row."""
    seeds: dict[str, list[str]] = {}
    for m in members:
        if m.get("source"):
            seeds.setdefault(m["source"], []).append(str(m["seed"]))
    phases = [f"{phase}: seed{'s' if len(of) > 1 else ''} {', '.join(of)}" for phase, of in seeds.items()]
    steps = sorted({m["substeps"] for m in members if "substeps" in m})
    return phases + [f"{'/'.join(map(str, steps))} leapfrog step{'s' if max(steps) > 1 else ''} per frame"
                     for _ in steps[:1]]


def _cell(entry: dict, key: str, form: str) -> str:
    if key not in entry:
        return "-"
    figure = entry[key]
    return f"{figure['mean']:{form}} ± {figure['std']:{form}}" if len(figure.get("per_seed", [0])) > 1 \
        else f"{figure['mean']:{form}}"


def markdown(scale_name: str, scale: Scale, table: dict, references: dict, reproduced: list[dict], commits: dict,
             command: str, absent: dict[str, list[str]]) -> list[str]:
    reported = " / ".join(f"{s:,}" for s in scale.reported)
    lines = [f"# Past the peers' horizon: {scale.steps:,} steps ({scale_name} scale)", "",
             f"Command: `{command}` (torch {torch.__version__}, one torch thread per process). Scale: {scale.note}. "
             f"Position MSE at {reported} protocol steps from the start state; energy (the protocol's own, "
             "relative to |H(0)|) and linear and angular momentum (relative to the start's scales): the largest "
             f"change on the grid of every {LINK} steps, median and largest over the test systems; velocity error "
             f"after {LINK} steps. Mean ± standard deviation over the seeds listed. Peers' code: "
             + (", ".join(f"{PEERS[name].repository} at {commit[:7]}" for name, commit in commits.items()) or "none")
             + ". `long_horizon.py`'s docstring says what each row does.", ""]
    header = ("| model | seeds | " + " | ".join(f"MSE at {s:,}" for s in scale.reported)
              + " | energy change, median | energy change, largest | linear momentum, largest "
                "| angular momentum, largest | its own energy change, median | its own energy change, largest "
                "| velocity error at 1000 | diverged |")
    for protocol in PROTOCOL_NAMES:
        rows, reference = table.get(protocol, {}), references.get(protocol, {})
        if not rows and not reference:
            continue
        lines += [f"## {protocol}", "", header, "|---" * (len(scale.reported) + 10) + "|"]
        for row, entry in rows.items():
            sources = f" ({'; '.join(entry['sources'])})" if entry["sources"] else ""
            lines.append(f"| {row}{sources} | {', '.join(map(str, entry['seeds']))} | "
                         + " | ".join(_cell(entry, f"mse_{s}", ".4g") for s in scale.reported) + " | "
                         + " | ".join(_cell(entry, f"{name}_{kind}", ".2e") for name, kind in
                                      CONSERVATION)
                         + f" | {_cell(entry, 'velocity_error_first_link', '.3f')} | {entry['diverged']} |")
        for row, figures in reference.items():
            single = {key: {"mean": value} for key, value in _flatten(figures).items()}
            lines.append(f"| {row} | - | " + " | ".join(_cell(single, f"mse_{s}", ".4g") for s in scale.reported)
                         + " | " + " | ".join(_cell(single, f"{name}_{kind}", ".2e") for name, kind in CONSERVATION)
                         + f" | {_cell(single, 'velocity_error_first_link', '.3f')} | - |")
        if absent.get(protocol):
            lines += ["", "Not in the table: " + "; ".join(absent[protocol]) + "."]
        lines.append("")
    if reproduced:
        lines += ["## The peers' 1000-step models", "",
                  "Trained here by their own code with the weights kept; test position MSE at 1000 steps, and the "
                  "largest difference of their test predictions from `peers_side_by_side.py`'s run of the same "
                  "settings and seed (its cache; 0 means the same model). Training seconds are wall-clock: a "
                  "model trained while other work held the cores took longer.", "",
                  "| model | protocol | seed | MSE at 1000 | best epoch | train s | difference from the side by side |",
                  "|---|---|---|---|---|---|---|"]
        for run in reproduced:
            difference = "not cached" if run["difference"] is None else f"{run['difference']:.1e}"
            lines.append(f"| {PEERS[run['peer']].label} | {run['protocol']} | {run['seed']} | "
                         f"{run['position_mse']:.4f} | {run['best_epoch']} | {run['train_seconds']:.0f} | "
                         f"{difference} |")
        lines.append("")
    return lines


def _flatten(figures: dict) -> dict:
    flat = {f"mse_{s}": value for s, value in figures.get("mse", {}).items()}
    for name in COLUMNS:
        for kind in ("median", "max"):
            if name in figures:
                flat[f"{name}_{kind}"] = figures[name][kind]
    if "velocity_error_first_link" in figures:
        flat["velocity_error_first_link"] = figures["velocity_error_first_link"]
    return flat


# -- running ------------------------------------------------------------------------------------------------------
def plan_jobs(protocols: list[str], scale: Scale, runs: Path, checkouts: dict,
              models: list[str] | None = None) -> dict[str, tuple]:
    """job name -> what it does: a peer's model trained and chained, or a hamnet checkpoint rolled out (of
    ``models``' keys; None: all). The peers' come first (each trains for minutes)."""
    jobs: dict[str, tuple] = {}
    for seed in scale.seeds:
        for protocol in protocols:
            for peer in dict.fromkeys(name for name, _, _ in CHAINS):
                if peer in checkouts and protocol in PEERS[peer].files:
                    jobs[f"{peer}_{protocol}_seed{seed}"] = ("peer", peer, protocol, seed)
    for seed in scale.seeds:
        for protocol in protocols:
            for model in (m for m in HAMNET if protocol in m.protocols and (models is None or m.key in models)):
                found = hamnet_checkpoint(runs, model, scale, protocol, seed)
                if found is not None:
                    jobs[f"{model.key}_{protocol}_seed{seed}"] = ("hamnet", model, protocol, seed, *found)
    return jobs


def run_job(job: tuple, work: Path, scale: Scale, truths: dict[str, Path], codes: dict, data: Path,
            runs: Path) -> None:
    """One job of :func:`plan_jobs`, its scores cached in ``work/scores``; a peer's records how far its
    model is from ``peers_side_by_side.py``'s under ``runs`` (:func:`reproduction`)."""
    if job[0] == "hamnet":
        _, model, protocol, seed, checkpoint, phase = job
        settings = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint),
                    "truth_sha256": file_sha256(truths[protocol]), "steps": scale.steps}
        result = cached_score(work / "scores" / f"{protocol}_{model.key}_seed{seed}.json", settings, lambda: {
            "protocol": protocol, "row": model.label, "seed": seed, "source": phase,
            **score_hamnet(checkpoint, truths[protocol], PROTOCOLS[protocol], scale)})
        logging.info("%s %s seed %d: MSE %s", protocol, model.label, seed, result["mse"])
        return
    _, peer_name, protocol_name, seed = job
    peer, protocol = PEERS[peer_name], PROTOCOLS[protocol_name]
    code, commit = codes[peer_name]
    size = PEER_SCALES[scale.peers]
    sha = peer_files(code, peer, protocol, data, {"train": size.train, "valid": size.valid, "test": size.test}, work)
    for velocity, label in ((velocity, label) for name, velocity, label in CHAINS if name == peer_name):
        settings = {"commit": commit, "truth_sha256": file_sha256(truths[protocol_name]), "steps": scale.steps,
                    "velocity": velocity, "data_sha256": sha, "training": dataclasses.asdict(size.training[peer_name])}
        folder = work / "peers" / "runs" / run_name(peer_name, protocol_name, LINK, seed)
        result = cached_score(work / "scores" / f"{protocol_name}_{peer_name}-{velocity}_seed{seed}.json", settings,
                              lambda: {"protocol": protocol_name, "row": label, "seed": seed,
                                       **chain_peer(work, code, peer, velocity, protocol, seed, scale,
                                                    truths[protocol_name], data, sha),
                                       "difference": reproduction(runs, scale, peer_name, protocol_name, seed,
                                                                  folder)})
        logging.info("%s %s seed %d: MSE %s", protocol_name, label, seed, result["mse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for peer in PEERS.values():
        parser.add_argument(f"--{peer.name}", type=Path, help=f"a git checkout of {peer.repository} (at "
                            f"{peer.commit}); without it, its rows are those already scored")
    parser.add_argument("--scale", choices=tuple(SCALES), default="small")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: the scale's)")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOL_NAMES, default=list(PROTOCOL_NAMES))
    parser.add_argument("--work", type=Path, help="data, peers' runs and scores (default: benchmarks/work/long_horizon"
                        " for the small scale, long_horizon_<scale> for another)")
    parser.add_argument("--runs", type=Path, default=HERE / "work", help="the folder holding nbody_peers_<scale>/ and "
                        "frame_recipe/, whose checkpoints are read (default: benchmarks/work)")
    parser.add_argument("--data", type=Path, help="nbody_peers.py's data cache (default: "
                        "RUNS/nbody_peers_<scale>/data)")
    parser.add_argument("--models", nargs="+", choices=[model.key for model in HAMNET],
                        help="roll out only these hamnet models (default: all); the report keeps every score present")
    add_piece_arguments(parser)
    args, part, parts = start_pieces(parser)
    scale = SCALES[args.scale]
    if args.seeds:
        scale = dataclasses.replace(scale, seeds=tuple(args.seeds))
    work = args.work or HERE / "work" / ("long_horizon" if args.scale == "small" else f"long_horizon_{args.scale}")
    data = args.data or args.runs / f"nbody_peers_{scale.peers}" / "data"
    checkouts = {name: getattr(args, name) for name in PEERS if getattr(args, name) is not None}
    commits = {name: peer_commit(PEERS[name], checkout) for name, checkout in checkouts.items()}
    jobs = {} if args.report else plan_jobs(args.protocols, scale, args.runs, checkouts, args.models)
    truths = {protocol: truth_file(work, data, PROTOCOLS[protocol], scale) for protocol in args.protocols}
    if not args.report:
        codes = {}
        for name, checkout in checkouts.items():
            with claimed(work / "claims", f"extract_{name}", wait=True):
                codes[name] = (extract(PEERS[name], checkout, commits[name], work / "peers"), commits[name])
        for job in my_runs(list(jobs), part, parts, work / "claims"):
            run_job(jobs[job], work, scale, truths, codes, data, args.runs)
    report(args, scale, work, truths)


def report(args: argparse.Namespace, scale: Scale, work: Path, truths: dict[str, Path]) -> None:
    """The results files from the scores in the work folder of this scale's seeds, protocols and truth."""
    rows = [model.label for model in HAMNET] + [label for _, _, label in CHAINS]
    sha = {protocol: file_sha256(path) for protocol, path in truths.items()}
    scores = [json.loads(path.read_text()) for path in sorted((work / "scores").glob("*.json"))]
    scores = sorted((s for s in scores
                     if s["seed"] in scale.seeds and sha.get(s["protocol"]) == s["settings"]["truth_sha256"]),
                    key=lambda s: (rows.index(s["row"]), s["seed"]))
    references = {protocol: reference_rows(path, PROTOCOLS[protocol], scale) for protocol, path in truths.items()}
    commits = {s["peer"]: s["settings"]["commit"] for s in scores if "peer" in s}
    peer_models = {}
    for s in scores:  # one per trained model, though a model makes several chains
        key = (s.get("peer"), s["protocol"], s["seed"])
        if "peer" in s and key not in peer_models:
            folder = work / "peers" / "runs" / run_name(*key[:2], LINK, s["seed"])
            difference = reproduction(args.runs, scale, *key, folder)  # else as found when the chain was scored
            peer_models[key] = {"peer": s["peer"], "protocol": s["protocol"], "seed": s["seed"],
                                "position_mse": s["position_mse_at_link"], "best_epoch": s["best_epoch"],
                                "train_seconds": s["train_seconds"],
                                "difference": s.get("difference") if difference is None else difference}
    command = "python benchmarks/long_horizon.py --segno PATH --egnn PATH" + (
        f" --scale {args.scale}" if args.scale != "small" else "") + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
    table = summarise(scores)
    absent = {protocol: [f"{model.label}, seed {seed} (no finished run: `python "
                         f"{model.command.format(scale=scale.peers)}` makes it)"
                         for model in HAMNET for seed in scale.seeds if protocol in model.protocols
                         and not any(s["row"] == model.label and s["protocol"] == protocol and s["seed"] == seed
                                    for s in scores)]
              for protocol in truths}
    results = {"scale": args.scale, "settings": dataclasses.asdict(scale), "command": command, "commits": commits,
               "link_steps": LINK, "table": table, "references": references, "peer_models": list(peer_models.values()),
               "truth_sha256": sha, "absent": absent, "scores": scores}
    write_result_files(RESULTS / f"long_horizon_{args.scale}", results,
                       markdown(args.scale, scale, table, references, list(peer_models.values()), commits, command,
                                absent))


if __name__ == "__main__":
    run_script(main)
