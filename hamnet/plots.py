"""Figures of rollouts: conservation over time, error against truth, particle paths and phase space.

Note to the reader: every function takes :class:`~hamnet.io.Trajectories`, states
``z: (B, T, 2, N, D)`` at times ``t: (T,)`` (``z[:, :, 0]`` positions ``q``, ``z[:, :, 1]`` momenta
``p``), so a rollout of a learned model and one of the true system are drawn the same way.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
drawing needs no display and changes no global state. Each function returns its figure and, when
``out`` is given, writes it atomically in the format the suffix names (``.png``, ``.pdf``, ``.svg``).
Curves differ by line style and marker as well as colour, so figures read in black-and-white print.
Quantities are in the system's own (dimensionless) simulation units.

Conservation and error figures show every system of a file: per rollout the median over systems, the
10th-90th percentile band and the worst system, labelled; or, with ``systems=[0, 3, 7]``, just those
systems one by one (:mod:`hamnet.population` says exactly what is drawn).

3D positions are drawn projected orthogonally onto the plane of largest spread: the two leading
principal axes of all positions shown (truth and prediction together), see :func:`principal_plane`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from .diagnostics import bounded_relative_error, conservation_series, energy, relative_change
from .io import SystemUnavailable, Trajectories
from .paths import atomic_path
from .population import BAND, ZERO_FLOOR, add_legend, check_band, check_systems, describe, draw_curves

Hamiltonian = Callable[[Tensor, dict], Tensor]
log = logging.getLogger(__name__)

__all__ = [
    "BAND", "FIGURE_FORMATS", "ZERO_FLOOR", "align_with_truth", "check_figure_path", "default_label",
    "plot_conservation", "plot_error", "plot_paths", "principal_plane", "project_to_plane",
    "rollout_error", "save_figure",
]

FIGURE_FORMATS = (".png", ".pdf", ".svg")
FIGURE_DPI = 120
#: float64 machine epsilon, drawn as the round-off reference on conservation plots
FLOAT64_EPS = torch.finfo(torch.float64).eps
#: markers on at most this many points per curve, so long rollouts stay legible
MARKERS_PER_CURVE = 10
#: (colour, line style, marker) per curve: Okabe-Ito colours, told apart without colour too
CURVE_STYLES = (
    ("#0072B2", "-", "o"), ("#D55E00", "--", "s"), ("#009E73", "-.", "^"), ("#CC79A7", ":", "D"),
    ("#E69F00", (0, (5, 1, 1, 1, 1, 1)), "v"), ("#56B4E9", (0, (1, 1)), "x"), ("#000000", (0, (8, 2)), "P"),
)
PARTICLE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
TIME_LABEL = "time t (simulation units)"
TRUTH_LINE = {"linestyle": "-", "linewidth": 3.5, "alpha": 0.35}
PREDICTION_LINE = {"linestyle": "--", "linewidth": 1.3}


# -- checks shared by plots and animations ---------------------------------------------------------
def check_figure_path(out: str | os.PathLike) -> Path:
    """``out`` as a path if its suffix is a supported figure format, else ``ValueError`` in one line."""
    path = Path(out)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ValueError(f"cannot write {path}: unsupported figure format {path.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(FIGURE_FORMATS)}")
    return path


def check_trajectories(data: Trajectories, what: str = "rollout") -> None:
    """Refuse an empty trajectory (no system or fewer than 2 times) or one that is not 2D/3D."""
    z = data.z
    if z.dim() != 5 or z.shape[2] != 2:
        raise ValueError(f"{what} has states of shape {tuple(z.shape)}; expected (B, T, 2, N, D)")
    n_systems, n_times, _, n_particles, dim = z.shape
    if n_systems == 0 or n_times < 2 or n_particles == 0:
        raise ValueError(f"{what} is empty ({n_systems} systems, {n_times} times, {n_particles} particles); "
                         "drawing it needs at least 1 system, 1 particle and 2 times")
    if dim not in (2, 3):
        raise ValueError(f"{what} is {dim}-dimensional (D = {dim}); hamnet draws 2D and 3D systems only")
    if data.t.shape != (n_times,):
        raise ValueError(f"{what} has times of shape {tuple(data.t.shape)}; expected ({n_times},)")


def align_with_truth(rollout: Trajectories, truth: Trajectories) -> tuple[Tensor, Tensor, Tensor]:
    """The times both share and the matching states: ``t: (T,)``, prediction and truth ``(B, T, 2, N, D)``.

    ``T`` is the shorter of the two lengths and ``B`` the rollout's systems; a truth with more
    systems contributes its first ``B``. Raises ``ValueError`` when the shapes, the times or the
    initial states disagree, since an error measured against the wrong truth means nothing.
    """
    check_trajectories(rollout, "rollout")
    check_trajectories(truth, "truth")
    n_systems = rollout.n_systems
    if truth.n_systems < n_systems or truth.z.shape[3:] != rollout.z.shape[3:]:
        raise ValueError(f"truth (B, N, D) = {_bnd(truth)} does not match rollout (B, N, D) = {_bnd(rollout)}")
    n_times = min(rollout.n_times, truth.n_times)
    t = rollout.t[:n_times]
    if not torch.allclose(t, truth.t[:n_times].to(t.dtype), rtol=1e-6, atol=1e-9):
        raise ValueError("rollout and truth are sampled at different times; use a truth with the rollout's dt")
    pred, true = rollout.z[:, :n_times], truth.z[:n_systems, :n_times].to(rollout.z.dtype)
    scale = float(true[:, 0].abs().max())
    # loose enough for a float32 rollout saved as float64, tight enough to catch other initial states
    if not torch.allclose(pred[:, 0], true[:, 0], rtol=1e-5, atol=1e-6 * scale):
        raise ValueError("rollout and truth start from different states; give the truth this rollout started from")
    return t, pred, true


def _bnd(data: Trajectories) -> tuple[int, int, int]:
    return data.n_systems, data.n_particles, data.dim


def default_label(data: Trajectories) -> str:
    """A legend label from a file's ``meta``: the model (or the true system) and the integrator."""
    meta = data.meta
    model = meta.get("model") or f"true {meta.get('system', 'system')}"
    method = meta.get("method") or meta.get("integrator")
    return f"{model}, {method}" if method else str(model)


def _labels(rollouts: Sequence[Trajectories], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        labels = [default_label(r) for r in rollouts]
    if len(labels) != len(rollouts):
        raise ValueError(f"got {len(labels)} labels for {len(rollouts)} rollouts; give one label per rollout")
    return [str(label) for label in labels]


# -- numbers drawn ---------------------------------------------------------------------------------
def rollout_error(prediction: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Per-system error over time of ``prediction`` against ``truth``, both ``(B, T, 2, N, D)``.

    Returns ``mse: (B, T)``, the mean square difference over ``q`` and ``p`` of all particles, and
    ``relative: (B, T)``, the bounded relative error ``|a - b| / (|a| + |b|)`` of the whole state
    (Euclidean norms; 0 when both are 0), which lies in ``[0, 1]``.
    """
    mse = (prediction - truth).flatten(2).square().mean(-1)
    return mse, bounded_relative_error(prediction, truth)


def _conservation_series(data: Trajectories, learned: Hamiltonian | None, system) -> dict[str, Tensor]:
    """Each system's relative change at each time, ``(B, T)`` per quantity. The true energy only when
    ``system`` is given or the file's own system is registered (a file never makes code run)."""
    z, params = data.z, data.params
    if system is None:
        try:
            system = data.system()
        except SystemUnavailable as reason:
            log.warning("note: no true-energy curve for %s: %s", data.source or default_label(data), reason)
    with torch.no_grad():
        series = conservation_series(z, system.hamiltonian if system is not None else None, params)
        if learned is not None:
            h = energy(learned, z, params).to(z.dtype)
            series["learned"] = relative_change(h, h[:, 0].abs())
    names = {"linear_momentum": "linear", "angular_momentum": "angular"}
    return {names.get(key, key): value for key, value in series.items()}


# -- drawing helpers -------------------------------------------------------------------------------
def new_figure(width: float, height: float, dpi: float = FIGURE_DPI) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot, no global state)."""
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _style(index: int, n_points: int) -> dict:
    colour, linestyle, marker = CURVE_STYLES[index % len(CURVE_STYLES)]
    return {"color": colour, "linestyle": linestyle, "marker": marker, "markersize": 5,
            "markevery": max(1, n_points // MARKERS_PER_CURVE), "linewidth": 1.4}


def mark_region_exits(axes: Sequence[Any], data: Trajectories, label: str, colour: str,
                      systems: Sequence[int] | None = None) -> None:
    """A dotted vertical line in each of ``axes`` at the first step at which a system of the rollout ``data``
    (of ``systems``, the file's indices, when given) left its model's training region (``meta["left_region"]``,
    :mod:`hamnet.region`), labelled with how many did; nothing when none did or the file does not say."""
    left = data.meta.get("left_region") or []
    if systems is not None:
        drawn = set(systems)
        left = [entry for entry in left if int(entry["system"]) in drawn]
    if not left:
        return
    first = min(int(entry["step"]) for entry in left)
    time = float(data.t[min(first, data.n_times - 1)])
    of = f"{len(systems)} drawn" if systems is not None else str(data.n_systems)
    for index, ax in enumerate(axes):
        ax.axvline(time, color=colour, linestyle=(0, (1, 1.5)), linewidth=1.2,
                   label=f"{label}: {len(left)} of {of} left the training region (first at t = {time:.3g})"
                   if index == 0 else None)


def save_figure(figure: Figure, out: str | os.PathLike) -> Path:
    """Write ``figure`` atomically in the format of ``out``'s suffix; returns the path."""
    path = check_figure_path(out)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix[1:].lower(), dpi=FIGURE_DPI)
    return path


def _check_all(rollouts: Sequence[Trajectories], out: str | os.PathLike | None,
               systems: Sequence[int] | None = None, band: Sequence[float] = BAND) -> list[int] | None:
    """Check ``out``, ``band`` and every rollout; returns ``systems`` (if given) checked against every rollout."""
    check_band(band)
    if out is not None:
        check_figure_path(out)
    if len(rollouts) == 0:
        raise ValueError("no rollouts to plot; give at least one")
    for index, data in enumerate(rollouts):
        check_trajectories(data, f"rollout {index + 1}")
    chosen = None
    for index, data in enumerate(rollouts if systems is not None else ()):
        chosen = check_systems(systems, data.n_systems, data.source or f"rollout {index + 1}")
    return chosen


def _styles(first: int, count: int, n_points: int) -> list[dict]:
    return [_style(first + offset, n_points) for offset in range(count)]


# -- figures ---------------------------------------------------------------------------------------
CONSERVATION_PANELS = (
    ("linear", "linear momentum", r"$|\Delta P(t)|\,/\,\sum_i |p_i(0)|$"),
    ("angular", "angular momentum", r"$|\Delta L(t)|\,/\,\sum_i |q_i(0)|\,|p_i(0)|$"),
    ("energy", "true energy", r"$|H(t) - H(0)|\,/\,|H(0)|$"),
    ("learned", r"learned energy $H_\theta$", r"$|H_\theta(t) - H_\theta(0)|\,/\,|H_\theta(0)|$"),
)


def plot_conservation(
    rollouts: Sequence[Trajectories],
    labels: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    *,
    learned_energy: Sequence[Hamiltonian | None] | None = None,
    true_systems: Sequence[Any] | None = None,
    systems: Sequence[int] | None = None,
    band: Sequence[float] = BAND,
) -> Figure:
    """Change of the conserved quantities over time, several rollouts side by side.

    One panel each for linear momentum, angular momentum and the true energy (of ``true_systems``,
    one per rollout, or rebuilt from each file's ``meta`` when its system is registered; a file made
    by a user's own system class gets no true-energy curve unless its system is given), plus learned energy when ``learned_energy`` gives a Hamiltonian
    ``H(z: (B, 2, N, D), params) -> (B,)`` for at least one rollout (``None`` for the others). Changes
    are relative to the scales of :mod:`hamnet.diagnostics`, on a log axis with float64 round-off
    marked; exact zeros are drawn at ``ZERO_FLOOR``. Per rollout: the median over its systems, the band
    between the ``band`` percentiles and the worst system (largest change in that panel), labelled; or,
    with ``systems`` (indices every rollout has), those systems one by one (:mod:`hamnet.population`).
    A rollout whose systems left its model's training region gets a dotted line at the first exit
    (:func:`mark_region_exits`). ``rollouts``: each ``z: (B, T, 2, N, D)``; ``labels``: one per rollout
    (default from ``meta``).
    """
    chosen = _check_all(rollouts, out, systems, band)
    labels = _labels(rollouts, labels)
    learned = list(learned_energy) if learned_energy is not None else [None] * len(rollouts)
    if len(learned) != len(rollouts):
        raise ValueError(f"got {len(learned)} learned energies for {len(rollouts)} rollouts")
    systems = list(true_systems) if true_systems is not None else [None] * len(rollouts)
    if len(systems) != len(rollouts):
        raise ValueError(f"got {len(systems)} true systems for {len(rollouts)} rollouts")
    series = [_conservation_series(data, h, system) for data, h, system in zip(rollouts, learned, systems)]
    panels = [panel for panel in CONSERVATION_PANELS if any(panel[0] in s for s in series)]
    figure = new_figure(4.0 * len(panels), 4.2)
    axes = figure.subplots(1, len(panels), sharex=True)
    count = len(chosen) if chosen is not None else 1  # styles per rollout
    for ax, (key, title, ylabel) in zip(axes, panels):
        used = 0
        for index, (data, values) in enumerate(zip(rollouts, series)):
            if key in values:  # from the second time: at t = 0 the change is zero by definition
                t = data.t[1:].double().numpy()
                draw_curves(ax, t, values[key][:, 1:], labels[index], _styles(used, count, len(t)), chosen, band)
            used += count  # a rollout keeps its styles in every panel, drawn there or not
        ax.axhline(FLOAT64_EPS, color="0.4", linestyle=(0, (1, 2)), linewidth=1.0, label="float64 round-off")
        ax.set_yscale("log")
        ax.set(title=title, xlabel=TIME_LABEL, ylabel=f"{ylabel}\n(relative; exact 0 drawn at {ZERO_FLOOR:.0e})")
        ax.grid(True, which="major", color="0.9")
    for index, data in enumerate(rollouts):
        mark_region_exits(axes, data, labels[index], _style(index * count, 1)["color"], chosen)
    population = chosen is None and any(r.n_systems > 1 for r in rollouts)
    add_legend(figure, axes[0], population, band)
    figure.suptitle(f"Conservation over time ({describe(chosen, band, population)})")
    if out is not None:
        save_figure(figure, out)
    return figure


def plot_error(
    rollouts: Sequence[Trajectories],
    truth: Trajectories,
    labels: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    *,
    systems: Sequence[int] | None = None,
    band: Sequence[float] = BAND,
) -> Figure:
    """Rollout error against ``truth`` over time for several models, on log axes.

    Left: mean square error of the state. Right: bounded relative error ``|a - b| / (|a| + |b|)``
    (see :func:`rollout_error`). Per rollout: the median over its systems, the band between the
    ``band`` percentiles and the worst system (highest error in that panel), labelled; or, with
    ``systems``, those systems one by one (:mod:`hamnet.population`); a dotted line at the first step at
    which a system left its model's training region (:func:`mark_region_exits`). Every rollout,
    ``z: (B, T, 2, N, D)``, must start from truth's states; times are cut to the shorter of the two.
    """
    chosen = _check_all(rollouts, out, systems, band)
    labels = _labels(rollouts, labels)
    figure = new_figure(9.0, 4.2)
    axes = figure.subplots(1, 2, sharex=True)
    used = 0
    for index, data in enumerate(rollouts):
        t, pred, true = align_with_truth(data, truth)
        mse, relative = rollout_error(pred[:, 1:], true[:, 1:])  # at t = 0 both start from the same state
        t = t[1:].double().numpy()
        styles = _styles(used, len(chosen) if chosen is not None else 1, len(t))
        for ax, values in zip(axes, (mse, relative)):
            draw_curves(ax, t, values, labels[index], styles, chosen, band)
        mark_region_exits(axes, data, labels[index], styles[0]["color"], chosen)
        used += len(styles)
    axes[0].set(title="mean square error",
                ylabel=f"MSE of (q, p)\n(simulation units$^2$; exact 0 drawn at {ZERO_FLOOR:.0e})")
    axes[1].set(title="bounded relative error",
                ylabel="$|z - z_{true}|\\,/\\,(|z| + |z_{true}|)$\n(relative, at most 1; exact 0 drawn at "
                f"{ZERO_FLOOR:.0e})")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel(TIME_LABEL)
        ax.grid(True, which="major", color="0.9")
    population = chosen is None and any(r.n_systems > 1 for r in rollouts)
    add_legend(figure, axes[0], population, band)
    figure.suptitle(f"Rollout error against truth ({describe(chosen, band, population)})")
    if out is not None:
        save_figure(figure, out)
    return figure


def principal_plane(points: Tensor) -> Tensor:
    """Orthonormal basis ``(D, 2)`` of the plane in which ``points: (..., D)`` spread most.

    The two leading principal axes of the centred points, each signed so that its largest
    component is positive (the picture does not flip between runs).
    """
    flat = points.reshape(-1, points.shape[-1]).double()
    _, _, vh = torch.linalg.svd(flat - flat.mean(0), full_matrices=False)
    basis = vh[:2].T
    signs = torch.sign(basis[basis.abs().argmax(0), torch.arange(2)])
    return basis * torch.where(signs == 0, torch.ones_like(signs), signs)


def project_to_plane(points: Tensor, basis: Tensor | None) -> Tensor:
    """``points: (..., D)`` in plane coordinates ``(..., 2)``: unchanged for D = 2, ``points @ basis`` for D = 3."""
    if points.shape[-1] == 2 or basis is None:
        return points
    return points.double() @ basis


def plot_paths(
    rollout: Trajectories,
    truth: Trajectories | None = None,
    out: str | os.PathLike | None = None,
    *,
    system_index: int = 0,
    label: str | None = None,
) -> Figure:
    """Particle paths and a phase-space portrait of one system, prediction against truth.

    Left: each particle's path in the plane (3D projected onto the plane of largest spread).
    Right: position against momentum along the first plane axis, per particle. Truth solid,
    prediction dashed; particles are told apart by the marker at their start. ``rollout`` and
    ``truth``: ``z: (B, T, 2, N, D)``; ``system_index`` picks the system drawn.
    """
    _check_all([rollout], out)
    if not -rollout.n_systems <= system_index < rollout.n_systems:
        raise ValueError(f"system index {system_index} is out of range; the rollout has {rollout.n_systems} systems")
    if truth is None:
        t, pred, true = rollout.t, rollout.z, None
    else:
        t, pred, true = align_with_truth(rollout, truth)
    shown = [z[system_index] for z in (pred, true) if z is not None]  # each (T, 2, N, D)
    basis = principal_plane(torch.cat([z[:, 0] for z in shown])) if rollout.dim == 3 else None
    figure = new_figure(9.5, 4.6)
    paths, phase = figure.subplots(1, 2)
    # truth as a wide pale band under a thin dashed prediction: where they agree, both stay visible
    curves = [(pred[system_index], label or default_label(rollout), PREDICTION_LINE)]
    if true is not None:
        curves.insert(0, (true[system_index], "truth", TRUTH_LINE))
    for z, _, line in curves:
        _draw_particles(paths, phase, z, basis, line)
    first, second = ("principal axis 1", "principal axis 2") if basis is not None else ("x", "y")
    paths.set(title="particle paths", xlabel=f"{first} (simulation units)", ylabel=f"{second} (simulation units)")
    paths.set_aspect("equal", adjustable="datalim")
    phase.set(title=f"phase space along {first}", xlabel=f"position q along {first} (simulation units)",
              ylabel=f"momentum p along {first} (simulation units)")
    handles = [Line2D([], [], color="0.2", label=name, **line) for _, name, line in curves]
    handles += [Line2D([], [], color=particle_colour(i), marker=PARTICLE_MARKERS[i % len(PARTICLE_MARKERS)],
                       linestyle="none", label=f"particle {i} start") for i in range(min(rollout.n_particles, 8))]
    figure.legend(handles=handles, loc="outside right center", frameon=False)
    figure.suptitle(f"{rollout.meta.get('system', 'system')} system {system_index}, t = {float(t[0]):g} to {float(t[-1]):g}")
    if out is not None:
        save_figure(figure, out)
    return figure


def particle_colour(index: int) -> str:
    """The colour of particle ``index`` in every figure and animation."""
    return CURVE_STYLES[index % len(CURVE_STYLES)][0]


def _draw_particles(paths, phase, z: Tensor, basis: Tensor | None, line: dict) -> None:
    """Paths and phase curves of every particle of one trajectory ``z: (T, 2, N, D)``."""
    q, p = project_to_plane(z[:, 0], basis), project_to_plane(z[:, 1], basis)  # (T, N, 2)
    for i in range(z.shape[2]):
        style = {"color": particle_colour(i), **line}
        start = {"color": particle_colour(i), "marker": PARTICLE_MARKERS[i % len(PARTICLE_MARKERS)], "markersize": 6}
        paths.plot(q[:, i, 0], q[:, i, 1], **style)
        paths.plot(q[:1, i, 0], q[:1, i, 1], **start)
        phase.plot(q[:, i, 0], p[:, i, 0], **style)
        phase.plot(q[:1, i, 0], p[:1, i, 0], **start)
