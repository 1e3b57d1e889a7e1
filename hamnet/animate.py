"""Animations of rollouts: particles of truth and prediction, side by side or overlaid, with trails.

Note to the reader: inputs are :class:`~hamnet.io.Trajectories` with ``z: (B, T, 2, N, D)``; one
system (``system_index``) is drawn. Marker area is proportional to mass; for the springs system every
spring is a line whose width is proportional to its constant ``k_i k_j``. 2D systems are drawn as
they are; 3D systems are projected orthogonally onto their plane of largest spread (the two leading
principal axes of all positions shown, see :func:`hamnet.plots.principal_plane`), one projection for
every frame and panel.

By default an animation covers the whole rollout: at most ``max_frames`` frames (200), spread evenly
from the first time step to the last (every step when there are no more than that), and a note logged
at INFO says how the steps were subsampled. An explicit ``stride`` takes every ``stride``-th step from
the first instead, and a note says when those frames stop before the rollout ends. A truth shorter
than the rollout is drawn while it lasts and hidden after it ends (its panel title and the clock say
when); a note logged as a warning says so.

Frames are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no display) and
written by matplotlib's movie writers: a GIF with ``PillowWriter``, always available, or an H.264 MP4
with ``FFMpegWriter`` when ``ffmpeg`` is on ``PATH``. Output is atomic: a failed or interrupted run
leaves no file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
from matplotlib.animation import AbstractMovieWriter, FFMpegWriter, PillowWriter
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from torch import Tensor

from .io import Trajectories
from .paths import atomic_path
from .plots import (
    new_figure, particle_colour, align_with_truth, check_trajectories, default_label, principal_plane,
    project_to_plane,
)

__all__ = ["ANIMATION_FORMATS", "LAYOUTS", "MIN_FPS", "MAX_FPS", "animate", "check_animation_path", "frame_steps"]

log = logging.getLogger(__name__)

ANIMATION_FORMATS = (".gif", ".mp4")
#: frame rates an animation may have: GIF delays are whole hundredths of a second (100 fps at most, and
#: Pillow stores a delay in 16 bits of milliseconds, about 65 s, so no slower than 1/65 fps); MP4
#: players handle up to some hundreds
MIN_FPS, MAX_FPS = 0.02, 1000.0
LAYOUTS = ("side-by-side", "overlay")
ANIMATION_DPI = 80
#: marker area (points^2) of the heaviest particle; others scale with mass, down to MIN_MARKER_AREA
MAX_MARKER_AREA = 320.0
MIN_MARKER_AREA = 12.0
#: line width (points) of the stiffest spring; others scale with k_i k_j
MAX_SPRING_WIDTH = 4.0
#: empty margin around the particles, as a fraction of their extent
MARGIN = 0.12


def check_animation_path(out: str | os.PathLike) -> Path:
    """``out`` as a path if it names a format that can be written here, else ``ValueError`` in one line."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_FORMATS:
        raise ValueError(f"cannot write {path}: unsupported animation format {path.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(ANIMATION_FORMATS)}")
    if suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise ValueError(f"cannot write {path}: .mp4 needs ffmpeg on PATH, which was not found; "
                         "install ffmpeg or write a .gif")
    return path


def _check_settings(fps: float, stride: int | None, max_frames: int, trail: int, layout: str) -> None:
    if not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(f"fps must be between {MIN_FPS:g} and {MAX_FPS:g}, got {fps:g}")
    if stride is not None and (int(stride) != stride or stride < 1):
        raise ValueError(f"stride must be a positive integer, got {stride}")
    if int(max_frames) != max_frames or max_frames < 1:
        raise ValueError(f"max_frames must be a positive integer, got {max_frames}")
    if int(trail) != trail or trail < 0:
        raise ValueError(f"trail must be a non-negative integer, got {trail}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def frame_steps(n_times: int, stride: int | None = None, max_frames: int = 200) -> list[int]:
    """The time steps (indices into ``T = n_times`` times) an animation shows, in order.

    ``stride=None``: every step when ``n_times <= max_frames``, else ``max_frames`` steps spread evenly
    from the first to the last (rounded to whole steps, so consecutive frames are ``n_times /
    max_frames`` steps apart give or take one). A ``stride``: every ``stride``-th step from the first,
    at most ``max_frames`` of them, which may stop before the last step.
    """
    if stride is None:
        if n_times <= max_frames:
            return list(range(n_times))
        return [int(step) for step in np.rint(np.linspace(0, n_times - 1, int(max_frames)))]
    return list(range(0, n_times, int(stride)))[: int(max_frames)]


def animate(
    rollout: Trajectories,
    truth: Trajectories | None = None,
    *,
    out: str | os.PathLike,
    fps: float = 20.0,
    stride: int | None = None,
    max_frames: int = 200,
    trail: int = 15,
    layout: str = "side-by-side",
    system_index: int = 0,
    label: str | None = None,
) -> int:
    """Write an animation of one system of ``rollout`` (and of ``truth``, if given) to ``out``.

    ``rollout``, ``truth``: ``z: (B, T, 2, N, D)`` with ``D`` = 2 or 3; a truth must start from the
    rollout's states; one shorter than the rollout is shown while it lasts (a note says so). Frames
    (:func:`frame_steps`): by default at most ``max_frames`` spread evenly over the whole rollout; with
    ``stride``, every ``stride``-th time from the first, at most ``max_frames`` of them; shown at
    ``fps`` frames per second. ``trail``: how many frames back each particle's path is drawn (0 for none). ``layout``: ``"side-by-side"`` (truth
    left, prediction right) or ``"overlay"`` (one panel; truth hollow markers with solid trails,
    prediction filled with dashed trails). ``out``: ``.gif`` or ``.mp4`` (needs ffmpeg).
    Returns the number of frames written.
    """
    path = check_animation_path(out)
    _check_settings(fps, stride, max_frames, trail, layout)
    check_trajectories(rollout, "rollout")
    if not -rollout.n_systems <= system_index < rollout.n_systems:
        raise ValueError(f"system index {system_index} is out of range; the rollout has {rollout.n_systems} systems")
    t, pred, true = rollout.t, rollout.z[system_index], None
    if truth is not None:  # the truth while it lasts: align_with_truth cuts to the shorter of the two
        true = align_with_truth(rollout, truth)[2][system_index]
    frames = frame_steps(len(t), stride, max_frames)
    spacing = int(stride) if stride is not None else max(1, round(frames[-1] / max(1, len(frames) - 1)))
    scene = _Scene(rollout, pred, true, frames, trail=int(trail) * spacing, layout=layout,
                   system_index=system_index, label=label or default_label(rollout), t=t)
    with atomic_path(path) as tmp:
        # the writers choose the file format by suffix, which atomic_path's temporary file lacks
        staged = tmp.with_name(tmp.name + path.suffix.lower())
        try:
            _write_frames(scene, [(index, float(t[index])) for index in frames], _writer(path, fps), staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    _notes(path, t, frames, stride, None if true is None else len(true))
    return len(frames)


def _notes(path: Path, t: Tensor, frames: list[int], stride: int | None, truth_times: int | None) -> None:
    """Say, once the animation is written, how its frames cover the rollout and where the truth ends."""
    n_times, last = len(t), frames[-1]
    if stride is None and len(frames) < n_times:
        log.info("note: %s shows %d of the %d time steps, spread evenly over t = %g to %g (a frame every %.1f "
                 "steps on average; max_frames or a stride, --max-frames or --stride, changes this)", path.name,
                 len(frames), n_times, float(t[0]), float(t[last]), last / max(1, len(frames) - 1))
    elif last < n_times - 1:
        log.info("note: %s covers t = %g to %g of a rollout to t = %g (stride %d, %d frames); without a stride "
                 "(--stride) the frames cover all of it", path.name, float(t[0]), float(t[last]), float(t[-1]),
                 stride, len(frames))
    if truth_times is not None and truth_times <= last:
        log.warning("note: the truth ends at t = %g, before the animated rollout (to t = %g): %s shows it until then, "
                    "the prediction alone after", float(t[truth_times - 1]), float(t[last]), path.name)


def _writer(path: Path, fps: float) -> AbstractMovieWriter:
    if path.suffix.lower() == ".mp4":
        # explicit codec and arguments, so that a user's matplotlibrc cannot change what is written;
        # for h264 the writer adds yuv420p (what players expect) and evens the frame size
        return FFMpegWriter(fps=fps, codec="h264", extra_args=[])
    # GIF stores frame delays in hundredths of a second: each frame shows for 1 / fps rounded to the
    # nearest 10 ms, at least 10 ms. PillowWriter hands Pillow int(1000 / its fps) ms, which Pillow
    # truncates to hundredths, so plain fps would truncate (fps 6: 160 ms, not 170; fps > 100: 0 ms,
    # which viewers show as 100 ms). Asking for 1000 / (delay + 0.5) makes that integer exactly delay.
    delay_ms = max(10, round(100.0 / fps) * 10)
    return PillowWriter(fps=1000.0 / (delay_ms + 0.5))


def _write_frames(scene: _Scene, times: list[tuple[int, float]], writer: AbstractMovieWriter, out: Path) -> None:
    """Draw the frame for each ``(time step, time)`` of ``times`` and write them all to ``out`` with ``writer``."""
    # not writer.saving(): it finishes the movie on failure too, and that error would replace the
    # first one (a KeyboardInterrupt before the first GIF frame would become an IndexError)
    writer.setup(scene.figure, out, dpi=ANIMATION_DPI)
    try:
        for index, time in times:
            scene.show(index, time)
            writer.grab_frame()
    except BrokenPipeError:
        _finish(writer)  # ffmpeg quit early; its exit status and last message say why
        raise
    except BaseException:
        with contextlib.suppress(Exception):  # ends ffmpeg; the first error is the one to report
            writer.finish()
        raise
    _finish(writer)


def _finish(writer: AbstractMovieWriter) -> None:
    try:
        writer.finish()
    except subprocess.CalledProcessError as error:
        lines = (error.stderr or "").strip().splitlines()
        reason = lines[-1] if lines else f"exit status {error.returncode}"
        raise OSError(f"ffmpeg failed writing the .mp4: {reason}") from error


class _Scene:
    """The figure and its artists, updated in place for each frame."""

    def __init__(self, rollout: Trajectories, pred: Tensor, true: Tensor | None, frames: list[int], *,
                 trail: int, layout: str, system_index: int, label: str, t: Tensor) -> None:
        shown = [z[: frames[-1] + 1] for z in (true, pred) if z is not None]  # each (T', 2, N, D)
        # a truth that ends before the last frame: its time, shown in titles and on the clock after it
        self.truth_end = float(t[len(true) - 1]) if true is not None and len(true) <= frames[-1] else None
        basis = principal_plane(torch.cat([z[:, 0] for z in shown])) if rollout.dim == 3 else None
        self.trail = trail
        masses = rollout.params["m"][system_index]
        areas = (MAX_MARKER_AREA * masses / masses.max()).clamp_min(MIN_MARKER_AREA).tolist()
        widths = _spring_widths(rollout, system_index)
        positions = [project_to_plane(z[:, 0], basis).numpy() for z in shown]  # each (T', N, 2)
        overlay = layout == "overlay" or true is None
        width, height = (5.0, 5.6) if overlay else (9.0, 5.0)
        self.figure: Figure = new_figure(width, height, dpi=ANIMATION_DPI)
        axes = [self.figure.subplots()] if overlay else list(self.figure.subplots(1, 2))
        # framed on the truth when it lasts to the end: a diverging prediction leaves the frame instead
        # of shrinking the truth to a dot; after a shorter truth ends, the prediction must stay in view
        framed = positions[:1] if true is not None and self.truth_end is None else positions
        limits = _square_limits(np.concatenate([q.reshape(-1, 2) for q in framed]))
        truth_name = "truth" if self.truth_end is None else f"truth (until t = {self.truth_end:g})"
        names = [truth_name, label] if true is not None else [label]
        self.layers = []
        for index, (q, name) in enumerate(zip(positions, names)):
            ax = axes[0] if overlay else axes[index]
            is_overlaid_truth = overlay and true is not None and index == 0
            # overlaid, only the prediction draws its springs: two sets of springs hide the particles
            self.layers.append(_Layer(ax, q, areas, None if is_overlaid_truth else widths,
                                      hollow=is_overlaid_truth, dashed=overlay and index > 0))
            if not overlay:
                ax.set_title(name)
        for ax in axes:
            ax.set(xlim=limits[0], ylim=limits[1], aspect="equal",
                   xlabel=("principal axis 1" if basis is not None else "x") + " (simulation units)",
                   ylabel=("principal axis 2" if basis is not None else "y") + " (simulation units)")
        if overlay:
            axes[0].set_title(" vs ".join(names) if true is not None else names[0])
        note = "marker area \u221d mass" + ("; line width \u221d spring constant $k_i k_j$" if widths is not None else "")
        if overlay and true is not None:
            note += "\ntruth: hollow markers, solid trails; prediction: filled, dashed trails"
        self.figure.supxlabel(note, fontsize=8, color="0.3")
        self.title = f"{rollout.meta.get('system', 'system')} system {system_index}" + (
            " (3D, projected)" if basis is not None else "")
        self.clock = self.figure.suptitle("")
        # side by side, the truth's panel says it has ended rather than going blank without a word
        self.ended = None if overlay or self.truth_end is None else axes[0].text(
            0.5, 0.5, f"truth ended at t = {self.truth_end:g}", transform=axes[0].transAxes, ha="center",
            va="center", color="0.4", visible=False)
        self.layout_fixed = False

    def show(self, index: int, time: float) -> None:
        """Put the artists at time step ``index``; a movie writer's ``grab_frame`` draws them."""
        for layer in self.layers:
            layer.update(index, self.trail)
        ended = self.truth_end is not None and time > self.truth_end
        if self.ended is not None:
            self.ended.set_visible(ended)
        self.clock.set_text(f"{self.title}, t = {time:.3f}" + (f" (truth ended at t = {self.truth_end:g})"
                                                               if ended else ""))
        if not self.layout_fixed:
            # the layout is the same in every frame: solve it once, then draw frames about twice as fast
            self.figure.draw_without_rendering()
            self.figure.set_layout_engine("none")
            self.layout_fixed = True


class _Layer:
    """One trajectory's particles, trails and springs on one axes; ``q: (T, N, 2)`` plane positions."""

    def __init__(self, ax, q: np.ndarray, areas: list[float], widths: np.ndarray | None, *,
                 hollow: bool, dashed: bool) -> None:
        self.q = q
        n = q.shape[1]
        self.pairs = np.triu_indices(n, 1)
        self.springs = None
        if widths is not None:
            self.springs = LineCollection([], linewidths=widths, colors="0.55", alpha=0.6, zorder=1)
            ax.add_collection(self.springs)
        colours = [particle_colour(i) for i in range(n)]
        self.trails = [ax.plot([], [], color=colours[i], linewidth=1.2, linestyle="--" if dashed else "-",
                               alpha=0.8, zorder=2)[0] for i in range(n)]
        faces = ["none"] * n if hollow else colours
        edges = colours if hollow else ["black"] * n
        self.particles = ax.scatter(q[0, :, 0], q[0, :, 1], s=areas, facecolors=faces, edgecolors=edges,
                                    linewidths=1.8 if hollow else 0.8, zorder=3)
        self.visible = True

    def update(self, index: int, trail: int) -> None:
        """Show time step ``index``, with ``trail`` steps of path; hidden past the trajectory's end."""
        visible = index < len(self.q)
        if visible != self.visible:
            for artist in [self.particles, *self.trails, *([self.springs] if self.springs is not None else [])]:
                artist.set_visible(visible)
            self.visible = visible
        if not visible:
            return
        now = self.q[index]
        self.particles.set_offsets(now)
        past = self.q[max(0, index - trail): index + 1]
        for i, line in enumerate(self.trails):
            line.set_data(past[:, i, 0], past[:, i, 1])
        if self.springs is not None:
            self.springs.set_segments(np.stack([now[self.pairs[0]], now[self.pairs[1]]], axis=1))


def _spring_widths(rollout: Trajectories, system_index: int) -> np.ndarray | None:
    """Line widths ``(N (N - 1) / 2,)`` proportional to ``k_i k_j`` for pairs ``i < j``, or None without springs."""
    if rollout.meta.get("system") != "springs" or "k" not in rollout.params:
        return None
    k = rollout.params["k"][system_index].double()
    constants = (k[:, None] * k[None, :]).numpy()[np.triu_indices(k.shape[0], 1)]
    largest = constants.max() if constants.size else 0.0
    return MAX_SPRING_WIDTH * constants / largest if largest > 0 else np.zeros_like(constants)


def _square_limits(points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Equal x and y ranges holding all ``points: (..., 2)`` with a margin."""
    flat = points.reshape(-1, 2)
    low, high = flat.min(0), flat.max(0)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2, 1e-6) * (1 + MARGIN)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)
