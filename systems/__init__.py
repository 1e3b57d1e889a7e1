"""Physical systems with known Hamiltonians, and a registry that finds them by name.

A system is one class implementing :class:`systems.base.HamiltonianSystem`. Built-in systems are
looked up by name; a user's own class is loaded from a file with ``"path/to/file.py:ClassName"``.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType

from .base import HamiltonianSystem, Params, autograd_gradient, gradient_force, remove_total_momentum
from .charged import Charged
from .lennard_jones import LennardJones
from .nbody import NBody
from .springs import Springs

#: The system registry: name -> class. ``systems`` does not depend on hamnet, so this is a plain
#: dict, changed only through :func:`register_system`.
SYSTEMS: dict[str, type[HamiltonianSystem]] = {}

__all__ = ["HamiltonianSystem", "autograd_gradient", "Params", "SYSTEMS", "Charged", "LennardJones", "NBody",
           "Springs", "get_system_class", "gradient_force", "import_file", "make_system", "register_system",
           "remove_total_momentum"]


def register_system(cls: type[HamiltonianSystem], name: str | None = None, *, replace: bool = False) -> None:
    """Make a system class available by ``name`` (default: ``cls.name``) to :func:`get_system_class`,
    and so to ``hamnet generate --system name`` (with ``--plugin file.py`` holding this call)."""
    if not (inspect.isclass(cls) and issubclass(cls, HamiltonianSystem)) or inspect.isabstract(cls):
        raise TypeError(f"register_system needs a concrete subclass of hamnet.systems.HamiltonianSystem, got {cls!r} "
                        "(implement sample_params, sample_state and potential)")
    name = name or cls.name
    if name in SYSTEMS and SYSTEMS[name] is not cls and not replace:
        raise ValueError(f"a system named {name!r} is already registered; choose another name or pass replace=True")
    SYSTEMS[name] = cls


register_system(Springs)
register_system(NBody)
register_system(Charged)
register_system(LennardJones)


def get_system_class(spec: str) -> type[HamiltonianSystem]:
    """A system class from a registered name (``"springs"``) or ``"path/to/file.py:ClassName"``."""
    if spec in SYSTEMS:
        return SYSTEMS[spec]
    if ":" not in spec:
        raise ValueError(
            f"unknown system {spec!r}; choose one of {', '.join(sorted(SYSTEMS))} "
            "or give your own class as path/to/file.py:ClassName"
        )
    path, class_name = spec.rsplit(":", 1)
    module = import_file(path, what="system file")
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"system file {path!r} has no class {class_name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, HamiltonianSystem)) or inspect.isabstract(cls):
        raise ValueError(
            f"{class_name!r} in {path!r} must be a concrete subclass of hamnet.systems.HamiltonianSystem "
            "(implement sample_params, sample_state and potential)"
        )
    return cls


def make_system(spec: str, **settings) -> HamiltonianSystem:
    """Build a system from its name or file spec and constructor settings."""
    return get_system_class(spec)(**settings)


def import_file(path: str | os.PathLike, *, what: str = "file") -> ModuleType:
    """Import the Python file at ``path`` as a module; one-line ``ValueError`` when that fails.

    Runs the file's code: call it only for a file the user named (a flag, an argument), never for
    a name read from a data file or checkpoint. The same file imported twice is one module.
    """
    file = Path(path).resolve()
    if not file.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    module_name = f"hamnet_user_{file.stem}_{abs(hash(str(file))):x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot load {what} {str(path)!r} as a Python module; it must be a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up by module name
    try:
        module_spec.loader.exec_module(module)
    except BaseException as error:  # user code can fail in any way, even sys.exit; report it in one line
        del sys.modules[module_name]
        if isinstance(error, KeyboardInterrupt):
            raise
        raise ValueError(f"{what} {str(path)!r} failed to import: {type(error).__name__}: {error}") from error
    return module
