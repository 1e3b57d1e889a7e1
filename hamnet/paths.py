"""Where outputs may go: the one check every command makes before it writes anything.

An output must not be one of the command's inputs (the same file after resolving symbolic links,
``..`` and hard links), must carry the suffix of what is written there, and its folder must exist and
be writable. A folder a command fills with several files (a demo) must be new, empty, or one the
same command made before, which it marks with a small file of its own. Checks run before any work,
so a refused command has changed nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["OutputPathError", "check_output", "check_output_folder", "same_file"]


class OutputPathError(ValueError):
    """An output path that would destroy an input, has the wrong suffix, or cannot be written."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: equal after resolving links and ``..``, or hard links to one inode."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                 suffixes: Iterable[str] = (), flag: str = "--out", what: str = "output") -> Path:
    """Refuse an output file that is an input, has the wrong suffix, is a folder, or cannot be written.

    ``inputs`` are the files the command reads (None entries are skipped); ``suffixes`` the allowed
    lower-case suffixes (``".npz"``), none for any. Raises :class:`OutputPathError` naming ``flag``.
    """
    path = Path(out)
    allowed = tuple(suffixes)
    if allowed and path.suffix.lower() not in allowed:
        given = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise OutputPathError(f"{flag} {out}: {what} must be a {' or '.join(allowed)} file, got {given}")
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputPathError(f"{flag} {out} is the input {source}; writing there would destroy it. "
                                  "Choose another output path")
    if path.is_dir():
        raise OutputPathError(f"{flag} {out} is a folder; give a file name")
    _check_folder_writable(path.parent, f"{flag} {out}")
    return path


def check_output_folder(out: str | os.PathLike, *, marker: str, inputs: Iterable[str | os.PathLike | None] = (),
                        flag: str = "--out") -> Path:
    """Refuse a folder to fill unless it is new, empty, or holds ``marker`` (a file the same command left
    there before, so it is that command's own). Inputs must not lie inside it."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{flag} {out} is a file; give a folder")
    if folder.is_dir() and not (folder / marker).exists() and any(folder.iterdir()):
        raise OutputPathError(f"{flag} {out} holds files that are not this command's own; give a new or "
                              "empty folder (nothing in it was changed)")
    for source in inputs:
        if source is not None and Path(source).resolve().is_relative_to(folder.resolve()):
            raise OutputPathError(f"{flag} {out} contains the input {source}; choose another folder")
    nearest = folder
    while not nearest.exists():
        nearest = nearest.parent
    _check_folder_writable(nearest, f"{flag} {out}")
    return folder


def _check_folder_writable(folder: Path, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"cannot write {what}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {what}: folder {folder} is not writable")
