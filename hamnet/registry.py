"""Name -> object tables: the one place each extensible concept is looked up.

hamnet keeps one :class:`Registry` per concept: groups (``hamnet.groups.GROUPS``), models
(``hamnet.models.MODELS``) and integrators (``hamnet.integrate.INTEGRATORS``); physical systems
have theirs in ``hamnet.systems.SYSTEMS``, since ``systems`` does not depend on hamnet. Configurations,
checkpoints, the command line and validation all look names up here, so an entry a user registers
from their own code works everywhere a built-in one does. Names are matched case-insensitively
and reported with their registered spelling.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

__all__ = ["Registry"]

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """A table of named entries of one kind (``what``, e.g. ``"group"``), filled by :meth:`register`."""

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what
        self.hint = hint  # appended to the unknown-name message: how a user adds their own
        self._entries: dict[str, tuple[str, Entry]] = {}

    def register(self, name: str, entry: Entry, *, replace: bool = False) -> Entry:
        """Add ``entry`` under ``name`` and return it. Registering an equal entry again is a no-op (a class
        or function equals only itself; a value such as an ``Integrator`` equals an identical one);
        another entry under a taken name is refused unless ``replace=True``."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")
        key = name.strip().lower()
        if key in self._entries and self._entries[key][1] != entry and not replace:
            raise ValueError(
                f"a {self.what} named {self._entries[key][0]!r} is already registered; "
                "choose another name or pass replace=True"
            )
        self._entries[key] = (name.strip(), entry)
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and interactive sessions; built-ins can be removed too)."""
        self._entries.pop(self._key(name), None)

    def get(self, name: str) -> Entry:
        """The entry registered as ``name``; ``ValueError`` listing the known names otherwise."""
        key = self._key(name)
        if key not in self._entries:
            hint = f"; {self.hint}" if self.hint else ""
            raise ValueError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}{hint}")
        return self._entries[key][1]

    def canonical(self, name: str) -> str:
        """``name`` as it was registered (``"so2"`` -> ``"SO2"``)."""
        self.get(name)
        return self._entries[self._key(name)][0]

    def names(self) -> list[str]:
        return [spelling for spelling, _ in self._entries.values()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower() if isinstance(name, str) else ""
