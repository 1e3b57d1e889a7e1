"""The ``hamnet`` command line: one console script, one subcommand per operation.

Every subcommand is a thin layer over a library function. Errors caused by input (bad flags, bad
files, impossible settings) end in one line on stderr, ``hamnet: error: ...``, exit status 1, and
no partially written output.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import time
from pathlib import Path


from . import cli_import, cli_rollout, cli_train, cli_visual
from .checkpoint import PRETRAINED_PREFIX, pretrained_models, resolve_checkpoint
from .cli_common import (InputError, Terminated, add_common_options, check_finite_positive,
                         check_range, check_seed, load_plugins, one_line_error, refuse_given, terminate_as_interrupt,
                         torch_threads)
from .demo import DemoSettings, format_table, run_demo as demo
from .io import load_trajectories, save_trajectories
from .paths import check_output
from .protocols import PROTOCOLS, generate_protocol
from .simulation import generate
from .systems import get_system_class
from .version import __version__

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def main(argv: list[str] | None = None) -> int:
    """Run one ``hamnet`` command; returns the exit status.

    Every failure ends here as one line on stderr, ``hamnet: error: ...``, and exit status 1 (see
    :func:`hamnet.cli_common.one_line_error`); a traceback only with ``--debug`` or ``HAMNET_DEBUG=1``.
    Ctrl-C exits 130 and SIGTERM 143, with files being written left as they were. Every command runs on
    ``--threads`` torch threads (:data:`hamnet.cli_common.DEFAULT_THREADS`, one, unless told otherwise),
    and gives the caller's count back.
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
            check_range("--threads", args.threads, 1, 4096)
            with torch_threads(args.threads):
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
    for add in (_add_generate, cli_import.add_commands, _add_info, cli_train.add_commands, cli_rollout.add_commands,
                cli_visual.add_commands, _add_demo, _add_pretrained):
        add(commands)
    for subcommand in commands.choices.values():
        add_common_options(subcommand)
    return parser


# -- generate --------------------------------------------------------------------------------------
def _add_system_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("system")
    group.add_argument("--system", default=None,
                       help="a built-in system (springs, nbody, charged, lennard-jones), one a --plugin registers, "
                       "or your own class as path/to/file.py:ClassName (default: springs)")
    group.add_argument("--n-particles", type=int, default=None,
                       help="particles per system, at least 2 (default: the system's own: 6 for springs and "
                       "lennard-jones, 5 for nbody and charged)")
    group.add_argument("--dim", type=int, default=None, choices=(2, 3), help="spatial dimensions (default: 2)")
    group.add_argument("--family", default=None,
                       help="nbody only: initial conditions, 'central' (light bodies orbiting a heavy one) or "
                       "'cluster' (a bound random cluster) (default: central)")
    group.add_argument("--softening", type=float, default=None,
                       help="nbody, charged and lennard-jones only: softening length of the potential, the same in "
                       "force and potential: eps of the 1/r law (default: 0.1), the core radius a of lennard-jones "
                       "(default: 0.5)")


def system_from_args(args: argparse.Namespace):
    """Build the system the flags describe; raises ValueError with a one-line reason."""
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
    parser.add_argument("--steps", type=int, default=None,
                        help="output steps per trajectory; each file holds steps + 1 states (default: 500)")
    parser.add_argument("--dt", type=float, default=None, help="time between output states, exact (default: 0.01)")
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
    benchmark.add_argument("--split", default=None, choices=("train", "valid", "test"),
                           help="with --protocol: which split, for its default size (default: train); give each "
                           "split its own --seed")
    parser.set_defaults(run=run_generate)


#: the flags a benchmark protocol decides; with --protocol each is refused if given at all, at any value
PROTOCOL_FIXES = ("--system", "--n-particles", "--dim", "--family", "--softening", "--steps", "--dt", "--substeps",
                  "--max-substeps")
#: what ``generate`` takes for the flags that default to None (so that a flag given can be told from one not given)
GENERATE_DEFAULTS = {"system": "springs", "dim": 2, "steps": 500, "dt": 0.01, "n_systems": 1000}


def run_generate(args: argparse.Namespace) -> None:
    if args.protocol is not None:
        return _generate_protocol(args)
    refuse_given(args, ("--split",), "--split applies only with --protocol (a benchmark set's split)")
    for name, default in GENERATE_DEFAULTS.items():
        setattr(args, name, default if getattr(args, name) is None else getattr(args, name))
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

    if args.protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {args.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    refuse_given(args, PROTOCOL_FIXES, f"--protocol {args.protocol} fixes the system, its steps and dt")
    args.split = args.split or "train"
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
    parser.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> None:
    loading = logging.getLogger("hamnet.io")  # its warnings are part of the summary printed here
    level = loading.level
    loading.setLevel(logging.ERROR)
    try:
        data = load_trajectories(args.file)
    finally:
        loading.setLevel(level)
    print(describe(data, args.file))


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
    lines += [f"  warning     {problem}" for problem in data.unphysical()]
    for key in sorted(set(meta) - {"system", "system_settings", "dt", "schema_version"}):
        value = meta[key]
        lines.append(f"  {key:<11} {value:.3g}" if isinstance(value, float) else f"  {key:<11} {value}")
    return "\n".join(lines)


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
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> None:

    check_seed(args.seed)
    out = Path(args.out)
    start = time.perf_counter()
    settings = DemoSettings.quick() if args.quick else DemoSettings()
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
