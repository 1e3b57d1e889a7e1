"""``hamnet rollout`` and ``hamnet evaluate``: a trained model on a trajectory file, a rollout against truth.

Both check what they are given against what the files record (:mod:`hamnet.provenance`). A model is
rolled out or scored only on data of the kind it was trained on (system, protocol, dimension, particle
count, parameters, settings); ``--transfer`` overrides that for studies of transfer and the output
records it. ``evaluate`` takes ground truth only from a generated file (``--allow-rollout`` takes a
rollout file's healthy systems), never scores a model against its own output, and scores a rollout
file (``--rollout``) against a truth file at the rollout's horizon or a shorter one. What both write
records the checkpoint (its reference, sha256 and pretrained name) and data (path, sha256) they came
from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, locate_checkpoint, made_from, model_from_checkpoint
from .cli_common import (InputError, check_finite_positive, check_in_dtype, check_range, refuse_given,
                         true_system)
from .data import DEFAULT_CHUNK
from .evaluation import evaluate, score_rollout
from .io import Trajectories, load_trajectories, save_trajectories
from .models import check_compatible
from .paths import atomic_path, check_output, same_file
from .provenance import KIND_KEYS, diverged_steps, file_sha256, ground_truth, kind_differences, rollout_model
from .resources import check_memory
from .rollouts import Rollout, model_label, predicted_trajectories
from .training import DTYPES

__all__ = ["add_commands", "run_evaluate", "run_rollout"]

TRANSFER_HELP = ("use a checkpoint on data of another kind than it was trained on (another system, protocol, "
                 "dimension, particle count, parameters or settings), for studies of transfer; the differences "
                 "are recorded in the output")
ALLOW_ROLLOUT_HELP = ("accept a rollout file (a model's output) as the truth, without the systems that diverged in "
                      "it (default: refused; a model's output is not ground truth)")


SUBSTEPS_HELP = ("integration steps per step of the output (default: the model's training run's, recorded in its "
                 "checkpoint; 1 for a run without)")
COMPILE_HELP = ("compile the model's forces with torch.compile: each step the eager one to round-off (recorded in "
                "the output), faster on long rollouts once compiled (the first compilation takes tens of seconds)")


def add_commands(commands) -> None:
    """Register ``rollout`` and ``evaluate`` on an argparse subparsers object."""
    _add_rollout(commands)
    _add_evaluate(commands)


def _add_rollout(commands) -> None:
    parser = commands.add_parser(
        "rollout", help="roll a trained model out from a file's initial states",
        description="Integrate a trained model from the initial states of a trajectory file for a long horizon "
        "and write the predicted trajectories as a trajectory file (schema 1) naming the model in meta, with the "
        "sha256 of the checkpoint and the data.",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint from hamnet train (best.pt or last.pt), or a pretrained model's name "
                        "(pretrained:NAME is always the shipped one; a bare NAME is a local file where one exists)")
    parser.add_argument("--data", required=True, help="trajectory file whose initial states and parameters to use")
    parser.add_argument("--out", required=True, help="output .npz trajectory file (written atomically)")
    parser.add_argument("--steps", type=int, default=None, help="steps to roll out (default: as many as the data holds)")
    parser.add_argument("--dt", type=float, default=None, help="time step (default: the data's dt)")
    parser.add_argument("--method", default=None,
                        help="integrator: leapfrog, yoshida4, implicit_midpoint, gauss4, rk4, dopri5, ... "
                        "(default: leapfrog for separable models, else rk4)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="precision (default: float64)")
    parser.add_argument("--substeps", type=int, default=None, help=SUBSTEPS_HELP)
    parser.add_argument("--n-systems", type=int, default=None, help="roll out only the first n systems (default: all)")
    parser.add_argument("--max-iters", type=int, default=None,
                        help="implicit_midpoint and gauss4 only: fixed-point iterations allowed per step (default: 100)")
    parser.add_argument("--keep-diverged", action="store_true",
                        help="keep integrating a system whose state grows past a millionfold its start instead of "
                        "stopping with an error (for studies of divergence; a non-finite state still stops)")
    parser.add_argument("--transfer", action="store_true", help=TRANSFER_HELP)
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    parser.set_defaults(run=run_rollout)


def run_rollout(args: argparse.Namespace) -> None:
    check_range("--n-systems", args.n_systems, 1)
    check_range("--steps", args.steps, 1)
    check_range("--max-iters", args.max_iters, 1, 10**6)
    check_range("--substeps", args.substeps, 1, 10**4)
    check_finite_positive("--dt", args.dt)
    check_in_dtype("--dt", args.dt, args.dtype)
    model, state, data, sources = _model_and_data(args, ".npz", "a trajectory file")
    if args.n_systems is not None:
        data = data.select(slice(0, args.n_systems))
    steps = args.steps or data.n_times - 1
    # the trajectory, its float64 copy for the file, and the file's own buffer
    check_memory(3 * data.n_systems * (steps + 1) * data.z[0, 0].numel() * 8, f"a rollout of {steps} steps",
                 "use fewer --steps or --n-systems")
    options = {"max_iters": args.max_iters} if args.max_iters is not None else None
    predicted = predicted_trajectories(model, data, model_config=state["model_config"], steps=args.steps, dt=args.dt,
                                       method=args.method, dtype=DTYPES[args.dtype], options=options,
                                       keep_diverged=args.keep_diverged, sources=sources,
                                       substeps=args.substeps, region=_region(state), compile=args.compile)
    save_trajectories(args.out, predicted)
    meta = predicted.meta
    print(f"rolled out {meta['model']} with {meta['method']} for {meta['steps']} steps on "
          f"{data.n_systems} systems -> {args.out}")
    if meta["diverged"]:
        first = meta["diverged"][0]
        print(f"hamnet: warning: {len(meta['diverged'])} of {data.n_systems} systems diverged (the first, system "
              f"{first['system']}, at step {first['step']}); the others are delivered, and the file's meta "
              "'diverged' lists each with its step (its states from then on are held at the last healthy one)",
              file=sys.stderr)
    _warn_left_region(meta.get("left_region"), data.n_systems, "the file's meta 'left_region' lists each")


def _region(state: dict) -> dict | None:
    """The training region a checkpoint records (None for one of an earlier hamnet)."""
    record = state.get("data")
    return record.get("region") if isinstance(record, dict) else None


def _warn_left_region(left: list | None, n_systems: int, where: str) -> None:
    """One warning line when systems of a rollout left the model's training region."""
    if left:
        first = left[0]
        print(f"hamnet: warning: {len(left)} of {n_systems} systems left the model's training region (the first, "
              f"system {first['system']}, at step {first['step']}, with {first['what']}): its forces there are an "
              f"extrapolation; {where}", file=sys.stderr)


def _model_and_data(args: argparse.Namespace, suffix: str, what: str):
    """The model of ``--checkpoint``, its checkpoint, the data of ``--data`` and what an output records of
    both (:func:`hamnet.checkpoint.checkpoint_provenance`, the data's path and sha256, and ``transfer``
    with ``--transfer``), checked to fit together, once ``--out`` is known to leave both untouched."""
    source = locate_checkpoint(args.checkpoint)
    check_output(args.out, inputs=[args.data, source.path], suffixes=(suffix,), what=what)
    model, state = model_from_checkpoint(args.checkpoint)
    data = load_trajectories(args.data)
    check_compatible(model.config, data, args.data)
    return model, state, data, {**made_from(args.checkpoint, args.data), **_transfer(args, state, data)}


def _transfer(args: argparse.Namespace, state: dict, data: Trajectories) -> dict:
    """Refuse data of another kind than the checkpoint's training data, unless ``--transfer``; then the
    record of it that the output keeps. What a checkpoint does not record of the kind it was trained on
    (an earlier hamnet's) is unknown: a note on stderr names it, and it is not refused."""
    trained = state.get("data") if isinstance(state.get("data"), dict) else {}
    differences = kind_differences(trained, data)
    if differences and not args.transfer:
        raise InputError(f"{args.data} is not the kind of data {args.checkpoint} was trained on: "
                         f"{', '.join(differences)}; for a study of transfer pass --transfer (recorded in the output)")
    unrecorded = [key for key in KIND_KEYS if key not in trained]
    if unrecorded:
        print(f"note: {args.checkpoint} does not record the {', '.join(unrecorded)} of the data it was trained on "
              f"(an earlier hamnet's checkpoint); whether {args.data} is data of that kind is unknown there",
              file=sys.stderr)
    if not args.transfer:
        return {}
    return {"transfer": {"trained_on": {key: trained[key] for key in KIND_KEYS if key in trained},
                         "differences": differences}}


def _add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="score a trained model, or a rollout file, against a trajectory file",
        description="Window MSE, rollout error over time and momentum/energy drift of a trained model on a "
        "trajectory file, written as JSON; or, with --rollout, the rollout error, divergence and drift of a "
        "rollout file against the truth it started from.",
    )
    scored = parser.add_mutually_exclusive_group()
    scored.add_argument("--checkpoint", default=None, help="a checkpoint from hamnet train, or a pretrained name")
    scored.add_argument("--rollout", default=None, metavar="ROLLOUT.npz",
                        help="score this rollout file (from hamnet rollout) instead of a model, at its horizon or, "
                        "where --data is shorter, at the truth's")
    parser.add_argument("--data", required=True, help="trajectory file with the true trajectories")
    parser.add_argument("--out", required=True, help="output metrics .json (written atomically)")
    parser.add_argument("--method", default=None,
                        help="with --checkpoint: rollout integrator (default: leapfrog if separable, else rk4)")
    parser.add_argument("--substeps", type=int, default=None, help=f"with --checkpoint: {SUBSTEPS_HELP}")
    parser.add_argument("--steps", type=int, default=None,
                        help="with --rollout: score the first STEPS steps (default: as many as both files hold)")
    parser.add_argument("--true-system", default=None, metavar="SPEC",
                        help="the system whose true energy to measure, when the data file was made by your own "
                        "system class: path/to/file.py:ClassName, which must be the class that made the file "
                        "(hamnet never imports a file because a data file names it; default: the file's registered "
                        "system, or no true-energy drift)")
    parser.add_argument("--allow-rollout", action="store_true", help=ALLOW_ROLLOUT_HELP)
    parser.add_argument("--transfer", action="store_true", help=f"with --checkpoint: {TRANSFER_HELP}")
    parser.add_argument("--compile", action="store_true", help=f"with --checkpoint: {COMPILE_HELP}")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    if args.checkpoint is None and args.rollout is None:
        raise InputError("evaluate scores a model (--checkpoint) or a rollout file (--rollout) against --data; "
                         "give one of them")
    if args.rollout is not None:
        refuse_given(args, ("--method", "--transfer", "--substeps", "--compile"), "--method, --substeps, --transfer "
                     "and --compile concern a model (--checkpoint), not a rollout file")
        metrics = _score_rollout_file(args)
    else:
        refuse_given(args, ("--steps",), "--steps applies with --rollout; a model (--checkpoint) is scored over the "
                     "whole of --data")
        metrics = _score_model(args)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print(_summary(metrics, args.out))
    left = metrics.get("left_region")
    if left and left["count"]:
        _warn_left_region([{"system": b, "step": s, "what": w} for b, s, w in
                           zip(left["systems"], left["steps"], left["what"])], metrics["n_systems"],
                          "the metrics' 'left_region' lists each")
    for note in metrics.get("notes", []):
        print(f"note: {note}", file=sys.stderr)


def _score_model(args: argparse.Namespace) -> dict:
    """The metrics of ``--checkpoint``'s model on ``--data``."""
    check_range("--substeps", args.substeps, 1, 10**4)
    model, state, data, sources = _model_and_data(args, ".json", "a metrics file")
    _refuse_own_output(data, sources["checkpoint_sha256"], locate_checkpoint(args.checkpoint).path)
    truth, left_out = ground_truth(data, allow_rollout=args.allow_rollout, flag="--allow-rollout", use="ground truth")
    trained = state.get("train_config") or {}  # windows as the model was trained on: its chunk and integrator
    chunk, window_method = trained.get("chunk", DEFAULT_CHUNK), trained.get("method", "rk4")
    system = true_system(truth, args.true_system)
    return {"model": model_label(state["model_config"]), **sources, **_left_out(left_out),
            **evaluate(model, truth, chunk=chunk, method=args.method, system=system, window_method=window_method,
                       substeps=args.substeps, region=_region(state), compile=args.compile)}


def _refuse_own_output(data: Trajectories, checkpoint_sha256: str, checkpoint: Path | None) -> None:
    """Refuse truth that a rollout of the same checkpoint made: by the sha256 it records, or (a file of an
    earlier hamnet) by the checkpoint file it names, when ``checkpoint`` is known."""
    if rollout_model(data) is None or data.meta.get("checkpoint") is None:
        return
    recorded = data.meta.get("checkpoint_sha256")
    if recorded is not None:
        same = recorded == checkpoint_sha256
    else:
        try:
            same = checkpoint is not None and same_file(locate_checkpoint(data.meta["checkpoint"]).path, checkpoint)
        except CheckpointError:
            same = False
    if same:
        raise InputError(f"{data.source} is a rollout of this same model (checkpoint sha256 {checkpoint_sha256[:12]}"
                         "...); scoring a model against its own output measures nothing: score it against the "
                         "truth the rollout started from")


def _left_out(left_out: list[int]) -> dict:
    return {"truth_left_out": {"systems": left_out, "why": "diverged in the rollout file given as truth"}} \
        if left_out else {}


def _score_rollout_file(args: argparse.Namespace) -> dict:
    """The metrics of the rollout file ``--rollout`` against the truth ``--data`` it started from."""
    check_output(args.out, inputs=[args.rollout, args.data], suffixes=(".json",), what="a metrics file")
    check_range("--steps", args.steps, 1)
    rollout, truth = load_trajectories(args.rollout), load_trajectories(args.data)
    if rollout_model(rollout) is None:
        raise InputError(f"--rollout {args.rollout} is not a rollout file (its meta names no model); a generated file "
                         "is truth, not something to score")
    rollout_sha256, data_sha256 = file_sha256(args.rollout), file_sha256(args.data)
    if same_file(args.rollout, args.data) or rollout_sha256 == data_sha256:
        raise InputError(f"--rollout {args.rollout} and --data {args.data} are the same file; score a rollout against "
                         "the truth it started from")
    if rollout.meta.get("checkpoint_sha256") is not None:
        _refuse_own_output(truth, rollout.meta["checkpoint_sha256"], None)
    elif rollout.meta.get("checkpoint") is not None:
        print(f"note: --rollout {args.rollout} does not record its checkpoint's sha256 (an earlier hamnet's file); "
              "the checkpoint_sha256 recorded in the metrics is unknown (null)", file=sys.stderr)
    steps = _horizon(rollout, truth, args)
    _, left_out = ground_truth(truth, allow_rollout=args.allow_rollout, flag="--allow-rollout", use="ground truth")
    keep = [b for b in range(rollout.n_systems) if b not in set(left_out)]
    if not keep:
        raise InputError(f"every one of the {rollout.n_systems} systems of --rollout {args.rollout} diverged in "
                         f"{args.data}, a rollout file given as truth; nothing is left to score it against")
    truth = _first_steps(truth.select(keep), steps)
    diverged = diverged_steps(rollout)
    result = Rollout(rollout.z[keep, : steps + 1], torch.tensor(
        [diverged[b] if diverged.get(b, steps + 1) <= steps else -1 for b in keep], dtype=torch.int64))
    return {"model": rollout_model(rollout), "rollout": str(args.rollout), "rollout_sha256": rollout_sha256,
            **made_from(rollout.meta, args.data, data_sha256=data_sha256),
            **_left_out([b for b in left_out if b < rollout.n_systems]), "n_systems": len(keep), "steps": steps,
            "rollout_method": rollout.meta.get("method"),
            **_in_file_numbers(score_rollout(result, truth, system=true_system(truth, args.true_system),
                                             region=rollout.meta.get("region")), keep)}


def _in_file_numbers(scores: dict, keep: list[int]) -> dict:
    """``scores`` of the systems ``keep`` of a rollout file with the systems they list (diverged, left the
    training region) numbered as in the file, not by their place among the kept ones."""
    for key in ("divergence", "left_region"):
        if key in scores:
            scores[key]["systems"] = [keep[b] for b in scores[key]["systems"]]
    return scores


def _horizon(rollout: Trajectories, truth: Trajectories, args: argparse.Namespace) -> int:
    """The steps to score: ``--steps``, or as many as both files hold, once the rollout is shown to have
    started from ``truth``'s initial states (its first systems) with its dt."""
    where = f"--rollout {args.rollout}"
    if rollout.n_systems > truth.n_systems:
        raise InputError(f"{where} holds {rollout.n_systems} systems, {args.data} only {truth.n_systems}; score it "
                         "against the truth it started from")
    rollout_dt, truth_dt = float(rollout.meta["dt"]), float(truth.meta["dt"])
    if abs(rollout_dt - truth_dt) > 1e-9 * truth_dt:
        raise InputError(f"{where} steps by dt = {rollout_dt:g}, {args.data} by {truth_dt:g}; score it against truth "
                         "on its own time grid")
    shapes = {name: tuple(value.shape[1:]) for name, value in rollout.params.items()}
    if (rollout.dim, rollout.n_particles, shapes) != (truth.dim, truth.n_particles, {
            name: tuple(truth.params[name].shape[1:]) for name in shapes if name in truth.params}):
        raise InputError(f"{where} holds {rollout.n_particles} particles in {rollout.dim}D with parameters {shapes}, "
                         f"{args.data} {truth.n_particles} in {truth.dim}D with "
                         f"{ {name: tuple(value.shape[1:]) for name, value in truth.params.items()} }; score it "
                         "against the truth it started from")
    first = truth.select(slice(0, rollout.n_systems))
    same_start = torch.allclose(rollout.z[:, 0], first.z[:, 0], rtol=1e-6, atol=1e-12) and all(
        torch.allclose(value, first.params[name]) for name, value in rollout.params.items())
    if not same_start:
        raise InputError(f"{where} did not start from the initial states and parameters of {args.data}; score it "
                         "against the truth it started from")
    available = min(rollout.n_times, truth.n_times) - 1
    if args.steps is not None and args.steps > available:
        raise InputError(f"--steps {args.steps} is past what both files hold: the rollout {rollout.n_times - 1} steps, "
                         f"{args.data} {truth.n_times - 1}; give at most {available}")
    return available if args.steps is None else args.steps


def _first_steps(data: Trajectories, steps: int) -> Trajectories:
    """``data`` up to and including step ``steps``."""
    return Trajectories(data.t[: steps + 1], data.z[:, : steps + 1], data.params, data.meta, data.source)


def _summary(metrics: dict, out: str) -> str:
    """The one line ``evaluate`` prints of its metrics."""
    error, valid = metrics["rollout_error"], metrics["valid_prediction_time"]
    energy = metrics["drift"].get("energy")
    window = (f"window MSE {metrics['window_mse']:.4g} (paper convention {metrics['window_mse_with_initial']:.4g}), "
              if "window_mse" in metrics else f"rollout file over {metrics['steps']} steps: ")
    return (f"{metrics['model']}: {window}rollout error geometric mean {error['geometric_mean_over_time']:.3g}, "
            f"final {error['final']:.3g}; valid prediction time median {valid['median']:.3g} (error <= "
            f"{valid['threshold']:g}); diverged {len(metrics['divergence']['systems'])} of {metrics['n_systems']}"
            + (f", left the training region {metrics['left_region']['count']}" if "left_region" in metrics else "")
            + "; "
            f"max angular momentum drift {metrics['drift']['angular_momentum']['max']:.2e}"
            + (f", median true-energy drift {energy['median']:.2e}" if energy else "") + f" -> {out}")
