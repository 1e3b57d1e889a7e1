"""Where a file came from and what it holds: fingerprints, the kind of a trajectory file, rollout files.

Every record hamnet writes says what it was made from: the sha256 of each input file
(:func:`file_sha256`; :mod:`hamnet.checkpoint` adds a checkpoint's name and version) and, for a model,
the kind of data it was trained on (:func:`data_kind`: system, protocol, dimension, particle count,
parameter names and system settings). A command that meets such a record again compares it with what
it is given (:func:`kind_differences`). A record that a file written by an earlier hamnet lacks is
unknown: never the reason for a refusal; the commands say in one ``note:`` line what it does not record.

A rollout file (its ``meta["model"]`` names the model that made it) is a model's output, not ground
truth: :func:`ground_truth` refuses one unless asked, and then leaves out the systems its ``meta``
lists as diverged (held at their last healthy state, they are no trajectories of the physics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from .io import Trajectories, system_label

log = logging.getLogger(__name__)

__all__ = ["KIND_KEYS", "data_kind", "diverged_steps", "file_sha256", "ground_truth", "kind_differences",
           "protocol_name", "rollout_model"]

#: bytes read at a time when fingerprinting a file
HASH_BLOCK_BYTES = 1 << 20

#: what makes two trajectory files data of one kind for a model: ``system`` (a registered name, or a
#: ``file.py:Class`` compared by its file and class names alone, so a moved file still matches),
#: ``protocol`` (the benchmark protocol's name, None for ``hamnet generate``), ``dim``, ``n_particles``,
#: ``params`` (the names of the parameter arrays) and ``system_settings`` (as the file records them)
KIND_KEYS = ("system", "protocol", "dim", "n_particles", "params", "system_settings")


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex), read in blocks so a large file is never held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def data_kind(data: Trajectories) -> dict[str, Any]:
    """The kind of ``data`` (a :class:`~hamnet.io.Trajectories`), by :data:`KIND_KEYS`, JSON-ready."""
    return {"system": data.meta["system"], "protocol": protocol_name(data),
            "dim": data.dim, "n_particles": data.n_particles, "params": sorted(data.params),
            "system_settings": data.meta["system_settings"]}


def protocol_name(data: Trajectories) -> str | None:
    """The benchmark protocol ``data`` was made on (``meta["protocol"]["name"]``), or that of the file a
    rollout started from (``meta["data_protocol"]``); None for neither."""
    protocol = data.meta.get("protocol")
    name = protocol.get("name") if isinstance(protocol, dict) else data.meta.get("data_protocol")
    return None if name is None else str(name)


def kind_differences(trained: Mapping[str, Any], data: Trajectories) -> list[str]:
    """How ``data`` differs from the data a model was trained on (``trained``: a checkpoint's ``data``
    record), one phrase per difference (``"system 'charged' (trained on 'nbody')"``); empty when it is
    of the same kind. Only the keys ``trained`` records are compared: what an older checkpoint lacks is
    unknown, not a difference."""
    kind = data_kind(data)
    differences = []
    for key in (key for key in KIND_KEYS if key in trained):
        theirs, ours = _plain(trained[key]), _plain(kind[key])
        if key == "system":
            theirs, ours = system_label(theirs), system_label(ours)
        if key == "params" and isinstance(theirs, list):
            theirs = sorted(map(str, theirs))
        if key == "system_settings" and isinstance(theirs, dict) and isinstance(ours, dict):
            differences += [f"{name} {ours.get(name)!r} (trained on {theirs.get(name)!r})"  # not dim, N again
                            for name in sorted((set(theirs) | set(ours)) - set(KIND_KEYS))
                            if theirs.get(name) != ours.get(name)]
        elif theirs != ours:
            differences.append(f"{key} {ours!r} (trained on {theirs!r})")
    return differences


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists), so a record from a checkpoint compares with one
    read from a file; what JSON cannot hold (a tensor in a hand-made record) as its text."""
    return json.loads(json.dumps(value, default=str))


def rollout_model(data: Trajectories) -> str | None:
    """The model that made ``data`` (``meta["model"]``, a label) when it is a rollout file; else None."""
    model = data.meta.get("model")
    return None if model is None else str(model)


def diverged_steps(data: Trajectories) -> dict[int, int]:
    """The systems a rollout file lists as diverged (``meta["diverged"]``: ``{"system", "step"}`` each),
    each with the step at which it did; a malformed list is refused in one line."""
    where = data.source or "this rollout file"
    try:
        steps = {int(entry["system"]): int(entry["step"]) for entry in data.meta.get("diverged") or []}
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{where}: meta 'diverged' must be a list of {{'system', 'step'}} entries") from None
    if any(not 0 <= system < data.n_systems for system in steps):
        raise ValueError(f"{where}: meta 'diverged' names systems outside 0..{data.n_systems - 1}")
    return steps


def ground_truth(data: Trajectories, *, allow_rollout: bool, flag: str | None, use: str
                 ) -> tuple[Trajectories, list[int]]:
    """``data`` as ground truth for ``use`` (``"training data"``, ``"ground truth"``) and the systems left
    out of it. A generated file is taken as it is. A rollout file (:func:`rollout_model`) is refused in
    one line naming ``flag`` (or, with ``flag`` None, where no flag can accept one: the generated file
    to give instead) unless ``allow_rollout``; then the systems it lists as diverged are left out (and
    logged), and a file whose every system diverged is refused."""
    model = rollout_model(data)
    if model is None:
        return data, []
    where = data.source or "this file"
    if not allow_rollout:
        hint = (f"To use it anyway, without the systems that diverged in it, pass {flag}" if flag is not None
                else "Give the generated file it started from")
        raise ValueError(f"{where} is a rollout of {model}, a model's output and not ground truth; refused as {use}. "
                         + hint)
    diverged = sorted(diverged_steps(data))
    if len(diverged) == data.n_systems:
        raise ValueError(f"every one of the {data.n_systems} systems of {where} diverged; nothing is left to use as "
                         f"{use}")
    if not diverged:
        return data, []
    log.info("%s: left out the %d of %d systems that diverged in this rollout", where, len(diverged), data.n_systems)
    keep = torch.ones(data.n_systems, dtype=torch.bool)
    keep[diverged] = False
    return data.select(keep), diverged
