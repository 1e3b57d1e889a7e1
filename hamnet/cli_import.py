"""``hamnet import``: another simulator's trajectories as a hamnet trajectory file.

A thin layer over :func:`hamnet.readers.import_trajectories`: flags name the arrays, the output is checked
before anything is read (never one of the inputs; an existing file is replaced atomically, as by
``hamnet generate``), every problem is one line, and what was converted is said in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import InputError, check_finite_positive
from .conversion import IMPORTED_SYSTEM
from .io import save_trajectories
from .paths import check_output
from .readers import import_trajectories

__all__ = ["add_commands", "run_import"]


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "import", help="turn another simulator's trajectories into a trajectory file",
        description="Read positions and momenta (or velocities and masses) of another simulator, (B, T, N, D) or "
        "(T, N, D), float32 or float64, check everything at once and write a hamnet trajectory file (float64). "
        "An .npz whose arrays carry the usual names (positions/q, momenta/p, velocities/v, masses/m, t/time, "
        "dt) needs no flags; a .npy file is the positions, with the rest from further .npy files; any other "
        "file is read through ASE (pip install 'hamnet[ase]'): extended XYZ, .traj and the trajectory formats "
        "ASE reads, one file per system. Evenly spaced times give dt (to float32 round-off).")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="one .npz or .npy file, or one or more files ASE reads (one system each, in order)")
    parser.add_argument("--out", required=True,
                        help="output .npz trajectory file (written atomically; an existing file is replaced, an "
                        "input never)")
    arrays = parser.add_argument_group("arrays (a key of the .npz, or for a .npy input another .npy file)")
    for name, what in (("positions", "positions (default: positions or q)"),
                       ("momenta", "momenta p = m v (default: momenta or p)"),
                       ("velocities", "velocities, multiplied by the masses (default: velocities or v)"),
                       ("t", "times, evenly spaced (default: t or time)")):
        arrays.add_argument(f"--{name}", default=None, metavar="KEY", help=f"the array of the {what}")
    arrays.add_argument("--masses", default=None, metavar="KEY|NUMBER",
                        help="the array of the masses, (N,) or (B, N) (default: masses or m), or one number for "
                        "every particle; for an ASE file a number, overriding the masses it stores")
    arrays.add_argument("--param", action="append", default=[], metavar="NAME[=KEY]",
                        help="keep a per-particle parameter (a number, (N,) or (B, N)) under NAME, from the array "
                        "KEY (default: NAME); for an ASE file a per-atom array such as charges; repeatable")
    parser.add_argument("--dt", type=float, default=None,
                        help="the time between frames, exact (default: inferred from the times, or the .npz's dt)")
    parser.add_argument("--system", default=None,
                        help=f"a name for the system in the file's meta (default: {IMPORTED_SYSTEM}); a registered "
                        "system's name lets commands measure its true energy")
    ase = parser.add_argument_group("files read through ASE")
    ase.add_argument("--element-masses", action="store_true",
                     help="for a file that stores no masses: ASE's standard masses of its elements")
    ase.add_argument("--format", default=None,
                     help="ASE's name of the format, where the suffix does not tell it (e.g. extxyz, traj, "
                     "lammps-dump-text)")
    parser.set_defaults(run=run_import)


def run_import(args: argparse.Namespace) -> None:
    check_finite_positive("--dt", args.dt)
    params = _params(args.param)
    named = [args.positions, args.momenta, args.velocities, args.masses, args.t, *params.values()]
    inputs = [*args.files, *(value for value in named if value is not None and Path(value).is_file())]
    check_output(args.out, inputs=inputs, suffixes=(".npz",), what="a trajectory file")
    data = import_trajectories(args.files, positions=args.positions, momenta=args.momenta, velocities=args.velocities,
                               masses=args.masses, t=args.t, dt=args.dt, params=params,
                               system=args.system or IMPORTED_SYSTEM, element_masses=args.element_masses,
                               format=args.format)
    save_trajectories(args.out, data)
    names = ", ".join(data.params)
    systems = f"{data.n_systems} system{'s' if data.n_systems != 1 else ''}"
    print(f"imported {data.source} -> {args.out}: {systems} x {data.n_times} times x {data.n_particles} particles x "
          f"{data.dim} dims, dt {data.meta['dt']:g}, parameters {names}")
    print(f"converted {data.meta['converted']}")


def _params(flags: list[str]) -> dict[str, str]:
    """``--param NAME[=KEY]`` flags as ``{NAME: KEY}``; a name given twice is refused."""
    params = {}
    for flag in flags:
        name, _, key = flag.partition("=")
        if not name or name in params:
            raise InputError(f"--param {flag}: give each parameter once, as NAME or NAME=KEY")
        params[name] = key or name
    return params
