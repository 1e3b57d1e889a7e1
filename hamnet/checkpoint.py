"""Checkpoints: written atomically, read with ``weights_only=True``, refused clearly when foreign.

A checkpoint is a dict of tensors and plain Python values only, so ``torch.load(weights_only=True)``
reads it and a file whose pickle would construct arbitrary objects (and so could run code) is
refused. Layout (``CHECKPOINT_FORMAT``, version ``CHECKPOINT_VERSION``)::

    {"format": "hamnet-checkpoint", "version": 1, "hamnet_version": str,
     "model_config": dict, "train_config": dict, "model": state_dict, "optimizer": state_dict,
     "scheduler": state_dict, "epoch": int (epochs completed), "best_validation": float,
     "lowest_validation": float (the lowest validation window MSE; absent in older checkpoints),
     "lowest_train_loss": float (the lowest epoch training loss; absent in older checkpoints),
     "rng": {"shuffle": ByteTensor}, "data": dict (what the model was trained on)}

``epoch`` is 0 in the checkpoint a run writes before training (its initial state). ``data`` describes
the training file (path, sha256, dt and its kind, :func:`hamnet.provenance.data_kind`: system, protocol,
dimension, particle count, parameters and settings), so a resume can tell that the file changed and
``rollout`` and ``evaluate`` that a file is of another kind; a run started from other weights adds
``init_from`` (:func:`checkpoint_provenance`). Checkpoints of earlier hamnet versions lack some of
this, which then counts as unknown.

A checkpoint is named by a path or by a pretrained model's name (:func:`locate_checkpoint`); files
that record one (rollouts, metrics) record it as :attr:`CheckpointSource.reference` with its sha256,
and :func:`check_recorded_checkpoint` refuses a file of that name that is not the same checkpoint.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .version import __version__
from .paths import atomic_path
from .models import ModelConfig, build_model
from .provenance import file_sha256

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint as named by a user: ``path``, the file; ``reference``, how a file that records it
    names it again, unambiguously (``pretrained:NAME`` for a shipped model; otherwise the path as given,
    written ``./NAME`` where the bare name is also a pretrained model's); ``pretrained``, the shipped
    model's name; ``shadows``, the pretrained name that a local path given bare hides."""

    path: Path
    reference: str
    pretrained: str | None = None
    shadows: str | None = None


def locate_checkpoint(spec: str | os.PathLike) -> CheckpointSource:
    """Where the checkpoint ``spec`` names is: a path, or the name of a pretrained model (``springs-so2``
    or ``pretrained:springs-so2``). ``pretrained:NAME`` is always the shipped model; a bare name is a
    local file or folder when one of that name exists (it wins, and :func:`load_checkpoint` says so
    aloud), else the shipped model."""
    text = str(spec)
    known = pretrained_models()
    if text.startswith(PRETRAINED_PREFIX) or (text in known and not Path(text).exists()):
        name = text.removeprefix(PRETRAINED_PREFIX)
        if name not in known:
            raise CheckpointError(f"no pretrained model {name!r}; shipped: {', '.join(known) or 'none'} "
                                  "(hamnet pretrained lists them with their model cards)")
        return CheckpointSource(known[name], PRETRAINED_PREFIX + name, pretrained=name)
    shadows = text if text in known else None
    return CheckpointSource(Path(spec), f"./{text}" if shadows else text, shadows=shadows)


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """The checkpoint file ``spec`` names (:func:`locate_checkpoint`)."""
    return locate_checkpoint(spec).path


def checkpoint_provenance(source: CheckpointSource) -> dict[str, Any]:
    """What a file made with a checkpoint records of it: ``checkpoint`` (its reference),
    ``checkpoint_sha256`` and ``pretrained`` (``{"name", "hamnet_version"}`` of a shipped model, the
    version of the hamnet that ships it; None for a file of the user's)."""
    pretrained = None if source.pretrained is None else {"name": source.pretrained, "hamnet_version": __version__}
    return {"checkpoint": source.reference, "checkpoint_sha256": file_sha256(source.path), "pretrained": pretrained}


def made_from(checkpoint: str | os.PathLike | Mapping[str, Any], data: str | os.PathLike, *,
              data_sha256: str | None = None) -> dict[str, Any]:
    """What a file made with the checkpoint ``checkpoint`` from the trajectory file ``data`` records of
    both: :func:`checkpoint_provenance`, ``data`` (its path) and ``data_sha256`` (computed unless given).
    ``checkpoint`` is a path or pretrained name, or the record of one that a file already holds (a
    rollout's ``meta``), whose keys are taken as they are (None where it lacks one)."""
    if isinstance(checkpoint, Mapping):
        record = {key: checkpoint.get(key) for key in ("checkpoint", "checkpoint_sha256", "pretrained")}
    else:
        record = checkpoint_provenance(locate_checkpoint(checkpoint))
    return {**record, "data": str(data), "data_sha256": file_sha256(data) if data_sha256 is None else data_sha256}


def check_recorded_checkpoint(meta: Mapping[str, Any], where: str) -> tuple[CheckpointSource, bool]:
    """The checkpoint a file (``where``, whose ``meta`` records it as :func:`checkpoint_provenance` does)
    was made with, and whether it is verified: refused in one line when the file that name leads to now
    is missing or is not the same checkpoint (another sha256). A file written before hamnet recorded
    the sha256 cannot be checked: its checkpoint comes back unverified (False), for the caller to say so."""
    source = locate_checkpoint(meta["checkpoint"])
    if not source.path.is_file():
        raise CheckpointError(f"{where} was made with the checkpoint {meta['checkpoint']}, which is not a file here "
                              "(paths are as given to hamnet rollout: run from the same folder)")
    recorded = meta.get("checkpoint_sha256")
    if recorded is None:
        return source, False
    now = file_sha256(source.path)
    if now != recorded:
        pretrained = meta.get("pretrained")
        then = pretrained.get("hamnet_version") if isinstance(pretrained, dict) else None
        shipped = f" (shipped with hamnet {then}; this is hamnet {__version__})" if source.pretrained and then else ""
        raise CheckpointError(f"{where} was made with the checkpoint {meta['checkpoint']} of sha256 "
                              f"{str(recorded)[:12]}..., but {source.path} is another file now (sha256 {now[:12]}...)"
                              f"{shipped}; refused: it is not the model that made the file")
    return source, True


def _shadow_hint(source: CheckpointSource) -> str:
    """For a message about a local path that hides a pretrained model: how to name that model."""
    return (f" (it hides the pretrained model {source.shadows}: name that one pretrained:{source.shadows})"
            if source.shadows else "")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint (a path, or a pretrained model's name: :func:`locate_checkpoint`);
    raises :class:`CheckpointError` naming the problem. A local path that hides a pretrained model of
    its name is loaded and logged as a warning."""
    source = locate_checkpoint(path)
    state = _read(source.path, _shadow_hint(source))
    if source.shadows:
        log.warning("hamnet: warning: %s is the local file %s, not the pretrained model of that name (name that one "
                    "pretrained:%s; write %s for this file)", path, source.reference, source.shadows, source.reference)
    return state


def _read(path: Path, hint: str) -> dict[str, Any]:
    """The checked contents of the checkpoint file ``path``; ``hint`` ends the messages of a file that
    is no checkpoint at all."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file (RUN/best.pt or RUN/last.pt){hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (nor a pretrained model: "
                              f"{', '.join(pretrained_models()) or 'none shipped'})")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch checkpoint (truncated, corrupt or another kind of file){hint}")
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
        raise CheckpointError(f"{path}: not a hamnet checkpoint (a foreign file; expected one written by hamnet "
                              f"train){hint}")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')!r}; this hamnet reads version {CHECKPOINT_VERSION}"
        )
    for key in ("model_config", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return state


def model_from_checkpoint(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model (float32, eval mode) and the checkpoint it came from. ``model.trained_substeps``
    holds the integration steps per stored interval it was trained with (1 for a checkpoint without the
    record), which :func:`hamnet.rollouts.rollout` and :func:`hamnet.evaluation.evaluate` use by default.

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
    # the integration steps per stored interval it was trained with, which its rollouts take by default
    trained = (state.get("train_config") or {}).get("substeps", 1)
    model.trained_substeps = trained if isinstance(trained, int) and not isinstance(trained, bool) and trained >= 1 else 1
    return model.eval(), state
