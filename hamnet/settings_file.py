"""Settings files: a training run's every setting in TOML, written and read back.

``hamnet train --print-config`` writes one, every run folder keeps the resolved one as ``config.toml``,
and ``hamnet train --config FILE`` reads one. Note to the reader: a settings file has three tables,
``[train]`` (the fields of :class:`hamnet.training.TrainConfig` but ``model``), ``[model]`` (those of
:class:`hamnet.models.ModelConfig`) and ``[run]`` (:class:`RunSettings`: the data, the run folder and
how the run is run, none of which changes its result). TOML has no null, so the string ``"none"``
stands for None wherever a field admits it (``feature_keys = "none"``: taken from the data). Relative
paths are relative to the working directory, as on the command line.

This module writes the small part of TOML those tables need (strings, integers, floats, booleans and
arrays of them, in tables) and reads files with Python's ``tomllib`` (``tomli`` before Python 3.11);
whether a table's keys and types fit its class is :func:`hamnet.config.config_from_dict`'s check.
Every problem with a file is one line naming it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import config_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover (pyproject.toml installs tomli there)
    import tomli as tomllib

__all__ = ["NONE", "TABLES", "RunSettings", "SettingsFileError", "dumps", "read_settings", "settings_text"]

#: what a settings file writes for None (TOML has no null)
NONE = "none"
#: the tables of a settings file, in the order they are written
TABLES = ("train", "model", "run")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class SettingsFileError(ValueError):
    """A settings file that cannot be read, is not TOML, or holds keys or values its tables do not take."""


@dataclass(frozen=True)
class RunSettings:
    """The ``[run]`` table: ``data``, the trajectory file to train on; ``out``, the run folder; ``device``
    (cpu or cuda); ``tensorboard``, whether the epoch metrics also go to TensorBoard event files in the
    run folder. None of it is part of the run's result or of what a resume compares."""

    data: str | None = None
    out: str | None = None
    device: str = "cpu"
    tensorboard: bool = False


def settings_text(config: Any, run: RunSettings, header: str) -> str:
    """The settings file of ``config`` (a TrainConfig) and ``run``, with ``header`` as comment lines."""
    values = dataclasses.asdict(config)
    model = values.pop("model")
    return dumps({"train": values, "model": model,
                  "run": {key: value for key, value in dataclasses.asdict(run).items() if value is not None}},
                 header)


def dumps(tables: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """TOML for ``tables`` (table name -> key -> value), ``header`` first as ``#`` comment lines. Values are
    str, int, float, bool, None (written as :data:`NONE`) or lists and tuples of those."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, table in tables.items():
        lines += ["", f"[{_key(name)}]"]
        lines += [f"{_key(key)} = {_value(value)}" for key, value in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any) -> str:
    if value is None:
        return _string(NONE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")  # repr round-trips
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"a settings file holds no {type(value).__name__} values, got {value!r}")


def _string(text: str) -> str:
    """A TOML basic string: quote and backslash escaped, and every control character as ``\\uXXXX``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda match: f"\\u{ord(match.group()):04X}", escaped) + '"'


def read_settings(path: str | os.PathLike, train_config: type) -> tuple[dict[str, Any], RunSettings]:
    """The ``[train]`` and ``[model]`` tables of the settings file ``path`` as one dict (``[model]`` under
    ``"model"``, :data:`NONE` read as None), checked by building ``train_config`` (TrainConfig) from them,
    and its ``[run]`` table. A table left out is empty: its settings keep their defaults. Raises
    :class:`SettingsFileError` naming the file: missing or unreadable, not TOML, a table or key that is not
    a setting, a value of the wrong type or out of its range."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SettingsFileError(f"settings file {path} does not exist") from None
    except IsADirectoryError:
        raise SettingsFileError(f"settings file {path} is a folder; give a .toml file") from None
    except UnicodeDecodeError:
        raise SettingsFileError(f"settings file {path} is not UTF-8 text, so not TOML") from None
    except OSError as error:
        raise SettingsFileError(f"cannot read settings file {path}: {error.strerror or error}") from None
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsFileError(f"settings file {path} is not valid TOML: {' '.join(str(error).split())}") from None
    loose = sorted(key for key, value in tables.items() if not isinstance(value, dict))
    unknown = sorted(key for key in tables if key not in TABLES and key not in loose)
    if loose or unknown:
        where = (f"{', '.join(loose)} outside a table" if loose else f"the table [{unknown[0]}]")
        raise SettingsFileError(f"settings file {path} holds {where}; its settings go in the tables "
                                f"{', '.join(f'[{name}]' for name in TABLES)}")
    train, model, run = ({key: None if value == NONE else value for key, value in tables.get(name, {}).items()}
                         for name in TABLES)
    takes = {"train": {f.name for f in dataclasses.fields(train_config)} - {"model"},
             "model": {f.name for f in dataclasses.fields(typing.get_type_hints(train_config)["model"])},
             "run": {f.name for f in dataclasses.fields(RunSettings)}}
    for name, values in zip(TABLES, (train, model, run)):
        unknown = sorted(set(values) - takes[name])
        if unknown:
            raise SettingsFileError(f"settings file {path}: [{name}] has no setting {', '.join(unknown)}; it takes "
                                    f"{', '.join(sorted(takes[name]))}")
    try:
        config_from_dict(train_config, {**train, "model": model}, "[train]")
        settings = config_from_dict(RunSettings, run, "[run]")
    except ValueError as error:
        message = str(error).replace("model config", "[model]")
        raise SettingsFileError(f"settings file {path}: {message}") from None
    return {**train, "model": model}, settings
