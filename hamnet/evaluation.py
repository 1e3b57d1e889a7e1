"""Scoring a trained model against ground truth: window error, rollout error, conservation.

Note to the reader: ``truth`` is a :class:`~hamnet.io.Trajectories` with ``z: (B, T, 2, N, D)``.
A rollout error compares states at each time by the bounded relative error of
:func:`hamnet.diagnostics.bounded_relative_error`, which lies in ``[0, 1]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .data import DEFAULT_CHUNK, Windows
from .diagnostics import bounded_relative_error, conservation_report
from .io import SystemUnavailable, Trajectories
from .loss import window_mse
from .region import check_region, region_exits
from .rollouts import Rollout, default_method, rollout_systems, trained_substeps

#: windows scored by :func:`evaluate` (a seeded subset when the file holds more)
EVALUATION_WINDOWS = 2000
#: a prediction is valid while its bounded relative error stays at or below this (the valid prediction
#: time is when it first exceeds it)
VALID_ERROR = 0.1


def rollout_errors(model: Any, truth: Trajectories, *, method: str | None = None,
                   dtype: torch.dtype = torch.float64, substeps: int | None = None,
                   compile: bool = False) -> tuple[Rollout, Tensor]:
    """Roll ``model`` out from the true initial states over the file's times (``substeps`` integration
    steps per interval, as the model was trained; ``compile``: see :func:`hamnet.rollouts.rollout`).

    Returns the :class:`~hamnet.rollouts.Rollout` (``z: (B, T, 2, N, D)``, ``diverged_at: (B,)``) and
    the bounded relative error ``(B, T)``, which is 1 (unrelated) from a system's divergence on.
    """
    result = rollout_systems(model, truth.z[:, 0], truth.params, truth.n_times - 1, float(truth.meta["dt"]),
                             method=method or default_method(model), dtype=dtype, substeps=substeps, compile=compile)
    return result, bounded_errors(result, truth)


def bounded_errors(result: Rollout, truth: Trajectories) -> Tensor:
    """The bounded relative error ``(B, T)`` of ``result`` against ``truth``, 1 from a system's divergence on."""
    error = bounded_relative_error(result.z, truth.z.to(result.z.dtype))
    steps = torch.arange(truth.n_times, device=error.device)
    after = (result.diverged_at.unsqueeze(-1) >= 0) & (steps >= result.diverged_at.unsqueeze(-1))
    return error.masked_fill(after, 1.0)


def valid_prediction_time(error: Tensor, t: Tensor, threshold: float = VALID_ERROR) -> Tensor:
    """Per system, the time until the bounded relative error ``error: (B, T)`` first exceeds
    ``threshold`` (``t: (T,)``); a system that never does gets the whole horizon ``t[-1]`` (a lower
    bound: the horizon was too short to see it fail). Returns ``(B,)``."""
    exceeded = error > threshold
    first = exceeded.int().argmax(-1)
    return torch.where(exceeded.any(-1), t[first].to(error.dtype), t[-1].to(error.dtype))


def _distribution(values: Tensor) -> dict[str, float]:
    quartiles = torch.quantile(values.double(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    return dict(zip(("min", "q1", "median", "q3", "max"), map(float, quartiles)))


def evaluate(model: Any, truth: Trajectories, *, chunk: int = DEFAULT_CHUNK, method: str | None = None,
             seed: int = 0, system: Any = None, window_method: str = "rk4", substeps: int | None = None,
             region: dict | None = None, compile: bool = False) -> dict[str, Any]:
    """Every headline number for one model on one trajectory file, as a JSON-ready dict.

    ``window_mse``: mean squared error over ``chunk``-state windows, integrated with ``window_method``
    (pass the training run's, as ``hamnet evaluate`` does; rk4 is the paper's) in the model's own dtype
    (``window_mse_with_initial``: the paper code's convention). ``substeps``: integration steps per
    stored interval, in windows and rollouts (None: the model's ``trained_substeps``, its training run's
    for a model read from a checkpoint). ``compile``: the rollout's forces compiled
    (:func:`hamnet.rollouts.rollout`), recorded as ``"compiled": true``.
    ``region``: the model's training region (its checkpoint's ``data["region"]``), for ``left_region``.
    ``rollout_error``: bounded relative error over the whole horizon in float64 with ``method``
    (default: leapfrog for separable models, else rk4): its mean over systems at every time, the
    geometric mean over time and the final value. ``valid_prediction_time``: per system the time until
    that error first exceeds ``VALID_ERROR`` (0.1), its distribution over systems, and how many never
    exceeded it within the horizon. ``divergence``: the systems whose rollout diverged (see
    :func:`hamnet.rollouts.rollout_systems`), with their steps, and the rate. ``drift``: the largest
    relative change of linear and angular momentum and of the true energy along the rollouts of the
    systems that did not diverge (median, maximum and ``per_system``, None where a rollout diverged).
    The true energy is that of ``system``, or of the file's own system when it is registered; a file
    made by a user's own system class (which is never imported because a file names it) gets no energy
    drift, and ``notes`` says so.
    """
    if not isinstance(truth, Trajectories):
        raise TypeError(f"truth must be a hamnet.Trajectories (hamnet.load_trajectories(path) reads a file), got "
                        f"{type(truth).__name__}")
    substeps = trained_substeps(model) if substeps is None else substeps
    windows = Windows(truth, chunk, max_windows=EVALUATION_WINDOWS if truth.n_systems * (truth.n_times - chunk + 1)
                      > EVALUATION_WINDOWS else None, seed=seed)
    # a learned model is scored in its own dtype; a true system (no weights) in float64
    model_dtype = next(model.parameters()).dtype if isinstance(model, nn.Module) else torch.float64
    scores = window_mse(model, windows, float(truth.meta["dt"]), method=window_method, substeps=substeps,
                        dtype=model_dtype)
    result, _ = rollout_errors(model, truth, method=method, substeps=substeps, compile=compile)
    return {"n_systems": truth.n_systems, "window_mse": scores["mse"],
            "window_mse_with_initial": scores["mse_with_initial"], "window_method": window_method,
            "substeps": substeps, **({"compiled": True} if compile else {}),
            "rollout_method": method or default_method(model),
            **score_rollout(result, truth, system=system, region=region)}


def score_rollout(result: Rollout, truth: Trajectories, *, system: Any = None,
                  region: dict | None = None) -> dict[str, Any]:
    """The scores of :func:`evaluate` that need only a rollout: ``rollout_error``,
    ``valid_prediction_time``, ``divergence``, ``drift`` and, with the model's training ``region``,
    ``left_region`` (the systems whose rollout left it, each with its first step outside: see
    :mod:`hamnet.region`), and ``notes``, for ``result`` (``z: (B, T, 2, N, D)`` and ``diverged_at: (B,)``,
    from ``truth``'s initial states on its times; a model's, or one read back from a rollout file)."""
    error = bounded_errors(result, truth)
    curve = error.mean(0)
    vpt = valid_prediction_time(error, truth.t)
    notes = []
    if system is None:
        try:
            system = truth.system()
        except SystemUnavailable as reason:
            notes.append(f"true-energy drift not measured: {reason}")
    healthy = result.diverged_at < 0
    if not bool(healthy.any()):
        notes.append("every rollout diverged: no drift to measure")
        healthy = torch.ones_like(healthy)  # the held states still give finite (if meaningless) figures
    report = conservation_report(result.z[healthy], system.hamiltonian if system is not None else None,
                                 {k: v[healthy] for k, v in truth.params.items()})
    diverged = result.diverged
    return {
        "rollout_error": {
            "time": truth.t.tolist(),
            "mean_over_systems": curve.tolist(),
            "geometric_mean_over_time": geometric_mean(curve[1:]),
            "final": float(curve[-1]),
        },
        "valid_prediction_time": {"threshold": VALID_ERROR, **_distribution(vpt),
                                  "never_exceeded": int((error <= VALID_ERROR).all(-1).sum()),
                                  "per_system": vpt.tolist()},
        "divergence": {"rate": len(diverged) / truth.n_systems, "systems": diverged,
                       "steps": [int(result.diverged_at[b]) for b in diverged]},
        "drift": {name: {"median": float(values.median()), "max": float(values.max()),
                         "per_system": _per_system(values, healthy)}
                  for name, values in report.items()},
        **_left_region(result, region, notes),
        **({"notes": notes} if notes else {}),
    }


def _per_system(values: Tensor, healthy: Tensor) -> list[float | None]:
    """``values`` of the ``healthy`` systems (a ``(B,)`` mask) put back among all ``B``, None for the others."""
    every = [None] * healthy.numel()
    for index, value in zip(healthy.nonzero().squeeze(-1).tolist(), values.tolist()):
        every[index] = value
    return every


def _left_region(result: Rollout, region: dict | None, notes: list[str]) -> dict[str, Any]:
    """``{"left_region": {...}}`` for a rollout of a model whose training region is known, else a note."""
    region = check_region(region) if region is not None else None
    if region is None:
        notes.append("no training region recorded for this model (a checkpoint of an earlier hamnet, or no model): "
                     "leaving the data is not reported")
        return {}
    first, reasons = region_exits(result.z, region)
    left = sorted((b for b in range(len(first)) if first[b] >= 0), key=lambda b: (int(first[b]), b))
    return {"left_region": {"count": len(left), "systems": left, "steps": [int(first[b]) for b in left],
                            "what": [reasons[b] for b in left], "region": region}}


def geometric_mean(values: Tensor) -> float:
    """``exp(mean(log x))``, ignoring exact zeros (which a perfect prediction gives at t = 0)."""
    positive = values[values > 0]
    return math.exp(float(positive.log().mean())) if positive.numel() else 0.0
