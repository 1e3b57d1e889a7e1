"""Checkpoints: written atomically, read with ``weights_only=True``, refused clearly when foreign.

A checkpoint is a dict of tensors and plain Python values only, so ``torch.load(weights_only=True)``
reads it and a file whose pickle would construct arbitrary objects (and so could run code) is
refused. Layout (``CHECKPOINT_FORMAT``, version ``CHECKPOINT_VERSION``)::

    {"format": "hamnet-checkpoint", "version": 1, "hamnet_version": str,
     "model_config": dict, "train_config": dict, "model": state_dict, "optimizer": state_dict,
     "scheduler": state_dict, "epoch": int (epochs completed), "best_validation": float,
     "rng": {"shuffle": ByteTensor}, "data": dict (what the model was trained on)}

``epoch`` is 0 in the checkpoint a run writes before training (its initial state). ``data`` describes
the training file (path, system, sizes, dt) and holds its ``sha256``, so a resume can tell that the
file changed; checkpoints of earlier hamnet versions lack it.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .version import __version__
from .paths import atomic_path
from .models import ModelConfig, build_model

CHECKPOINT_FORMAT = "hamnet-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what is wrong."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (see the module docstring) atomically to ``path``.

    A failed write (a full disk: ``torch.save`` raises ``RuntimeError`` or ``OSError``) raises
    ``OSError("cannot write PATH: reason")`` and leaves any previous file at ``path`` as it was.
    """
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "hamnet_version": __version__, **state}
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as error:
        raise _write_failure(path, error) from error


def _write_failure(path: str | os.PathLike, error: Exception) -> OSError:
    """``OSError("cannot write PATH: reason")``, however the failure was worded (an ``OSError`` that
    already names the path, or torch's ``[enforce fail at ...] PytorchStreamWriter failed ...``)."""
    reason = (error.strerror if isinstance(error, OSError) and error.strerror else str(error)).splitlines()[0]
    reason = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", reason).removeprefix(f"cannot write {path}: ")
    failure = OSError(f"cannot write {path}: {reason}")
    failure.errno = getattr(error, "errno", None)  # kept for callers that test it; the message stays one line
    return failure


#: the pretrained models shipped with hamnet: ``NAME.pt`` and its model card ``NAME.md`` in this folder
PRETRAINED = Path(__file__).parent / "pretrained"
PRETRAINED_PREFIX = "pretrained:"


def pretrained_models() -> dict[str, Path]:
    """The shipped pretrained checkpoints by name (``"springs-so2"`` -> its ``.pt``)."""
    return {path.stem: path for path in sorted(PRETRAINED.glob("*.pt"))}


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """The checkpoint file ``spec`` names: a path, or the name of a pretrained model (``springs-so2`` or
    ``pretrained:springs-so2``; a bare name counts only when no file of that name exists)."""
    path = Path(spec)
    text = str(spec)
    if text.startswith(PRETRAINED_PREFIX) or (not path.exists() and text in pretrained_models()):
        name = text.removeprefix(PRETRAINED_PREFIX)
        known = pretrained_models()
        if name not in known:
            raise CheckpointError(f"no pretrained model {name!r}; shipped: {', '.join(known) or 'none'} "
                                  "(hamnet pretrained lists them with their model cards)")
        return known[name]
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint (a path, or a pretrained model's name: :func:`resolve_checkpoint`);
    raises :class:`CheckpointError` naming the problem."""
    path = resolve_checkpoint(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file (RUN/best.pt or RUN/last.pt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (nor a pretrained model: "
                              f"{', '.join(pretrained_models()) or 'none shipped'})")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch checkpoint (truncated, corrupt or another kind of file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused, loading it would construct arbitrary Python objects (and could run code); "
            "hamnet checkpoints hold only tensors and plain values"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({str(error).splitlines()[0]})") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a hamnet checkpoint (a foreign file; expected one written by hamnet train)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')!r}; this hamnet reads version {CHECKPOINT_VERSION}"
        )
    for key in ("model_config", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return state


def model_from_checkpoint(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model (float32, eval mode) and the checkpoint it came from.

    A checkpoint names its model and group; a name that is not registered in this process (your
    own model or group) is refused with a line saying how to register it. Nothing is imported
    because a checkpoint names it.
    """
    state = load_checkpoint(path)
    try:
        config = ModelConfig.from_dict(state["model_config"])
    except ValueError as error:
        unregistered = str(error).startswith(("unknown model", "unknown group"))
        hint = "; if it is your own, load the file that registers it (--plugin FILE.py)" if unregistered else ""
        raise CheckpointError(f"{path}: {str(error).splitlines()[0]}{hint}") from error
    except TypeError as error:
        raise CheckpointError(f"{path}: malformed model config ({error})") from error
    try:
        model = build_model(config)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: model does not match its config ({str(error).splitlines()[0]})") from error
    return model.eval(), state
