"""Settings a training run decides from its data when it starts: the LieConv kernel bound, the sub-steps.

Note to the reader: both take a :class:`hamnet.training.TrainConfig` and return it with the setting
filled in, so the configuration saved in the run folder and its checkpoints holds the number used, and
a resumed run (whose stored configuration must equal the one it is given) decides it the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import model_from_checkpoint
from .data import Windows, suggest_substeps
from .models import MODELS, build_model

__all__ = ["DEFAULT_KERNEL_BOUND_FACTOR", "KERNEL_BOUND_SAMPLE_WINDOWS", "with_kernel_bound", "with_substeps"]

log = logging.getLogger(__name__)

#: a LieConv kernel's bound, as a multiple of the largest kernel input in the training windows: twice
#: the data's reach leaves the data almost unbent (c tanh(x / c) is within 8% of x up to c / 2) and
#: measured against no bound in benchmarks/results/divergence_escape.md
DEFAULT_KERNEL_BOUND_FACTOR = 2.0
#: training windows (evenly spaced) whose states decide the kernel bound
KERNEL_BOUND_SAMPLE_WINDOWS = 4096


def with_kernel_bound(config: Any, windows: Windows, resumed: Path | None = None, *,
                      start: nn.Module | None = None) -> Any:
    """``config`` with its model's ``kernel_bound`` decided: as given; the ``resumed`` checkpoint's, when
    the run continues (what it decided at its start; ``init_from`` may be gone by then); the
    ``init_from`` checkpoint's (``start``: its model, if already loaded); or
    ``kernel_bound_factor`` times the largest kernel input over (up to
    :data:`KERNEL_BOUND_SAMPLE_WINDOWS` evenly spaced of) the training ``windows``. Unchanged for
    models without a LieConv kernel."""
    model = config.model
    bounded = hasattr(MODELS.get(model.name), "kernel_input_extent")
    if model.kernel_bound is not None or config.kernel_bound_factor is None or not bounded:
        return config
    if resumed is not None or config.init_from is not None:
        if resumed is not None or start is None:
            start = model_from_checkpoint(resumed or config.init_from)[0]
        bound = start.config.kernel_bound
    else:
        network = build_model(model, torch.Generator().manual_seed(0))
        network = network.to(device=windows.data.z.device, dtype=windows.data.z.dtype)
        picked = torch.linspace(0, len(windows) - 1, min(len(windows), KERNEL_BOUND_SAMPLE_WINDOWS),
                                device=windows.data.z.device).round().long()
        extent = network.kernel_input_extent(windows[picked][0][:, :, 0].flatten(0, 1))  # every picked state
        bound = float(f"{config.kernel_bound_factor * extent:.4g}") if extent > 0 else None
    return dataclasses.replace(config, model=dataclasses.replace(model, kernel_bound=bound))


def with_substeps(config: Any, windows: Windows, start: dict | None = None) -> Any:
    """``config`` with ``substeps="auto"`` replaced by a number: that of the checkpoint a run starts from
    (``start``: its contents, for ``init_from``; a model keeps the sub-steps it was trained with), else
    the one chosen from the training systems of ``windows`` (:func:`hamnet.data.suggest_substeps`).
    Unchanged when ``substeps`` is a number."""
    if config.substeps != "auto":
        return config
    if start is not None:  # a checkpoint from before sub-steps existed was trained with one
        chosen = (start.get("train_config") or {}).get("substeps", 1)
        chosen = chosen if isinstance(chosen, int) and not isinstance(chosen, bool) and chosen >= 1 else 1
    else:
        chosen = suggest_substeps(windows.data, windows.system_index.unique().cpu())
        log.info("substeps auto: %d integration steps per stored interval, chosen from the training data", chosen)
    return dataclasses.replace(config, substeps=chosen)
