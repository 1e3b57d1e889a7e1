"""The ``hamnet`` command line: one console script, one subcommand per operation.

Every subcommand is a thin layer over a library function. Errors caused by input (bad flags, bad
files, impossible settings) end in one line on stderr, ``hamnet: error: ...``, exit status 1, and
no partially written output.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch

from .cli_common import (InputError, Terminated, add_common_options, check_finite_positive, check_model_memory,
                         check_range, check_seed, load_plugins, one_line_error, terminate_as_interrupt,
                         torch_threads, true_system)
from .cli_visual import add_commands as _add_visual
from .io import load_trajectories, save_trajectories
from .paths import check_output
from .resources import check_memory
from .version import __version__

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def main(argv: list[str] | None = None) -> int:
    """Run one ``hamnet`` command; returns the exit status.

    Every failure ends here as one line on stderr, ``hamnet: error: ...``, and exit status 1 (see
    :func:`hamnet.cli_common.one_line_error`); a traceback only with ``--debug`` or ``HAMNET_DEBUG=1``.
    Ctrl-C exits 130 and SIGTERM 143, with files being written left as they were.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except InputError as error:
        print(f"hamnet: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its writers log every ffmpeg command line
    debug = args.debug or os.environ.get("HAMNET_DEBUG", "") not in ("", "0")
    try:
        with terminate_as_interrupt():
            load_plugins(args.plugin)
            return args.run(args) or 0
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        print(f"hamnet: {'terminated' if terminated else 'interrupted'}; files being written were not replaced",
              file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except (Exception, SystemExit) as error:
        if debug:
            raise
        print(f"hamnet: error: {one_line_error(error)}", file=sys.stderr)
        return EXIT_ERROR


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 1 like every other bad input (its own
    behaviour prints the usage block and exits 2)."""

    def error(self, message: str):
        raise InputError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hamnet",
        description="Learn Hamiltonians of particle systems with Lie-group-equivariant networks and roll "
        "them out with symplectic integrators.",
    )
    parser.add_argument("--version", action="version", version=f"hamnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_generate, _add_info, _add_train, _add_rollout, _add_evaluate, _add_visual, _add_demo,
                _add_pretrained):
        add(commands)
    for subcommand in commands.choices.values():
        add_common_options(subcommand)
    return parser


# -- generate --------------------------------------------------------------------------------------
def _add_system_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("system")
    group.add_argument("--system", default="springs",
                       help="a built-in system (springs, nbody, charged), one a --plugin registers, or your own "
                       "class as path/to/file.py:ClassName (default: springs)")
    group.add_argument("--n-particles", type=int, default=None,
                       help="particles per system, at least 2 (default: the system's own: 6 for springs, 5 for "
                       "nbody and charged)")
    group.add_argument("--dim", type=int, default=2, choices=(2, 3), help="spatial dimensions (default: 2)")
    group.add_argument("--family", default=None,
                       help="nbody only: initial conditions, 'central' (light bodies orbiting a heavy one) or "
                       "'cluster' (a bound random cluster) (default: central)")
    group.add_argument("--softening", type=float, default=None,
                       help="nbody and charged only: softening length eps of the 1/r potential, the same in force "
                       "and potential (default: 0.1)")


def system_from_args(args: argparse.Namespace):
    """Build the system the flags describe; raises ValueError with a one-line reason."""
    from .systems import get_system_class

    cls = get_system_class(args.system)
    settings = {"dim": args.dim}
    if args.n_particles is not None:
        settings["n_particles"] = args.n_particles
    accepted = inspect.signature(cls).parameters
    for flag in ("family", "softening"):
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in accepted:
            raise InputError(f"--{flag} does not apply to the system {args.system!r} (it has no {flag!r} setting)")
        settings[flag] = value
    try:
        return cls(**settings)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # a built-in's TypeError or ValueError, or anything from a user's class
        raise InputError(f"cannot build system {args.system!r} with {settings}: {type(error).__name__}: "
                         f"{error}") from error


def _add_generate(commands) -> None:
    parser = commands.add_parser(
        "generate", help="simulate ground-truth trajectories and write a trajectory file",
        description="Sample systems and initial states from a seed, integrate the true Hamiltonian accurately "
        "in float64 (eighth-order symplectic composition with sub-steps) and write a .npz trajectory file.",
    )
    _add_system_options(parser)
    parser.add_argument("--n-systems", type=int, default=None,
                        help="number of independent systems (default: 1000, or the split's size with --protocol)")
    parser.add_argument("--steps", type=int, default=500,
                        help="output steps per trajectory; each file holds steps + 1 states (default: 500)")
    parser.add_argument("--dt", type=float, default=0.01, help="time between output states, exact (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same file (default: 0)")
    parser.add_argument("--substeps", type=int, default=None,
                        help="integrator sub-steps per output step (default: chosen per system from its fastest "
                        "dynamical time; needed for your own system if it has no timescale)")
    parser.add_argument("--max-substeps", type=int, default=None,
                        help="largest number of sub-steps per output step allowed before hamnet refuses a setting "
                        "as too costly (default: hamnet.simulation.MAX_SUBSTEPS)")
    parser.add_argument("--out", required=True, help="output .npz file (written atomically)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    benchmark = parser.add_argument_group("benchmark protocols")
    benchmark.add_argument("--protocol", default=None,
                           help="generate an N-body benchmark set of the equivariant-GNN papers on its own protocol "
                           "instead: egnn-charged5, segnn-gravity100 or segno-gravity5 (hamnet.protocols; it fixes "
                           "the system, the integrator and the frames)")
    benchmark.add_argument("--split", default="train", choices=("train", "valid", "test"),
                           help="with --protocol: which split, for its default size (default: train); give each "
                           "split its own --seed")
    # the flags a benchmark protocol decides, with their defaults (a protocol refuses any that was changed)
    fixed = ("system", "n_particles", "dim", "family", "softening", "steps", "dt", "substeps", "max_substeps")
    parser.set_defaults(run=run_generate, protocol_fixes={name: parser.get_default(name) for name in fixed})


def run_generate(args: argparse.Namespace) -> None:
    if args.protocol is not None:
        return _generate_protocol(args)
    if args.split != "train":
        raise InputError(f"--split {args.split} applies only with --protocol (a benchmark set's split)")
    from .simulation import generate

    args.n_systems = 1000 if args.n_systems is None else args.n_systems
    check_range("--n-systems", args.n_systems, 1)
    check_range("--steps", args.steps, 1)
    check_finite_positive("--dt", args.dt)
    check_seed(args.seed)
    check_output(args.out, inputs=[_system_file(args.system)], suffixes=(".npz",), what="a trajectory file")
    system = system_from_args(args)
    start = time.perf_counter()
    data = _user_code(args.system, "while generating", lambda: generate(
        system, n_systems=args.n_systems, steps=args.steps, dt=args.dt, seed=args.seed, system_spec=args.system,
        progress=not args.quiet, **_substep_settings(args)))
    _write_generated(data, args.out, start)


def _generate_protocol(args: argparse.Namespace) -> None:
    from .protocols import PROTOCOLS, generate_protocol

    if args.protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {args.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    fixed = [f"--{name.replace('_', '-')}" for name, default in args.protocol_fixes.items()
             if getattr(args, name) != default]
    if fixed:
        raise InputError(f"--protocol {args.protocol} fixes the system, its steps and dt; drop {', '.join(fixed)}")
    if args.n_systems is not None:
        check_range("--n-systems", args.n_systems, 1)
    check_seed(args.seed)
    check_output(args.out, inputs=[], suffixes=(".npz",), what="a trajectory file")
    start = time.perf_counter()
    data = generate_protocol(args.protocol, args.split, args.n_systems, seed=args.seed, progress=not args.quiet)
    _write_generated(data, args.out, start)


def _write_generated(data, out: str, start: float) -> None:
    """Save what ``generate`` made (atomically), describe it and say how long it took since ``start``."""
    elapsed = time.perf_counter() - start
    save_trajectories(out, data)
    print(describe(data, out))
    print(f"generated in {elapsed:.1f} s ({data.n_systems / elapsed:,.0f} systems/s)")


def _substep_settings(args: argparse.Namespace) -> dict:
    check_range("--substeps", args.substeps, 1)
    check_range("--max-substeps", args.max_substeps, 1)
    settings = {"substeps": args.substeps}
    if args.max_substeps is not None:
        settings["max_substeps"] = args.max_substeps
    return settings


def _system_file(spec: str) -> str | None:
    """The file of a ``path.py:Class`` system spec (an input that no output may overwrite), else None."""
    return spec.rsplit(":", 1)[0] if ":" in spec else None


def _user_code(spec: str, doing: str, work):
    """``work()``, with any failure of a user's own system class (loaded from a file) as one line."""
    try:
        return work()
    except (ValueError, OSError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # a user's system class can fail in any way; say so in one line
        if _system_file(spec) is None:
            raise
        raise InputError(f"system {spec!r} failed {doing}: {type(error).__name__}: {error}") from error


# -- info ------------------------------------------------------------------------------------------
def _add_info(commands) -> None:
    parser = commands.add_parser("info", help="print what a trajectory file holds",
                                 description="Validate a trajectory file and print its contents: shapes, "
                                 "system, parameters, integrator and measured conservation errors.")
    parser.add_argument("file", help="a .npz trajectory file")
    parser.set_defaults(run=lambda args: print(describe(load_trajectories(args.file), args.file)))


def describe(data, path: str) -> str:
    """A short human-readable summary of a :class:`~hamnet.io.Trajectories`."""
    meta = data.meta
    lines = [
        f"{path}",
        f"  system      {meta['system']} {meta['system_settings']}",
        f"  shape       z {tuple(data.z.shape)}: {data.n_systems} systems x {data.n_times} times x "
        f"(q, p) x {data.n_particles} particles x {data.dim} dims",
        f"  time        t = 0 .. {float(data.t[-1]):g}, dt = {meta['dt']:g}",
    ]
    for name, value in sorted(data.params.items()):
        lines.append(f"  param {name:<5} shape {tuple(value.shape)}, range [{float(value.min()):.4g}, {float(value.max()):.4g}]")
    for key in sorted(set(meta) - {"system", "system_settings", "dt", "schema_version"}):
        value = meta[key]
        lines.append(f"  {key:<11} {value:.3g}" if isinstance(value, float) else f"  {key:<11} {value}")
    return "\n".join(lines)


# -- train / rollout / evaluate -------------------------------------------------------------------
def _add_train(commands) -> None:
    from .models import MODELS, ModelConfig
    from .training import TrainConfig

    parser = commands.add_parser(
        "train", help="train a model on a trajectory file",
        description="Train a learned Hamiltonian (or the FC-NODE baseline) on windows of a trajectory file, "
        "integrating it over each window and minimising the squared error. Writes RUN_DIR/config.json, "
        "metrics.jsonl, last.pt and best.pt. Under `torchrun --nproc_per_node=K` the same command trains with "
        "DistributedDataParallel.",
    )
    parser.add_argument("--data", required=True, help="training trajectory file (.npz from hamnet generate)")
    parser.add_argument("--out", required=True, help="run folder to create (or to continue, with --resume)")
    model, m = parser.add_argument_group("model"), ModelConfig
    model.add_argument("--model", default=m.name, help=f"one of {', '.join(MODELS)} or one a --plugin registers "
                       f"(default: {m.name})")
    model.add_argument("--group", default=None,
                       help="hlieconv only: symmetry group, one of Trivial, T2, T3, SO2, SE2, SO3, SE3 or one a "
                       "--plugin registers (default: translations of the data's dimension, T2 or T3)")
    model.add_argument("--width", type=int, default=m.width, help=f"hidden width (default: {m.width})")
    model.add_argument("--depth", type=int, default=m.depth,
                       help=f"hidden layers / residual blocks (default: {m.depth})")
    model.add_argument("--neighbours", type=int, default=m.neighbours,
                       help="hlieconv only: k nearest neighbours in group distance (default: all particles)")
    model.add_argument("--lift", default=m.lift, choices=("exact", "monte-carlo"),
                       help="hlieconv only: 'exact' (one lift per point, kernel inputs invariant under the stabilizer: "
                       "invariant to round-off) or 'monte-carlo' (the paper's sampled lift, invariant in "
                       "distribution) (default: exact)")
    model.add_argument("--lift-samples", type=int, default=m.lift_samples,
                       help="hlieconv only, with --lift monte-carlo: lift samples per point (default: the group's)")
    model.add_argument("--kernel-bound", default="auto", metavar="auto|none|C",
                       help="hlieconv only: kernel inputs pass through C tanh(x / C), so the learned potential is "
                       "bounded far from the data and a rollout that leaves the data cannot run away; 'auto' sets C "
                       f"to {TrainConfig.kernel_bound_factor:g} times the largest kernel input in the training windows, "
                       "'none' leaves the kernel unbounded (default: auto)")
    opt, t = parser.add_argument_group("optimisation"), TrainConfig
    opt.add_argument("--epochs", type=int, default=t.epochs, help=f"epochs over the training windows (default: {t.epochs})")
    opt.add_argument("--batch-size", type=int, default=t.batch_size,
                     help=f"windows per global batch (default: {t.batch_size})")
    opt.add_argument("--lr", type=float, default=t.lr,
                     help=f"Adam learning rate, decayed by a cosine (default: {t.lr:g})")
    opt.add_argument("--weight-decay", type=float, default=t.weight_decay,
                     help=f"Adam weight decay (default: {t.weight_decay:g})")
    opt.add_argument("--chunk", type=int, default=t.chunk,
                     help=f"states per training window: the initial one and chunk - 1 targets (default: {t.chunk})")
    opt.add_argument("--method", default=t.method,
                     help="fixed-step integrator over each window (default: auto, the one the model's rollouts use: "
                     "leapfrog for separable Hamiltonians, rk4 otherwise); see docs/integrators.md")
    opt.add_argument("--dtype", default=t.dtype, choices=("float32", "float64"),
                     help=f"training precision (default: {t.dtype})")
    opt.add_argument("--seed", type=int, default=t.seed, help=f"seed of weights, split and shuffling (default: {t.seed})")
    opt.add_argument("--validation", type=float, default=t.validation,
                     help=f"fraction of systems for validation (default: {t.validation:g})")
    opt.add_argument("--test", type=float, default=t.test,
                     help=f"fraction of systems held out for testing (default: {t.test:g})")
    opt.add_argument("--max-windows", type=int, default=t.max_windows,
                     help="train on a seeded subset of this many windows (default: every window of the training systems)")
    opt.add_argument("--init-from", default=t.init_from,
                     help="start from this checkpoint's weights (a path or a pretrained name; the same model settings), "
                     "e.g. to finish a run with longer --chunk windows (default: fresh weights)")
    run = parser.add_argument_group("run")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    run.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_train)


def train_config_from_args(args: argparse.Namespace, data) -> "TrainConfig":
    from .models import MODELS, ModelConfig
    from .training import TrainConfig

    factor, kernel_bound = _kernel_bound(args.kernel_bound, MODELS.get(args.model).uses_group)
    per_particle = sorted(k for k, v in data.params.items() if v.dim() == 2)
    feature_keys = tuple(["m"] + [k for k in per_particle if k != "m"])
    model = ModelConfig(name=args.model, n_particles=data.n_particles, dim=data.dim, feature_keys=feature_keys,
                        width=args.width, depth=args.depth, group=args.group, neighbours=args.neighbours,
                        lift_samples=args.lift_samples, lift=args.lift, kernel_bound=kernel_bound)
    return TrainConfig(model=model, kernel_bound_factor=factor, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, chunk=args.chunk, method=args.method, dtype=args.dtype,
                       seed=args.seed, validation=args.validation, test=args.test, max_windows=args.max_windows,
                       init_from=args.init_from)


def _kernel_bound(value: str, has_kernel: bool) -> tuple[float | None, float | None]:
    """``--kernel-bound`` as ``(TrainConfig.kernel_bound_factor, ModelConfig.kernel_bound)``."""
    from .training import TrainConfig

    if value == "auto":
        return (TrainConfig.kernel_bound_factor if has_kernel else None), None
    if value == "none":
        return None, None
    try:
        bound = float(value)
    except ValueError:
        bound = math.nan
    if not (math.isfinite(bound) and bound > 0):
        raise InputError(f"--kernel-bound must be auto, none or a positive number, got {value!r}")
    return None, bound


#: flags of `hamnet train` and their valid ranges, checked before anything is read (a config's own check
#: would name the field, not the flag)
TRAIN_RANGES = (("--epochs", 1, None), ("--batch-size", 1, None), ("--lr", 1e-300, 1e300),
                ("--weight-decay", 0, 1e300), ("--chunk", 2, None), ("--validation", 0, 0.99), ("--test", 0, 0.99),
                ("--max-windows", 1, None), ("--width", 1, None), ("--depth", 1, 1000), ("--neighbours", 1, None),
                ("--lift-samples", 1, 10**4))


def run_train(args: argparse.Namespace) -> None:
    check_range("--threads", args.threads, 1, 4096)
    with torch_threads(args.threads):
        _train(args)


def _train(args: argparse.Namespace) -> None:
    from .models import MODELS
    from .training import train

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: this machine has no CUDA device; use --device cpu")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise InputError(f"--device must be cpu or cuda, got {args.device!r}")
    check_seed(args.seed)
    for flag, low, high in TRAIN_RANGES:
        check_range(flag, getattr(args, flag[2:].replace("-", "_")), low, high)
    MODELS.get(args.model)  # an unknown model fails before the data is read
    _kernel_bound(args.kernel_bound, True)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a file; give a run folder to create (or to continue with --resume)")
    data = load_trajectories(args.data)
    config = train_config_from_args(args, data)  # an unknown group or integrator fails here, before any write
    check_model_memory(config.model, config.dtype)
    metrics = train(config, args.data, args.out, resume=args.resume, device=args.device, progress=not args.quiet)
    if metrics and os.environ.get("RANK", "0") == "0":  # one report, not one per torchrun process
        print(f"trained {config.model.name} to epoch {metrics['epoch']}: train loss {metrics['train_loss']:.4g}, "
              f"validation MSE {metrics['validation_mse']:.4g}; run in {args.out}")


def _model_and_data(args: argparse.Namespace, suffix: str, what: str):
    """The checkpoint's model, the checkpoint and the data of ``--checkpoint`` / ``--data``, checked to fit
    together, after making sure ``--out`` can be written without touching either."""
    from .checkpoint import model_from_checkpoint, resolve_checkpoint
    from .models import check_compatible

    check_output(args.out, inputs=[args.data, resolve_checkpoint(args.checkpoint)], suffixes=(suffix,), what=what)
    model, state = model_from_checkpoint(args.checkpoint)
    data = load_trajectories(args.data)
    check_compatible(model.config, data, args.data)
    return model, state, data


def _add_rollout(commands) -> None:
    parser = commands.add_parser(
        "rollout", help="roll a trained model out from a file's initial states",
        description="Integrate a trained model from the initial states of a trajectory file for a long horizon "
        "and write the predicted trajectories as a trajectory file (schema 1) naming the model in meta.",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint from hamnet train (best.pt or last.pt)")
    parser.add_argument("--data", required=True, help="trajectory file whose initial states and parameters to use")
    parser.add_argument("--out", required=True, help="output .npz trajectory file (written atomically)")
    parser.add_argument("--steps", type=int, default=None, help="steps to roll out (default: as many as the data holds)")
    parser.add_argument("--dt", type=float, default=None, help="time step (default: the data's dt)")
    parser.add_argument("--method", default=None,
                        help="integrator: leapfrog, yoshida4, implicit_midpoint, gauss4, rk4, dopri5, ... "
                        "(default: leapfrog for separable models, else rk4)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="precision (default: float64)")
    parser.add_argument("--n-systems", type=int, default=None, help="roll out only the first n systems (default: all)")
    parser.add_argument("--max-iters", type=int, default=None,
                        help="implicit_midpoint and gauss4 only: fixed-point iterations allowed per step (default: 100)")
    parser.add_argument("--keep-diverged", action="store_true",
                        help="keep integrating a system whose state grows past a millionfold its start instead of "
                        "stopping with an error (for studies of divergence; a non-finite state still stops)")
    parser.set_defaults(run=run_rollout)


def run_rollout(args: argparse.Namespace) -> None:
    from .rollouts import predicted_trajectories
    from .training import DTYPES

    check_range("--n-systems", args.n_systems, 1)
    check_range("--steps", args.steps, 1)
    check_range("--max-iters", args.max_iters, 1, 10**6)
    check_finite_positive("--dt", args.dt)
    model, state, data = _model_and_data(args, ".npz", "a trajectory file")
    if args.n_systems is not None:
        data = data.select(slice(0, args.n_systems))
    steps = args.steps or data.n_times - 1
    # the trajectory, its float64 copy for the file, and the file's own buffer
    check_memory(3 * data.n_systems * (steps + 1) * data.z[0, 0].numel() * 8, f"a rollout of {steps} steps",
                 "use fewer --steps or --n-systems")
    options = {"max_iters": args.max_iters} if args.max_iters is not None else None
    predicted = predicted_trajectories(model, data, model_config=state["model_config"], steps=args.steps, dt=args.dt,
                                       method=args.method, dtype=DTYPES[args.dtype], checkpoint=str(args.checkpoint),
                                       options=options, keep_diverged=args.keep_diverged)
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


def _add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="score a trained model against a trajectory file",
        description="Window MSE, rollout error over time and momentum/energy drift of a trained model on a "
        "trajectory file, written as JSON.",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint from hamnet train")
    parser.add_argument("--data", required=True, help="trajectory file with the true trajectories")
    parser.add_argument("--out", required=True, help="output metrics .json (written atomically)")
    parser.add_argument("--method", default=None, help="rollout integrator (default: leapfrog if separable, else rk4)")
    parser.add_argument("--true-system", default=None, metavar="SPEC",
                        help="the system whose true energy to measure, when the data file was made by your own "
                        "system class: path/to/file.py:ClassName (hamnet never imports a file because a data file "
                        "names it; default: the file's registered system, or no true-energy drift)")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    import json

    from .data import DEFAULT_CHUNK
    from .evaluation import evaluate
    from .io import atomic_path
    from .rollouts import model_label

    model, state, data = _model_and_data(args, ".json", "a metrics file")
    trained = state.get("train_config") or {}  # windows as the model was trained on: its chunk and integrator
    chunk, window_method = trained.get("chunk", DEFAULT_CHUNK), trained.get("method", "rk4")
    system = true_system(data, args.true_system)
    metrics = {"model": model_label(state["model_config"]), "checkpoint": str(args.checkpoint),
               "data": str(args.data), **evaluate(model, data, chunk=chunk, method=args.method, system=system,
                                                  window_method=window_method)}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    error, valid = metrics["rollout_error"], metrics["valid_prediction_time"]
    energy = metrics["drift"].get("energy")
    print(f"{metrics['model']}: window MSE {metrics['window_mse']:.4g} "
          f"(paper convention {metrics['window_mse_with_initial']:.4g}), rollout error geometric mean "
          f"{error['geometric_mean_over_time']:.3g}, final {error['final']:.3g}; valid prediction time median "
          f"{valid['median']:.3g} (error <= {valid['threshold']:g}); diverged {len(metrics['divergence']['systems'])} "
          f"of {metrics['n_systems']}; max angular momentum drift {metrics['drift']['angular_momentum']['max']:.2e}"
          + (f", median true-energy drift {energy['median']:.2e}" if energy else "") + f" -> {args.out}")
    for note in metrics.get("notes", []):
        print(f"note: {note}", file=sys.stderr)


# -- demo ------------------------------------------------------------------------------------------
def _add_demo(commands) -> None:
    parser = commands.add_parser(
        "demo", help="the end-to-end demonstration run by `make demo`",
        description="Generate springs, train HLieConv SO(2) and the FC-NODE baseline briefly, roll both out for "
        "2000 steps (leapfrog and rk4), write conservation.png, error.png and springs-hlieconv.gif, and print a "
        "table. About a minute on a 2-core machine.",
    )
    parser.add_argument("--out", default="demo-output", help="folder for the demo's files (default: demo-output)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--quick", action="store_true", help="a tiny version in seconds (for tests)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    # One thread by default, measured with `time hamnet demo --quiet` on 2 cores: idle, 61 s on one thread against
    # 57 s on torch's default two; with two other processes on the cores, 105 s against 191 s (two threads
    # spin-wait for each other). The demo's networks are too small to gain from a second thread.
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default: 1; the demo's small networks gain little from more, and "
                        "lose much when other work shares the cores)")
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> None:
    from .demo import DemoSettings, format_table, run_demo as demo

    check_seed(args.seed)
    check_range("--threads", args.threads, 1, 4096)
    out = Path(args.out)
    start = time.perf_counter()
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    with torch_threads(args.threads):
        table = demo(out, seed=args.seed, settings=settings, progress=not args.quiet)
    print(format_table(table))
    print(f"\nrelative changes are maxima over {settings.test_systems} test systems and "
          f"{settings.rollout_steps} steps; rollout error is |a-b|/(|a|+|b|), 0 perfect, 1 unrelated; VPT is the "
          "median time until that error first passes 0.1 (valid prediction time)")
    print(f"files in {out}/: conservation.png, error.png, springs-hlieconv.gif (and springs-pretrained.gif), "
          "rollout-*.npz, runs/, summary.json")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")


# -- pretrained ------------------------------------------------------------------------------------
def _add_pretrained(commands) -> None:
    parser = commands.add_parser(
        "pretrained", help="list the pretrained models shipped with hamnet",
        description="List the pretrained models shipped with hamnet, with the summary of each model card. Use "
        "one by name wherever a checkpoint is asked for: hamnet rollout --checkpoint springs-so2 ... (or "
        "pretrained:springs-so2; in Python, hamnet.model_from_checkpoint(\"springs-so2\")).",
    )
    parser.add_argument("name", nargs="?", default=None, help="print this model's whole card")
    parser.set_defaults(run=run_pretrained)


def run_pretrained(args: argparse.Namespace) -> None:
    from .checkpoint import PRETRAINED_PREFIX, pretrained_models, resolve_checkpoint

    if args.name is not None:
        card = resolve_checkpoint(PRETRAINED_PREFIX + args.name.removeprefix(PRETRAINED_PREFIX)).with_suffix(".md")
        print(card.read_text().rstrip() if card.exists() else f"{args.name}: no model card")
        return
    for name, path in pretrained_models().items():
        card = path.with_suffix(".md")
        lines = card.read_text().splitlines() if card.exists() else ["(no model card)"]
        print(f"{name:<16} {next((line for line in lines if line and not line.startswith('#')), '')}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
