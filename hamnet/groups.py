"""The group registry: every Lie group hamnet knows, found by name.

``get_group("SO2")``, ``ModelConfig(group="SE3")`` and ``--group T2`` all look a name up in
:data:`GROUPS`; :func:`register_group` adds your own (see ``docs/groups.md``). The groups themselves
live in :mod:`hamnet.lie_group` (the interface and the trivial group) and :mod:`hamnet.rigid_groups`,
and are importable from here too.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from .lie_group import DEFAULT_LIFT_SEED, LieGroup, Trivial
from .registry import Registry
from .rigid_groups import SE2, SE3, SO2, SO3, T

__all__ = ["DEFAULT_LIFT_SEED", "GROUPS", "LieGroup", "SE2", "SE3", "SO2", "SO3", "T", "Trivial", "get_group",
           "group_names", "register_group"]

GroupFactory = Callable[[int], LieGroup]

#: The group registry: name -> ``factory(dim) -> LieGroup``. Names are matched case-insensitively;
#: a family followed by a dimension (``"T2"``, ``"T(3)"``) asks the family's factory for that
#: dimension, and a name plus ``dim`` (``get_group("SO", dim=3)``) finds ``"SO3"``.
GROUPS: Registry[GroupFactory] = Registry("group")


def register_group(name: str, group: type[LieGroup] | GroupFactory, *, replace: bool = False) -> None:
    """Make a group available by ``name`` to :func:`get_group`, ``ModelConfig(group=name)``, checkpoints
    and the command line (``--group name``, with ``--plugin file.py`` holding this call).

    ``group`` is a :class:`LieGroup` subclass whose constructor takes no argument (its ``space_dim``
    fixed, like ``SO2``) or takes the dimension (like ``T``), or any callable ``factory(dim) -> LieGroup``.
    Registering the same group under the same name again does nothing.
    """
    if isinstance(group, type) and issubclass(group, LieGroup):
        takes_dim = any(p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
                        for p in inspect.signature(group).parameters.values())
        if not takes_dim:
            if name in GROUPS and getattr(GROUPS.get(name), "group_class", None) is group:
                return
            group = _fixed_dimension(name, group)
    elif not callable(group):
        raise TypeError(f"register_group needs a LieGroup subclass or a factory(dim), got {type(group).__name__}")
    GROUPS.register(name, group, replace=replace)


def _fixed_dimension(name: str, cls: type[LieGroup]) -> GroupFactory:
    def factory(dim: int | None = None) -> LieGroup:
        if dim is not None and dim != cls.space_dim:
            raise ValueError(f"group {name!r} acts in {cls.space_dim} dimensions, but dim={dim} was asked for")
        return cls()

    factory.group_class = cls
    return factory


for _name, _group in (("Trivial", Trivial), ("T", T), ("SO2", SO2), ("SE2", SE2), ("SO3", SO3), ("SE3", SE3)):
    register_group(_name, _group)


def group_names() -> list[str]:
    """Every name :func:`get_group` accepts without a ``dim`` for the built-in families, then the rest."""
    names = []
    for name in GROUPS.names():
        names += [f"{name}2", f"{name}3"] if name == "T" else [name]
    return names


def get_group(name: str, dim: int | None = None) -> LieGroup:
    """The group called ``name`` (case-insensitive) in :data:`GROUPS`: ``Trivial``, ``T2``, ``T3``,
    ``SO2``, ``SE2``, ``SO3``, ``SE3`` or one added with :func:`register_group`. ``Trivial`` and ``T``
    take their dimension from ``dim``, and ``SO`` / ``SE`` with ``dim`` mean ``SO2`` ... ``SE3``.

    Raises ``ValueError`` for an unknown name or a dimension that does not fit.
    """
    if not isinstance(name, str):
        raise ValueError(f"a group name must be a string, got {name!r}")
    key, digit = name.strip(), None
    if key not in GROUPS:
        match = re.fullmatch(r"(.+?)\(?([123])\)?", key)
        if match is not None and match.group(1) in GROUPS:  # "T2": the family T in 2 dimensions
            key, digit = match.group(1), int(match.group(2))
        elif match is not None and "".join(match.groups()) in GROUPS:  # "SO(2)" spelled with brackets
            key, digit = "".join(match.groups()), int(match.group(2))
        elif dim is not None and f"{key}{dim}" in GROUPS:
            key = f"{key}{dim}"
        else:
            raise ValueError(f"unknown group {name!r}; valid groups: {', '.join(group_names())} "
                             "(add your own with hamnet.groups.register_group)")
    if digit is not None and dim is not None and digit != dim:
        raise ValueError(f"group {name!r} acts in {digit} dimensions, but dim={dim} was asked for")
    dim = digit if digit is not None else dim
    factory = GROUPS.get(key)
    if dim is None and not hasattr(factory, "group_class"):
        raise ValueError(f"group {name!r} needs a dimension: pass dim=2 or dim=3 (or a name like {key}2)")
    return factory(dim) if dim is not None else factory()
