"""The ``hamnet`` command line: one console script, one subcommand per operation.

Every subcommand is a thin layer over a library function. Errors caused by input (bad flags, bad
files, impossible settings) end in one line on stderr, ``hamnet: error: ...``, exit status 1, and
no partially written output.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .io import TrajectoryFileError, load_trajectories, save_trajectories

EXIT_INPUT_ERROR = 1
EXIT_INTERRUPTED = 130


class InputError(ValueError):
    """An error in what the user asked for, reported as one line."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args) or 0
    except (ValueError, OSError, TrajectoryFileError) as error:
        print(f"hamnet: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("hamnet: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hamnet",
        description="Learn Hamiltonians of particle systems with Lie-group-equivariant networks and roll "
        "them out with symplectic integrators.",
    )
    parser.add_argument("--version", action="version", version=f"hamnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_generate, _add_info, _add_demo):
        add(commands)
    return parser


# -- generate --------------------------------------------------------------------------------------
def _add_system_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("system")
    group.add_argument("--system", default="springs",
                       help="a built-in system (springs, nbody) or your own class as path/to/file.py:ClassName "
                       "(default: springs)")
    group.add_argument("--n-particles", type=int, default=None,
                       help="particles per system, at least 2 (default: the system's own, 6 for springs, 5 for nbody)")
    group.add_argument("--dim", type=int, default=2, choices=(2, 3), help="spatial dimensions (default: 2)")
    group.add_argument("--family", default=None,
                       help="nbody only: initial conditions, 'central' (light bodies orbiting a heavy one) or "
                       "'cluster' (a bound random cluster) (default: central)")
    group.add_argument("--softening", type=float, default=None,
                       help="nbody only: gravitational softening length eps, the same in force and potential "
                       "(default: 0.1)")


def system_from_args(args: argparse.Namespace):
    """Build the system the flags describe; raises ValueError with a one-line reason."""
    from systems import NBody, get_system_class

    cls = get_system_class(args.system)
    settings = {"dim": args.dim}
    if args.n_particles is not None:
        settings["n_particles"] = args.n_particles
    for flag in ("family", "softening"):
        value = getattr(args, flag)
        if value is None:
            continue
        if not issubclass(cls, NBody):
            raise InputError(f"--{flag} applies only to the nbody system, not {args.system!r}")
        settings[flag] = value
    try:
        return cls(**settings)
    except TypeError as error:
        raise InputError(f"cannot build system {args.system!r} with {settings}: {error}") from error


def _add_generate(commands) -> None:
    parser = commands.add_parser(
        "generate", help="simulate ground-truth trajectories and write a trajectory file",
        description="Sample systems and initial states from a seed, integrate the true Hamiltonian accurately "
        "in float64 (eighth-order symplectic composition with sub-steps) and write a .npz trajectory file.",
    )
    _add_system_options(parser)
    parser.add_argument("--n-systems", type=int, default=1000, help="number of independent systems (default: 1000)")
    parser.add_argument("--steps", type=int, default=500,
                        help="output steps per trajectory; each file holds steps + 1 states (default: 500)")
    parser.add_argument("--dt", type=float, default=0.01, help="time between output states, exact (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same file (default: 0)")
    parser.add_argument("--out", required=True, help="output .npz file (written atomically)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> None:
    from .simulate import generate

    if args.n_systems < 1:
        raise InputError(f"--n-systems must be at least 1, got {args.n_systems}")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if not args.dt > 0 or args.dt == float("inf"):
        raise InputError(f"--dt must be a positive number, got {args.dt}")
    check_writable(args.out)
    system = system_from_args(args)
    start = time.perf_counter()
    data = generate(system, n_systems=args.n_systems, steps=args.steps, dt=args.dt, seed=args.seed,
                    system_spec=args.system, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    save_trajectories(args.out, data)
    print(describe(data, args.out))
    print(f"generated in {elapsed:.1f} s ({args.n_systems / elapsed:,.0f} systems/s)")


def check_writable(path: str) -> None:
    """Fail early, before any work, when ``path`` cannot be written."""
    import os

    folder = Path(path).parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write {path}: folder {folder} is not writable")
    if Path(path).is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name")


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


# -- demo ------------------------------------------------------------------------------------------
def _add_demo(commands) -> None:
    parser = commands.add_parser("demo", help="the end-to-end demonstration run by `make demo`",
                                 description="Generate a small springs dataset and summarise it.")
    parser.add_argument("--out", default="demo-output", help="folder for the demo's files (default: demo-output)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> None:
    from systems import Springs

    from .simulate import generate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = generate(Springs(), n_systems=200, steps=500, dt=0.01, seed=args.seed, progress=True)
    save_trajectories(out / "springs.npz", data)
    print(describe(data, str(out / "springs.npz")))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
