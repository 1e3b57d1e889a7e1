"""``hamnet.fit``: train a model on a file or on trajectories in memory, in one call.

The short path of :func:`hamnet.training.train` for the common case: name the model and its group,
give any other setting by its name, and get the trained model back with its run folder and metrics.
What the model leaves to the data (dimension, particle count, features) is taken from the data.

Where the run goes: ``run_dir``, or by default a new folder ``runs/MODEL[-GROUP]-N`` under the working
directory (``runs/hlieconv-SE3-1``, then ``-2``, ...: the first number not taken), beside the work,
where ``tensorboard --logdir runs`` finds every run. Trajectories given in memory are written into the
run folder first, as ``data.npz``, so the run can be resumed and repeated from its ``config.toml`` like
any other.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import model_from_checkpoint
from .io import Trajectories, save_trajectories
from .models import ModelConfig
from .runs import RunFiles, read_metrics
from .training import TrainConfig, train

__all__ = ["DEFAULT_RUNS", "FitResult", "fit"]

#: the folder, under the working directory, that holds the runs of :func:`fit` given no ``run_dir``
DEFAULT_RUNS = Path("runs")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` made: ``model``, the trained model of ``best.pt`` (the epoch of the lowest
    validation score; float32, in eval mode), ``run_dir``, its run folder, ``config``, the configuration
    it trained with, resolved (dimension, particles, features, integrator, kernel bound, sub-steps),
    and ``metrics``, one dict per epoch as ``metrics.jsonl`` holds them."""

    model: nn.Module
    run_dir: Path
    config: TrainConfig
    metrics: list[dict[str, Any]]


def fit(data: str | os.PathLike | Trajectories, model: str = "hlieconv", group: str | None = None, *,
        run_dir: str | os.PathLike | None = None, device: str = "cpu", progress: bool | None = None,
        tensorboard: bool = False, **settings: Any) -> FitResult:
    """Train ``model`` (a name in :data:`hamnet.models.MODELS`) with symmetry ``group`` on ``data``, a
    trajectory file or a :class:`hamnet.io.Trajectories`, and return the :class:`FitResult`.

    ``settings``: any field of :class:`hamnet.training.TrainConfig` (``epochs=30``, ``lr=3e-3``, ...) or of
    :class:`hamnet.models.ModelConfig` (``width=64``, ``depth=2``, ...) by name; the rest keep their
    defaults. ``group`` None: the translations of the data's dimension. ``run_dir``: the run folder (default:
    a new ``runs/MODEL[-GROUP]-N``, see the module's notes). ``progress``: progress bars, None for where
    someone is likely watching (a terminal, a notebook); ``tensorboard``: metrics to TensorBoard as well
    (``hamnet[tensorboard]``); ``device``: ``"cpu"`` or ``"cuda"``. A setting that is not a field is a
    TypeError, as for any function; a bad value or bad data fails before anything is written.

    ``fit("lj.npz", "hlieconv", "SE3")`` is ``train(TrainConfig(model=ModelConfig(name="hlieconv",
    group="SE3")), "lj.npz", run_dir)`` followed by loading ``best.pt``.
    """
    config = _config(model, group, settings)
    folder = Path(run_dir) if run_dir is not None else _new_run_folder(model, group)
    made = not folder.exists()
    if isinstance(data, Trajectories):
        if not made and any(folder.iterdir()):
            raise ValueError(f"run folder {folder} exists and is not empty; fit writes the trajectories it is given "
                             "into a new run folder: choose another run_dir, or save them and pass the file")
        folder.mkdir(parents=True, exist_ok=True)
        data_path = RunFiles(folder).data
        save_trajectories(data_path, data)
    else:
        data_path = Path(data)
    try:
        train(config, data_path, folder, device=device, progress=progress, tensorboard=tensorboard)
    except BaseException:
        if made and not RunFiles(folder).last.exists():  # nothing trained: leave nothing behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    files = RunFiles(folder)
    trained, state = model_from_checkpoint(files.best)
    return FitResult(trained.eval(), folder, TrainConfig.from_dict(state["train_config"]), read_metrics(files.metrics))


def _config(model: str, group: str | None, settings: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of :func:`fit`'s arguments; a setting that is neither a TrainConfig nor a ModelConfig
    field is a TypeError naming it."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"name", "group"}
    unknown = sorted(set(settings) - train_fields - model_fields)
    if unknown:
        raise TypeError(f"fit() got unexpected settings {unknown}; it takes the fields of TrainConfig and ModelConfig "
                        f"(the model's name and group are its arguments model and group)")
    network = ModelConfig(name=model, group=group, **{k: v for k, v in settings.items() if k in model_fields})
    return TrainConfig(model=network, **{k: v for k, v in settings.items() if k in train_fields})


def _new_run_folder(model: str, group: str | None) -> Path:
    """``runs/MODEL[-GROUP]-N`` with the first N from 1 that is not taken."""
    base = "-".join(part for part in (model, group) if part)
    number = 1
    while (DEFAULT_RUNS / f"{base}-{number}").exists():
        number += 1
    return DEFAULT_RUNS / f"{base}-{number}"
