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

from .version import __version__
from .data import DEFAULT_CHUNK, Windows
from .diagnostics import bounded_relative_error, conservation_report
from .io import Trajectories
from .rollouts import rollout
from .training import window_mse

#: windows scored by :func:`evaluate` (a seeded subset when the file holds more)
EVALUATION_WINDOWS = 2000


def default_method(model: Any) -> str:
    """Leapfrog for separable Hamiltonians; rk4 for the rest."""
    return "leapfrog" if getattr(model, "separable", False) else "rk4"


def rollout_errors(model: Any, truth: Trajectories, *, method: str | None = None,
                   dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Roll ``model`` out from the true initial states over the file's times.

    Returns the predicted trajectory ``(B, T, 2, N, D)`` and the bounded relative error ``(B, T)``.
    """
    predicted = rollout(model, truth.z[:, 0], truth.params, truth.n_times - 1, float(truth.meta["dt"]),
                        method=method or default_method(model), dtype=dtype)
    return predicted, bounded_relative_error(predicted, truth.z.to(dtype))


def evaluate(model: Any, truth: Trajectories, *, chunk: int = DEFAULT_CHUNK, method: str | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Every headline number for one model on one trajectory file, as a JSON-ready dict.

    ``window_mse``: mean squared error over ``chunk``-state windows, integrated with rk4 as in
    training, in the model's own dtype (``window_mse_with_initial``: the paper code's convention). ``rollout_error``: bounded
    relative error over the whole horizon in float64 with ``method`` (default: leapfrog for
    separable models, else rk4): its mean over systems at every time, the geometric mean over time
    and the final value. ``drift``: the largest relative change of linear and angular momentum and
    of the true energy along the rollout (median and maximum over systems).
    """
    windows = Windows(truth, chunk, max_windows=EVALUATION_WINDOWS if truth.n_systems * (truth.n_times - chunk + 1)
                      > EVALUATION_WINDOWS else None, seed=seed)
    # a learned model is scored in its own dtype; a true system (no weights) in float64
    model_dtype = next(model.parameters()).dtype if isinstance(model, nn.Module) else torch.float64
    scores = window_mse(model, windows, float(truth.meta["dt"]), dtype=model_dtype)
    predicted, error = rollout_errors(model, truth, method=method)
    curve = error.mean(0)
    report = conservation_report(predicted, truth.system().hamiltonian, truth.params)
    return {
        "n_systems": truth.n_systems,
        "window_mse": scores["mse"],
        "window_mse_with_initial": scores["mse_with_initial"],
        "rollout_method": method or default_method(model),
        "rollout_error": {
            "time": truth.t.tolist(),
            "mean_over_systems": curve.tolist(),
            "geometric_mean_over_time": geometric_mean(curve[1:]),
            "final": float(curve[-1]),
        },
        "drift": {name: {"median": float(values.median()), "max": float(values.max())}
                  for name, values in report.items()},
    }


def geometric_mean(values: Tensor) -> float:
    """``exp(mean(log x))``, ignoring exact zeros (which a perfect prediction gives at t = 0)."""
    positive = values[values > 0]
    return math.exp(float(positive.log().mean())) if positive.numel() else 0.0


def predicted_trajectories(model: Any, data: Trajectories, *, model_config: dict, steps: int | None = None,
                           dt: float | None = None, method: str | None = None,
                           dtype: torch.dtype = torch.float64, checkpoint: str | None = None) -> Trajectories:
    """Roll ``model`` out from every initial state of ``data`` and package the result as a
    trajectory file's contents (schema 1): the system of ``data`` in ``meta`` (so true energy can
    be measured), plus the model (``model_config``, a label), integrator, dtype and checkpoint.
    ``steps`` and ``dt`` default to the data's own."""
    steps = data.n_times - 1 if steps is None else steps
    dt = float(data.meta["dt"]) if dt is None else dt
    method = method or default_method(model)
    z = rollout(model, data.z[:, 0], data.params, steps, dt, method=method, dtype=dtype)
    meta = {"system": data.meta["system"], "system_settings": data.meta["system_settings"], "dt": dt,
            "hamnet_version": __version__,
            "steps": steps, "model": model_label(model_config), "model_config": model_config, "method": method,
            "dtype": str(dtype).removeprefix("torch."), "checkpoint": checkpoint}
    t = torch.arange(steps + 1, dtype=torch.float64) * dt
    return Trajectories(t, z.double(), data.params, meta)


def model_label(config: dict) -> str:
    """A short name for a model config, e.g. ``hlieconv SO2``."""
    return f"{config['name']} {config['group']}" if config["name"] == "hlieconv" else config["name"]
