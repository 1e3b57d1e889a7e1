"""Where outputs may go: the one check every command makes before it writes anything.

An output must not be one of the command's inputs (the same file after resolving symbolic links,
``..`` and hard links), must carry the suffix of what is written there, and its folder must exist and
be writable. A folder a command fills with several files (a demo) must be new, empty, or one the
same command made before, which it marks with a small file of its own. Checks run before any work,
so a refused command has changed nothing. Every file is written through :func:`atomic_path`, so a
target is either untouched or complete.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["OutputPathError", "atomic_path", "check_output", "check_output_folder", "interrupts_deferred", "same_file"]


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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Run a short block that must not be cut in half: SIGINT or SIGTERM arriving during it is held and
    handed to the handler that was in place once the block ends. Main thread only (where Python runs
    signal handlers); an interrupt already pending on entry is raised before the block starts."""
    held = (signal.SIGINT, signal.SIGTERM)
    # a handler installed outside Python reads as None and could not be put back: then defer nothing
    if threading.current_thread() is not threading.main_thread() or any(signal.getsignal(n) is None for n in held):
        yield
        return
    caught: list[int] = []
    previous = {}
    try:
        for signum in held:
            previous[signum] = signal.signal(signum, lambda number, frame: caught.append(number))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto ``path`` only if the block succeeds.

    On any failure (an exception, a KeyboardInterrupt) the temporary file is removed, so the target
    is either untouched or complete. Raises ``OSError`` with a readable message naming ``path`` when
    the folder does not exist or is not writable, before any work is done in the block, or when the
    write fails (a full disk, a file too large). A temporary file left by a process that was killed
    (SIGKILL leaves no chance to clean up) is removed by the next write to the same path.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise OSError(f"cannot write {path}: folder {folder} does not exist")
    _remove_stale_temporaries(path)
    tmp = None
    try:
        with interrupts_deferred():  # an interrupt between creating the file and noting its name would strand it
            tmp = _new_temporary(path)
        try:
            yield tmp
            with open(tmp, "rb+") as handle:  # on disk before the rename makes it the real file
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as error:
            if error.filename is not None and str(path) in str(error):
                raise
            reason = error.strerror or str(error).splitlines()[0]
            raise OSError(error.errno, f"cannot write {path}: {reason}") from error
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _new_temporary(path: Path) -> Path:
    """A new empty file ``.NAME.PID.RANDOM.tmp`` beside ``path``, created exclusively with the permissions a
    plain ``open()`` gives (0666 less the umask, applied by the kernel: no process-wide umask juggling)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as error:
            raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from error
    raise OSError(f"cannot write {path}: no free temporary name beside it")


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``atomic_path`` temporaries of ``path`` whose writing process no longer exists."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
