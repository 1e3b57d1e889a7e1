"""Run folders: what a training run writes, how it is locked, and when it may be resumed.

A run folder holds ``config.json``, ``config.toml`` (every setting, for ``hamnet train --config``),
``metrics.jsonl`` (one line per epoch), ``last.pt``, ``best.pt`` and ``.lock`` (:class:`RunFiles`); with
TensorBoard logging, its event files (:data:`hamnet.monitor.EVENT_FILE_PREFIX`), and when ``hamnet.fit``
was given arrays, the file it trains on, ``data.npz``. Nothing runs twice and nothing is lost:

- a run holds an advisory lock on its folder (``.lock``, the ``filelock`` package) from before its
  first write to its end, so a second run on the same folder fails at once (:class:`RunFolderInUse`);
- a folder holding anything that is not a run's own is refused before anything is written into it;
- every state a kill (SIGKILL included) can leave is accepted: a resume continues from ``last.pt``,
  and a folder where no epoch completed may be started over by a new run (:func:`claim`);
- the data file's sha256 (:func:`hamnet.provenance.file_sha256`) is stored with the run, and a resume on a file that
  changed since, or with other settings, is refused (:func:`check_resumable`); the same bytes moved to
  another path are the same data.

``config`` below is a :class:`hamnet.training.TrainConfig` (anything with ``from_dict`` and the same
fields); this module does not import the training loop, which builds on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .checkpoint import CheckpointError, load_checkpoint
from .monitor import EVENT_FILE_PREFIX
from .paths import atomic_path

log = logging.getLogger(__name__)

__all__ = ["RunFiles", "RunFolderInUse", "append_metrics", "check_resumable", "checkpoint_epoch", "claim",
           "locked", "make_run_folder", "read_metrics", "truncate_metrics", "write_json", "write_text"]


class RunFolderInUse(ValueError):
    """Another ``train`` process holds the run folder's lock."""


@dataclass
class RunFiles:
    """The files of a run folder."""

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def settings(self) -> Path:
        return self.folder / "config.toml"

    @property
    def data(self) -> Path:
        return self.folder / "data.npz"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    @property
    def lock(self) -> Path:
        return self.folder / ".lock"

    def owns(self, name: str) -> bool:
        """Whether a file called ``name`` in the folder is a run's own: one of its files, the lock, a
        TensorBoard event file, or the temporary file of an atomic write that a kill interrupted."""
        return (name in self._names or name.startswith((self.lock.name, EVENT_FILE_PREFIX))
                or self.is_temporary(name))

    def is_temporary(self, name: str) -> bool:
        """Whether ``name`` is the temporary file of an atomic write of one of the run's files."""
        return name.endswith(".tmp") and any(name.startswith(f".{file}.") for file in self._names)

    @property
    def _names(self) -> list[str]:
        return [path.name for path in (self.config, self.settings, self.data, self.metrics, self.last, self.best)]


def make_run_folder(files: RunFiles, resume: bool) -> bool:
    """Create the run folder unless it exists; returns whether this call made it.

    There is no race: ``mkdir`` is atomic, so of two processes starting on one folder exactly one
    creates it; both then try the lock, exactly one gets it, and only the holder reads or changes
    what the folder holds. A folder holding anything that is not a run's own is refused here, before
    the lock file is written, so nothing is ever written into someone else's folder.
    """
    folder = files.folder
    if resume and not folder.is_dir():
        raise ValueError(f"nothing to resume: run folder {folder} does not exist; drop --resume to start a new run")
    try:
        folder.mkdir(parents=True)
        created = True
    except FileExistsError:
        if not folder.is_dir():
            raise ValueError(f"run folder {folder} is a file; choose another --out") from None
        created = False
    except OSError as error:
        raise OSError(f"cannot create run folder {folder}: {error.strerror or error}") from error
    foreign = sorted(path.name for path in folder.iterdir() if not files.owns(path.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ValueError(f"run folder {folder} already holds files that are not a hamnet run's ({shown}); "
                         "choose another --out (nothing in it was changed)")
    return created


@contextlib.contextmanager
def locked(files: RunFiles):
    """Hold the run folder's lock for the block; fail at once if another process holds it.

    The lock is ``flock`` on ``.lock`` inside the folder: the kernel drops it when its holder exits,
    however it exits, so a killed run never leaves the folder locked.
    """
    lock = FileLock(files.lock, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderInUse(f"run folder {files.folder} is in use by another hamnet train process"
                             f"{_lock_holder(files.lock)}; wait for it to end or choose another --out") from None
    except OSError as error:
        raise OSError(f"cannot lock run folder {files.folder}: {error.strerror or error}") from error
    try:
        yield
    finally:
        lock.release()


def _lock_holder(lock: Path) -> str:
    """`` (pid N)`` for the process holding ``lock``, where the system tells (Linux's /proc/locks
    lists every flock with its holder, device and inode); otherwise empty."""
    try:
        status = lock.stat()
        with open("/proc/locks") as table:
            entries = [line.split() for line in table]
    except OSError:
        return ""
    # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146851 0 EOF"; waiters' lines carry "->" and are skipped
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    holders = {fields[5]: fields[4] for fields in entries if len(fields) > 5 and fields[1] == "FLOCK"}
    same_inode = [pid for where, pid in holders.items() if where.rsplit(":", 1)[-1] == str(status.st_ino)]
    pid = holders.get(device) or (same_inode[0] if len(same_inode) == 1 else None)  # overlay filesystems
    return f" (pid {pid})" if pid else ""


def claim(files: RunFiles, config: Any, data_info: dict, resume: bool) -> dict[str, Any] | None:
    """With the lock held: the checkpoint the run resumes from, or None to start at epoch 0.

    A folder where no epoch completed (no ``best.pt``; no ``last.pt``, or one of epoch 0: what a kill
    before the end of the first epoch leaves) holds nothing worth keeping: it is cleared, and a new
    run or ``--resume`` starts it at epoch 0 (on ``data.npz``, if ``hamnet.fit`` wrote it). A run past
    that is refused to a new run and continued by ``--resume``, after checking it was made with the same
    settings and data. Temporary files of writes a kill cut short are removed: under the lock, no one
    else is writing them.
    """
    for path in files.folder.glob(".*.tmp"):
        if files.is_temporary(path.name):
            path.unlink(missing_ok=True)
    last = load_checkpoint(files.last) if files.last.exists() else None
    if resume and last is not None:
        check_resumable(files, last, config, data_info)
        return last
    if files.best.exists() or (last is not None and checkpoint_epoch(last, files.last) > 0):
        if resume:
            raise ValueError(f"nothing to resume: {files.last} does not exist")
        raise ValueError(f"run folder {files.folder} already holds files of a started run; resume it with "
                         "--resume or choose another --out")
    leftovers = [path for path in files.folder.iterdir() if path.name not in (files.lock.name, files.data.name)]
    if leftovers:
        log.info("%s holds a run that completed no epoch; starting it over at epoch 0", files.folder)
    for path in leftovers:
        path.unlink(missing_ok=True)
    return None


def changed_settings(saved: Any, config: Any) -> list[str]:
    """The names of ``config``'s settings that ``saved`` (a config of its type) holds otherwise; whether the
    step is compiled is no setting (the numbers agree to round-off)."""
    return sorted(f.name for f in dataclasses.fields(config)
                  if f.name != "compile" and getattr(saved, f.name) != getattr(config, f.name))


def check_resumable(files: RunFiles, state: dict[str, Any], config: Any, data_info: dict) -> None:
    """Refuse a checkpoint made with other settings or other data (a CheckpointError naming it). Whether the
    step is compiled is no such setting (the numbers agree to round-off): a run may resume either way."""
    try:
        saved = type(config).from_dict(state.get("train_config"))
    except ValueError as error:
        raise CheckpointError(f"{files.last}: {str(error).splitlines()[0]}") from error
    if getattr(saved, "compile", None) != getattr(config, "compile", None):
        log.info("%s was trained with compile %s; resuming with %s (the same numbers to round-off, not bitwise)",
                 files.last, saved.compile, config.compile)
    changed = changed_settings(saved, config)
    if changed:
        bound = saved.model.kernel_bound
        hint = (f" (it was trained with --kernel-bound {'none' if bound is None else f'{bound:g}'})"
                if (bound, saved.kernel_bound_factor) != (config.model.kernel_bound, config.kernel_bound_factor)
                else "")
        raise CheckpointError(
            f"{files.last} was trained with different settings ({', '.join(changed)}); "
            f"resume with the run's own settings{hint} or start a new run folder"
        )
    _check_same_data(files, state.get("data") if isinstance(state.get("data"), dict) else {}, data_info)


def _check_same_data(files: RunFiles, saved: dict, data_info: dict) -> None:
    """Refuse a resume on other data. Data is its bytes: the same sha256 at another path is the same data
    (the move is logged); a checkpoint of a hamnet that did not fingerprint its data is taken on its
    description (path, system, sizes) alone."""
    if "sha256" not in saved:
        if any(data_info.get(key) != value for key, value in saved.items()):
            raise CheckpointError(f"{files.last} was trained on other data ({saved.get('path')}); "
                                  "resume with the same --data file")
        return
    before, now, path = str(saved["sha256"]), data_info["sha256"], data_info["path"]
    if before != now:
        what = (f"{path} changed since the run started (sha256 {before[:12]}... then, {now[:12]}... now)"
                if saved.get("path") == path else
                f"{saved.get('path')} (sha256 {before[:12]}...), not {path} ({now[:12]}...)")
        raise CheckpointError(f"{files.last} was trained on other data: {what}; resume with the original file "
                              "or start a new run with another --out")
    if saved.get("path") != path:
        log.info("%s: the run's data moved from %s to %s (the same sha256); resuming", files.last,
                 saved.get("path"), path)


def checkpoint_epoch(state: dict[str, Any], path: Path) -> int:
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise CheckpointError(f"{path}: checkpoint epoch must be a non-negative int, got {epoch!r}")
    return epoch


# -- metrics and config files ---------------------------------------------------------------------
def read_metrics(path: Path) -> list[dict]:
    """Metric lines of a run; a line cut short by a kill mid-write is dropped."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def _write_metrics(path: Path, lines: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep the metric lines of completed epochs only (a resumed run rewrites what it redoes)."""
    if path.exists():
        _write_metrics(path, [line for line in read_metrics(path) if line.get("epoch", math.inf) <= epochs_done])


def append_metrics(path: Path, metrics: dict) -> None:
    _write_metrics(path, read_metrics(path) + [metrics])


def write_json(path: Path, value: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
