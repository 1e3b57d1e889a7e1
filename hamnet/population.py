"""A population of systems in one figure: the median curve, a percentile band and the worst system.

Note to the reader: a file holds ``B`` systems, and a quantity measured along it is one curve per
system, ``values: (B, T)``. Conservation and error figures (:mod:`hamnet.plots`) draw, per rollout,
the median over systems as a line in the rollout's style, the band between the 10th and 90th
percentiles (:data:`BAND`, numpy's linear interpolation) shaded in the same colour, and the worst
system, the one whose curve reaches the highest value in that panel (so it may differ between
panels), as a thin line labelled with its index. Two runaway systems then show as the worst line
and the top of the band without hiding the typical ones, which the median shows. A rollout of one
system is its own curve. Given ``systems``, a figure draws just those systems, each as its own
curve, at most :data:`MAX_SYSTEMS_SHOWN` of them.

Curves go on a log axis, where an exact zero is drawn at :data:`ZERO_FLOOR`; the band and the median
are computed first and floored after.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

__all__ = ["BAND", "MAX_SYSTEMS_SHOWN", "ZERO_FLOOR", "PopulationSummary", "check_band", "check_systems",
           "summarize_population"]

#: on a log axis an exact zero (e.g. a perfectly conserved momentum) is drawn at this value
ZERO_FLOOR = 1e-20
#: the percentiles across systems that bound the shaded band
BAND = (10.0, 90.0)
BAND_ALPHA = 0.2
#: the worst system's curve: thin and solid, under the median's markers
WORST_LINE = {"linestyle": "-", "linewidth": 0.8, "alpha": 0.9}
#: ``systems`` draws at most this many systems one by one (a legend entry each); the band summarises any number
MAX_SYSTEMS_SHOWN = 10


@dataclass(frozen=True)
class PopulationSummary:
    """What a figure draws of a population of curves: ``median``, ``low`` and ``high`` (the band's
    percentiles), each ``(T,)`` float64, and ``worst``, the index of the system whose curve reaches the
    highest value (the first such system on a tie)."""

    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    worst: int


def check_band(band: Sequence[float]) -> tuple[float, float]:
    """``band`` as two percentiles ``0 <= low < high <= 100``, else ``ValueError`` in one line."""
    try:
        low, high = (float(value) for value in band)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0 <= low < high <= 100:  # NaN fails too
        raise ValueError(f"band must be two percentiles 0 <= low < high <= 100, got {band!r}")
    return low, high


def check_systems(systems: Sequence[int], n_systems: int, what: str = "the rollout") -> list[int]:
    """``systems`` as a list of distinct indices in ``0 .. n_systems - 1``, else ``ValueError`` in one
    line naming ``what`` holds the systems."""
    try:
        chosen = [operator.index(index) for index in systems]
    except TypeError:
        raise ValueError(f"system indices must be integers, got {list(systems)!r}") from None
    if not chosen:
        raise ValueError("no systems chosen; give at least one index, or none for the median and band over all")
    if len(chosen) > MAX_SYSTEMS_SHOWN:
        raise ValueError(f"{len(chosen)} systems chosen; at most {MAX_SYSTEMS_SHOWN} are drawn one by one "
                         "(choose none for the median and band over all of them)")
    repeated = sorted({index for index in chosen if chosen.count(index) > 1})
    if repeated:
        raise ValueError(f"system {repeated[0]} is chosen more than once; give each index once")
    for index in chosen:
        if not 0 <= index < n_systems:
            raise ValueError(f"system {index} is out of range: {what} has {n_systems} "
                             f"system{'s' if n_systems != 1 else ''}, indices 0 to {n_systems - 1}")
    return chosen


def summarize_population(values: Tensor | np.ndarray, band: Sequence[float] = BAND) -> PopulationSummary:
    """Median, ``band`` percentiles and worst system of ``values: (B, T)``, one curve per system."""
    low, high = check_band(band)
    curves = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[0] == 0:
        raise ValueError(f"expected per-system curves of shape (B, T) with B >= 1, got {curves.shape}")
    lower, median, upper = np.percentile(curves, [low, 50.0, high], axis=0)
    return PopulationSummary(median, lower, upper, int(np.argmax(curves.max(axis=1))))


def floored(values) -> np.ndarray:
    """``values`` as float64 with every value below :data:`ZERO_FLOOR` raised to it."""
    return np.maximum(np.asarray(values, dtype=np.float64), ZERO_FLOOR)


def draw_curves(ax, t: np.ndarray, values: Tensor, label: str, styles: Sequence[dict],
                systems: list[int] | None, band: Sequence[float] = BAND) -> int:
    """Draw ``values: (B, T)`` at times ``t: (T,)`` on ``ax``: the population (median in ``styles[0]``,
    band and worst system in its colour) or, with ``systems``, each of those systems as its own curve,
    in ``styles[0]``, ``styles[1]``, ... Returns how many styles it used. Artists carry the gids
    ``median``, ``band``, ``worst``, ``worst-label`` and ``system``, and legend labels only on curves
    that stand for a rollout or a system."""
    curves = values.detach().cpu().double().numpy()
    if systems is not None:
        for style, index in zip(styles, systems):
            ax.plot(t, floored(curves[index]), label=f"{label}, system {index}", gid="system", **style)
        return len(systems)
    style = styles[0]
    if curves.shape[0] == 1:
        ax.plot(t, floored(curves[0]), label=label, gid="median", **style)
        return 1
    summary = summarize_population(curves, band)
    colour = style["color"]
    ax.fill_between(t, floored(summary.low), floored(summary.high), color=colour, alpha=BAND_ALPHA,
                    linewidth=0, gid="band")
    worst = floored(curves[summary.worst])
    ax.plot(t, worst, color=colour, gid="worst", **WORST_LINE)
    peak = int(np.argmax(worst))
    right_half = peak > len(t) / 2  # the label runs away from the nearer edge
    ax.annotate(f"worst: system {summary.worst}", (t[peak], worst[peak]), xytext=(-3 if right_half else 3, 3),
                textcoords="offset points", ha="right" if right_half else "left", va="bottom", fontsize=7,
                color=colour, gid="worst-label")
    ax.plot(t, floored(summary.median), label=label, gid="median", **style)
    return 1


def add_legend(figure: Figure, ax, population: bool, band: Sequence[float] = BAND) -> None:
    """The figure's legend below its panels: ``ax``'s labelled curves and, for a population, what the
    shading and the thin line mean."""
    handles, names = ax.get_legend_handles_labels()
    if population:
        low, high = check_band(band)
        handles += [Patch(color="0.5", alpha=2 * BAND_ALPHA, linewidth=0), Line2D([], [], color="0.3", **WORST_LINE)]
        names += [f"{low:g}th-{high:g}th percentile over systems (line: median)", "worst system (labelled)"]
    figure.legend(handles, names, loc="outside lower center", ncols=min(len(names), 3), frameon=False)


def describe(systems: list[int] | None, band: Sequence[float] = BAND, population: bool = True) -> str:
    """What a figure shows of the population, for its title (``population=False``: one system per rollout)."""
    if systems is None and not population:
        return "one system"
    if systems is not None:
        return ("system " if len(systems) == 1 else "systems ") + ", ".join(map(str, systems))
    low, high = check_band(band)
    return f"median over systems, {low:g}-{high:g}th percentile band, worst system thin"
