"""Physical systems with known Hamiltonians, and a registry that finds them by name.

A system is one class implementing :class:`systems.base.HamiltonianSystem`. Built-in systems are
looked up by name; a user's own class is loaded from a file with ``"path/to/file.py:ClassName"``.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

from .base import HamiltonianSystem, Params, autograd_gradient, gradient_force, remove_total_momentum
from .nbody import NBody
from .springs import Springs

SYSTEMS: dict[str, type[HamiltonianSystem]] = {
    Springs.name: Springs,
    NBody.name: NBody,
}

__all__ = ["HamiltonianSystem", "autograd_gradient", "Params", "SYSTEMS", "NBody", "Springs", "get_system_class", "gradient_force", "make_system",
           "remove_total_momentum"]


def get_system_class(spec: str) -> type[HamiltonianSystem]:
    """A system class from a registered name (``"springs"``) or ``"path/to/file.py:ClassName"``."""
    if spec in SYSTEMS:
        return SYSTEMS[spec]
    if ":" not in spec:
        raise ValueError(
            f"unknown system {spec!r}; choose one of {', '.join(sorted(SYSTEMS))} "
            "or give your own class as path/to/file.py:ClassName"
        )
    return _load_from_file(*spec.rsplit(":", 1))


def make_system(spec: str, **settings) -> HamiltonianSystem:
    """Build a system from its name or file spec and constructor settings."""
    return get_system_class(spec)(**settings)


def _load_from_file(path: str, class_name: str) -> type[HamiltonianSystem]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"system file {path!r} does not exist; give path/to/file.py:ClassName")
    module_spec = importlib.util.spec_from_file_location(f"hamnet_user_system_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot load {path!r} as a Python module; it must be a .py file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # user code can fail in any way; report it in one line
        raise ValueError(f"system file {path!r} failed to import: {type(error).__name__}: {error}") from error
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"system file {path!r} has no class {class_name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, HamiltonianSystem)) or inspect.isabstract(cls):
        raise ValueError(
            f"{class_name!r} in {path!r} must be a concrete subclass of systems.HamiltonianSystem "
            "(implement sample_params, sample_state and potential)"
        )
    return cls
