"""The ``hamnet plot`` and ``hamnet animate`` subcommands: figures and animations of trajectory files.

Thin layers over :mod:`hamnet.plots` and :mod:`hamnet.animate`, which (with matplotlib) are imported
only when one of these commands runs, so the rest of the command line starts quickly. Input errors
raise ``ValueError`` or ``OSError``; :func:`hamnet.cli.main` turns them into one line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_common import check_range, refuse_given, true_system
from .paths import check_output
from .io import Trajectories, load_trajectories

PLOT_KINDS = ("conservation", "error", "paths")
FIGURE_SUFFIXES = ".png, .pdf or .svg"


def add_commands(commands) -> None:
    """Register ``plot`` and ``animate`` on an argparse subparsers object."""
    _add_plot(commands)
    _add_animate(commands)


def _add_plot(commands) -> None:
    parser = commands.add_parser(
        "plot", help="draw conservation, rollout error or particle paths of trajectory files",
        description="Draw a figure from rollout files (trajectory files written by `hamnet rollout` or "
        "`hamnet generate`). 'conservation': change of linear momentum, angular momentum and true energy "
        "over time, on a log scale. 'error': mean square and bounded relative error against --truth over "
        "time. Both show every system of each rollout: the median over systems as a line, the 10th-90th "
        "percentile band shaded and the worst system (the highest curve in that panel) as a thin line "
        "labelled with its index; --systems draws chosen systems one by one instead. 'paths': particle "
        "paths and a phase-space portrait of one system of one rollout, against --truth when given.",
    )
    parser.add_argument("kind", choices=PLOT_KINDS, help="which figure: conservation, error or paths")
    parser.add_argument("rollouts", nargs="+", metavar="ROLLOUT.npz",
                        help="one or more rollout files (paths takes exactly one)")
    parser.add_argument("--truth", metavar="FILE", default=None,
                        help="ground-truth trajectory file the rollouts started from (a rollout file is refused); "
                        "required by 'error', "
                        "optional for 'paths', and drawn as one more curve by 'conservation'")
    parser.add_argument("--labels", nargs="+", metavar="LABEL", default=None,
                        help="legend labels, one per rollout file in order (default: the model and integrator "
                        "recorded in each file, or the file name where those repeat)")
    parser.add_argument("--system", type=int, default=None, metavar="INDEX",
                        help="paths only: index of the system to draw (default: 0)")
    parser.add_argument("--systems", type=int, nargs="+", default=None, metavar="INDEX",
                        help="conservation and error only: draw just these systems (indices from 0, at most "
                        "10, each in every file drawn), each as its own curve, instead of the median, "
                        "percentile band and worst system over all of them")
    parser.add_argument("--learned-energy", action="store_true",
                        help="conservation only: add a panel with the learned energy H_theta along each rollout, "
                        "from the checkpoint its file names, refused if that file is no longer the same checkpoint "
                        "(by sha256) (rollouts without a checkpoint or without a learned H, like FC-NODE, are left "
                        "out of that panel); costs one model evaluation per time step")
    parser.add_argument("--true-system", default=None, metavar="SPEC",
                        help="conservation only: the system whose true energy to draw when the files were made by "
                        "your own system class, path/to/file.py:ClassName, the class that made them (hamnet never "
                        "imports a file because a data file names it; default: each file's registered system, else "
                        "no true-energy curve)")
    parser.add_argument("--out", required=True, metavar="FIG",
                        help=f"output figure, {FIGURE_SUFFIXES} by its suffix (written atomically)")
    parser.set_defaults(run=run_plot)


def _add_animate(commands) -> None:
    parser = commands.add_parser(
        "animate", help="animate the particles of a rollout, against truth when given",
        description="Animate one system of a rollout file: particles (marker area proportional to mass), "
        "springs (line width proportional to k_i k_j) and trails, next to or on top of the truth. 3D "
        "systems are projected onto their plane of largest spread. Frames cover the whole rollout: at most "
        "--max-frames of them, spread evenly from the first time step to the last, unless --stride is given; "
        "a note says how the steps were subsampled, and when --truth ends before the rollout (the truth is "
        "shown while it lasts). Writes a GIF (always available) or an MP4 (needs ffmpeg on PATH).",
    )
    parser.add_argument("rollout", metavar="ROLLOUT.npz", help="the rollout file to animate")
    parser.add_argument("--truth", metavar="FILE", default=None,
                        help="ground-truth trajectory file the rollout started from, drawn beside or under it "
                        "(a rollout file is refused)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output animation, .gif or .mp4 by its suffix (written atomically)")
    parser.add_argument("--fps", type=float, default=20.0, help="frames per second of the animation (default: 20)")
    parser.add_argument("--stride", type=int, default=None,
                        help="draw every STRIDE-th time step from the first as a frame, at most --max-frames of them, "
                        "which may stop before the rollout ends (default: --max-frames frames spread evenly over the "
                        "whole rollout, every step when it has no more)")
    parser.add_argument("--max-frames", type=int, default=200,
                        help="at most this many frames; more is smoother, slower to write and larger (default: 200)")
    parser.add_argument("--trail", type=int, default=15,
                        help="frames of past path drawn behind each particle, 0 for none (default: 15)")
    parser.add_argument("--layout", choices=("side-by-side", "overlay"), default="side-by-side",
                        help="truth and prediction in two panels, or in one panel with truth as hollow markers "
                        "(default: side-by-side)")
    parser.add_argument("--system", type=int, default=0, metavar="INDEX",
                        help="index of the system in the file to animate (default: 0)")
    parser.add_argument("--label", default=None,
                        help="title of the prediction (default: the model and integrator recorded in the file)")
    parser.set_defaults(run=run_animate)


def run_plot(args: argparse.Namespace) -> None:
    from . import plots

    plots.check_figure_path(args.out)
    check_output(args.out, inputs=[*args.rollouts, args.truth], suffixes=plots.FIGURE_FORMATS, what="a figure")
    if args.kind != "conservation":
        refuse_given(args, ("--learned-energy", "--true-system"), f"plot {args.kind} draws no energy (those flags are "
                     "for plot conservation)")
    if args.kind != "paths":
        refuse_given(args, ("--system",), f"plot {args.kind} draws every system (--system picks the one plot paths "
                     "draws; --systems picks some for conservation and error)")
    else:
        refuse_given(args, ("--systems",), "plot paths draws one system (pick it with --system)")
    for index in args.systems or ():
        check_range("--systems", index, 0)
    if args.kind == "paths" and len(args.rollouts) != 1:
        raise ValueError(f"plot paths draws one rollout, got {len(args.rollouts)} files")
    if args.kind == "error" and args.truth is None:
        raise ValueError("plot error needs --truth FILE, the trajectories the rollouts are measured against")
    files = list(args.rollouts)
    rollouts = [load_trajectories(file) for file in files]
    truth = _truth(args.truth)
    labels = args.labels if args.labels is not None else _default_labels(rollouts, files)
    if len(labels) != len(files):
        raise ValueError(f"--labels gives {len(labels)} labels for {len(files)} rollout files; give one per file")
    if args.kind == "conservation" and truth is not None:
        rollouts, labels = rollouts + [truth], list(labels) + ["truth"]
    if args.systems is not None:
        _check_systems(args.systems, rollouts)
    if args.kind == "conservation":
        learned = _learned_hamiltonians(rollouts) if args.learned_energy else None
        # --true-system must be the system of every file drawn
        systems = [true_system(r, args.true_system) for r in rollouts] if args.true_system is not None else None
        plots.plot_conservation(rollouts, labels, out=args.out, learned_energy=learned, true_systems=systems,
                                systems=args.systems)
    elif args.kind == "error":
        plots.plot_error(rollouts, truth, labels, out=args.out, systems=args.systems)
    else:
        plots.plot_paths(rollouts[0], truth, out=args.out, system_index=args.system or 0, label=labels[0])
    print(f"wrote {args.out}")


def run_animate(args: argparse.Namespace) -> None:
    from .animate import ANIMATION_FORMATS, MAX_FPS, MIN_FPS, animate, check_animation_path

    check_animation_path(args.out)
    check_output(args.out, inputs=[args.rollout, args.truth], suffixes=ANIMATION_FORMATS, what="an animation")
    check_range("--fps", args.fps, MIN_FPS, MAX_FPS)
    for flag, value, low in (("--stride", args.stride, 1), ("--max-frames", args.max_frames, 1),
                             ("--trail", args.trail, 0), ("--system", args.system, 0)):
        check_range(flag, value, low)
    rollout = load_trajectories(args.rollout)
    truth = _truth(args.truth)
    frames = animate(rollout, truth, out=args.out, fps=args.fps, stride=args.stride, max_frames=args.max_frames,
                     trail=args.trail, layout=args.layout, system_index=args.system, label=args.label)
    print(f"wrote {args.out} ({frames} frames at {args.fps:g} fps)")


def _check_systems(systems: list[int], rollouts: list[Trajectories]) -> None:
    """Refuse ``--systems`` in one line naming the flag unless every file drawn has each index."""
    from .population import check_systems

    for rollout in rollouts:
        try:
            check_systems(systems, rollout.n_systems, rollout.source or "a file")
        except ValueError as error:
            raise ValueError(f"--systems: {error}") from None


def _truth(path: str | None) -> Trajectories | None:
    """The trajectory file ``--truth`` names, refused in one line when it is a rollout file (a model's
    output, a rollout against itself included: :func:`hamnet.provenance.ground_truth`). Figures draw the
    truth system by system beside its rollout, so there is no --allow-rollout here: leaving out the
    systems that diverged in it would draw them against other systems."""
    if path is None:
        return None
    from .provenance import ground_truth

    truth, _ = ground_truth(load_trajectories(path), allow_rollout=False, flag=None, use="--truth")
    return truth


def _learned_hamiltonians(rollouts: list[Trajectories]) -> list:
    """:func:`_learned_hamiltonian` of each rollout, each distinct checkpoint (by the reference and
    sha256 a file records) hashed and loaded once."""
    models: dict[tuple, object] = {}
    for rollout in rollouts:
        key = (rollout.meta.get("checkpoint"), rollout.meta.get("checkpoint_sha256"))
        if key not in models:
            models[key] = _learned_hamiltonian(rollout)
    return [models[(r.meta.get("checkpoint"), r.meta.get("checkpoint_sha256"))] for r in rollouts]


def _learned_hamiltonian(rollout: Trajectories):
    """The float64 ``H_theta(z, params)`` of the model that made ``rollout``, or None if it has none. The
    checkpoint the file names must be the one that made it (its sha256, where the file records one:
    :func:`hamnet.checkpoint.check_recorded_checkpoint`); a file of an earlier hamnet cannot say, and a note
    says its checkpoint is taken unverified."""
    if rollout.meta.get("checkpoint") is None:
        return None
    from .checkpoint import check_recorded_checkpoint, model_from_checkpoint

    where = rollout.source or "a rollout file"
    _, verified = check_recorded_checkpoint(rollout.meta, f"--learned-energy: {where}")
    model, _ = model_from_checkpoint(rollout.meta["checkpoint"])
    if not verified:
        print(f"note: {where} does not record its checkpoint's sha256 (an earlier hamnet's file): "
              f"{rollout.meta['checkpoint']} is used as the model that made it, unverified", file=sys.stderr)
    return model.double().hamiltonian if hasattr(model, "hamiltonian") else None


def _default_labels(rollouts: list[Trajectories], files: list[str]) -> list[str]:
    """Labels from each file's ``meta``; where two coincide, the file names (or paths) tell them apart."""
    from .plots import default_label

    for candidates in ([default_label(r) for r in rollouts], [Path(f).stem for f in files], files):
        if len(set(candidates)) == len(candidates):
            return candidates
    return [f"{file} ({index + 1})" for index, file in enumerate(files)]
