"""Configurations as frozen dataclasses, rebuilt from the dicts they were saved as.

``ModelConfig`` and ``TrainConfig`` are written into run folders and checkpoints as
``dataclasses.asdict``; reading one back goes through :func:`config_from_dict`, which checks every key
and the type of every value against the dataclass's annotations, so a foreign or hand-edited
configuration is refused in one line instead of failing deep inside a build.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from typing import Any, Mapping

import numpy as np

__all__ = ["config_from_dict", "check_field_types"]


def config_from_dict(cls, values: Mapping[str, Any], what: str):
    """The frozen dataclass ``cls`` built from a dict (e.g. read back from JSON or a checkpoint).

    Refuses, with a one-line ``ValueError``, keys it does not know (a config written by another
    version or for another model) and values that are not of the field's annotated type: ``int``,
    ``float`` (an int is taken), ``str``, ``bool``, ``X | None``, ``tuple[X, ...]`` (a JSON list is
    taken) and nested dataclasses (a dict is built into one, as ``TrainConfig.model``).
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"{what} must be a dict of settings, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}")

    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = _converted(name, value, hints[name])
        except TypeError:
            raise ValueError(f"{what} field {name!r} must be {_describe(hints[name])}, got {_shown(value)}") from None
    return cls(**checked)


def check_field_types(instance: Any, what: str) -> None:
    """Check every field of the frozen dataclass ``instance`` against its annotation, as
    :func:`config_from_dict` does, and store the value converted (a list as a tuple, an int as a
    float); a value of the wrong type raises a one-line ``TypeError`` naming the field. For a config's
    ``__post_init__``, so a configuration built in Python is refused as one read from a file is."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        try:
            object.__setattr__(instance, field.name, _converted(field.name, value, hints[field.name]))
        except TypeError:  # a nested config's own ValueError names its field
            raise TypeError(f"{what} field {field.name!r} must be {_describe(hints[field.name])}, "
                            f"got {_shown(value)}") from None


def _shown(value: Any) -> str:
    return repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if dataclasses.is_dataclass(hint):
        return f"a dict of {hint.__name__} settings"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _converted(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotated type; raises TypeError if it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _converted(name, value, option)
            except TypeError:
                continue
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, (list, tuple)):
            return tuple(_converted(name, item, args[0]) for item in value)
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(hint, value, f"{name} config")
    elif hint in (int, float, str, bool):
        if isinstance(value, (bool, np.bool_)) != (hint is bool):  # bool is an int to Python, not to a config
            raise TypeError
        if isinstance(value, hint) or (hint is int and isinstance(value, numbers.Integral)) or (
                hint is float and isinstance(value, numbers.Real)) or (
                hint is bool and isinstance(value, np.bool_)):  # NumPy's scalars too
            return hint(value)
        if hint is str and isinstance(value, os.PathLike):  # a path (e.g. init_from) as the string it stands for
            return os.fspath(value)
    else:
        return value  # an annotation this check does not know: left to the class
    raise TypeError
