"""Trajectory files: ``.npz``, schema version 1, readable with numpy alone.

A file holds ``t: (T,)`` float64 times, ``z: (B, T, 2, N, D)`` float64 states, one float64 array
per system parameter with a leading batch axis (``m: (B, N)`` always, ``k: (B, N)`` for springs,
...), and ``meta``: a JSON string with at least ``schema_version``, ``system`` (name or file spec),
``system_settings``, ``dt`` and ``hamnet_version``; generators add the seed and integrator, rollouts
the model that made them. Writes are atomic: a temporary file in the same folder is renamed over
the target only when complete, so an interrupted run never leaves a broken file behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .conversion import IMPORTED_SYSTEM, ArrayProblems, CheckedArrays, checked_arrays
from .paths import atomic_path, interrupts_deferred
from .resources import check_memory
from .version import __version__

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REQUIRED_META = ("schema_version", "system", "system_settings", "dt")
RESERVED_KEYS = ("t", "z", "meta")


class TrajectoryFileError(ValueError):
    """A trajectory file that cannot be read, with what is wrong and how to fix it."""


class SystemUnavailable(ValueError):
    """A file's true system cannot be rebuilt without running code the file names, or is not registered."""


@dataclass
class Trajectories:
    """States ``z: (B, T, 2, N, D)`` at times ``t: (T,)``, with parameters and metadata.

    Tensors are float64 torch tensors; ``params`` maps names to ``(B, ...)`` tensors.
    """

    t: Tensor
    z: Tensor
    params: dict[str, Tensor]
    meta: dict = field(default_factory=dict)
    #: the file it was read from, for messages (not saved)
    source: str | None = field(default=None, compare=False)

    @property
    def n_systems(self) -> int:
        return self.z.shape[0]

    @property
    def n_times(self) -> int:
        return self.z.shape[1]

    @property
    def n_particles(self) -> int:
        return self.z.shape[3]

    @property
    def dim(self) -> int:
        return self.z.shape[4]

    def unphysical(self) -> list[str]:
        """What is unphysical in this file's parameters for its system (say, a spring constant that is not
        positive), one line each; empty when nothing is, or when the system is not registered here (a
        data file never runs code; see :meth:`system`). ``load_trajectories`` logs them as warnings and
        ``hamnet info`` prints them."""
        from .systems import SYSTEMS

        if self.meta.get("system") not in SYSTEMS:
            return []
        try:
            system = self.system()
        except ValueError:
            return []  # a file whose system cannot be rebuilt says so where the system is needed
        return list(system.unphysical(self.params))

    def system(self, spec: str | None = None):
        """The true system of this file, rebuilt with the settings in ``meta``.

        Data files are data: a system is found only by a name registered in ``hamnet.systems.SYSTEMS`` (the
        built-ins, or one a ``--plugin`` registered). A file made by a user's system loaded from a
        file (``meta["system"] = "path.py:Class"``) is never imported because the file says so:
        :class:`SystemUnavailable` says how to name it yourself, with ``spec`` (``--true-system`` on the
        command line), which is then trusted as the user's own choice; the message never spells out a
        command naming the file's code, which only the user can vouch for. ``spec`` must name the
        system that made the file (:func:`_check_same_system`). Raises ValueError when the system cannot
        be built, is another one, or lacks a parameter it needs.
        """
        from .systems import SYSTEMS, make_system

        recorded = self.meta["system"]
        name = spec if spec is not None else recorded
        where = self.source or "this trajectory file"
        if spec is None and name not in SYSTEMS:
            if ":" in name:
                raise SystemUnavailable(
                    f"{where} was made by the user system {name!r}; hamnet never runs code that a data file "
                    "names. To use its true Hamiltonian, read that code and, if you trust it, name its file "
                    "yourself: --true-system PATH.py:CLASS (system= in Python)")
            raise SystemUnavailable(f"{where} names the system {name!r}, which is not registered here; if it is "
                                    "your own, load the file that registers it with --plugin FILE.py")
        if spec is not None:
            _check_same_system(spec, recorded, where)
        try:
            system = make_system(name, **self.meta["system_settings"])
        except (KeyboardInterrupt, SystemExit, ValueError):
            raise
        except Exception as error:  # a user's system can fail in any way; say so in one line
            raise ValueError(f"cannot rebuild system {name!r} with the settings in {where} "
                             f"({self.meta['system_settings']}): {type(error).__name__}: {error}") from error
        system.check_params(self.params, where)
        return system

    @classmethod
    def from_arrays(cls, *, positions, momenta=None, velocities=None, masses=None, t=None, dt: float | None = None,
                    params: dict | None = None, system: str = IMPORTED_SYSTEM, system_settings: dict | None = None,
                    source: str | None = None) -> "Trajectories":
        """Trajectories from another simulator's arrays, NumPy or torch, float32 or float64.

        ``positions`` and ``momenta`` (or ``velocities``, multiplied by ``masses``): ``(B, T, N, D)``, or
        ``(T, N, D)`` for one system; ``masses`` and each of ``params``: a number, ``(N,)`` (the same in every
        system) or ``(B, N)``; ``t: (T,)`` evenly spaced (to float32 round-off: ``dt`` is then inferred, the
        shortest decimal that fits) or ``dt``; ``system``: a name for ``meta`` (a registered system's, with
        its ``system_settings``, lets commands measure the true energy). Every problem is named in one
        :class:`TrajectoryFileError` (``source`` leads it); ``meta["converted"]`` says in one line what was
        converted (``"float32 -> float64, velocities x masses -> momenta, dt 0.01 inferred from t"``).
        """
        try:
            checked = checked_arrays(positions=positions, momenta=momenta, velocities=velocities, masses=masses, t=t,
                                     dt=dt, params=params, system=system, system_settings=system_settings)
        except ArrayProblems as error:
            raise TrajectoryFileError(f"{source or 'arrays'}: {error}") from None
        return cls.from_checked(checked, source)

    @classmethod
    def from_checked(cls, checked: CheckedArrays, source: str | None = None, **meta) -> "Trajectories":
        """Trajectories of arrays that :func:`hamnet.conversion.checked_arrays` checked and converted; ``meta``
        adds keys to the file's ``meta`` (a reader records the files it read)."""
        record = {"schema_version": SCHEMA_VERSION, "system": checked.system,
                  "system_settings": checked.system_settings, "dt": checked.dt, "hamnet_version": __version__,
                  "converted": checked.converted, **meta}
        params = {name: torch.from_numpy(value) for name, value in checked.params.items()}
        return cls(torch.from_numpy(checked.t), torch.from_numpy(checked.z), params, record, source)

    def select(self, index) -> "Trajectories":
        """The subset of systems ``index`` (a slice, index tensor or boolean mask)."""
        return Trajectories(self.t, self.z[index], {k: v[index] for k, v in self.params.items()}, dict(self.meta),
                            self.source)


def system_label(spec: object) -> object:
    """A system spec as it is compared with another: a registered name as it is, ``path/file.py:Class``
    as ``file.py:Class`` (the file may have moved, its name and the class may not). Two specs name the
    same system when their labels are equal, so a registered name is never a file's class."""
    if not isinstance(spec, str) or ":" not in spec:
        return spec
    path, class_name = spec.rsplit(":", 1)
    return f"{Path(path).name}:{class_name}"


def _check_same_system(spec: str, recorded: str, where: str) -> None:
    """Refuse ``spec`` (a system named by the user) when it is not the system ``recorded`` in a file's
    ``meta`` (by :func:`system_label`), whose true energy would then be of other physics; checked on the
    text, before any file is imported."""
    if system_label(spec) != system_label(recorded):
        raise ValueError(f"{where} was made by the system {recorded!r}, not {spec!r}; measuring it with another "
                         "system's energy would report the drift of the wrong physics")


def save_trajectories(path: str | os.PathLike, data: Trajectories) -> None:
    """Validate ``data`` and write it atomically to ``path`` (``.npz``)."""
    meta = {"schema_version": SCHEMA_VERSION, **data.meta}
    arrays = {"t": data.t.detach().cpu().double().numpy(), "z": data.z.detach().cpu().double().numpy()}
    for name, value in data.params.items():
        if name in RESERVED_KEYS:
            raise TrajectoryFileError(f"parameter name {name!r} is reserved; rename it")
        arrays[name] = value.detach().cpu().double().numpy()
    _validate(arrays, meta, source="data to save")
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_path(path) as tmp:
        _write_npz(tmp, arrays)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez`` writes (one uncompressed ``NAME.npy`` member per array), safe against Ctrl-C and SIGTERM.

    An interrupt that lands inside a zipfile constructor leaves a half-built object, and one that leaves an
    archive unclosed lets its finaliser write to a closed file; either prints a traceback after hamnet's
    one-line message. So the constructors run with interrupts deferred (delivered right after), and an
    interrupted write closes what it opened before the interrupt goes on; the temporary file is then removed.
    """
    with open(path, "wb") as handle:
        archive = member = None
        try:  # a deferred interrupt is raised as a block ends: inside this try, so what it built is closed
            with interrupts_deferred():
                archive = zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True)
            for name, array in arrays.items():
                with interrupts_deferred():
                    member = archive.open(f"{name}.npy", "w", force_zip64=True)
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
                member.close()
            archive.close()
        except BaseException:
            for opened in (member, archive):  # the file is discarded: close only to quiet the finalisers
                with contextlib.suppress(Exception):
                    if opened is not None:
                        opened.close()
            raise


def load_trajectories(path: str | os.PathLike) -> Trajectories:
    """Read and validate a trajectory file; raises :class:`TrajectoryFileError` naming the problem."""
    path = Path(path)
    if path.is_dir():
        raise TrajectoryFileError(f"{path} is a folder; give a .npz trajectory file")
    if not path.is_file():
        raise TrajectoryFileError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise TrajectoryFileError(f"{path}: not a .npz trajectory file (expected a zip archive written by numpy)")
    check_memory(_stored_bytes(path), f"loading {path}", "use a file with fewer systems or steps")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrajectoryFileError(f"{path}: not a readable .npz trajectory file ({reason})") from error
    if "meta" not in arrays:
        raise TrajectoryFileError(f"{path}: missing key 'meta'; not a hamnet trajectory file")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as error:
        raise TrajectoryFileError(f"{path}: 'meta' is not valid JSON ({error})") from error
    _validate(arrays, meta, source=str(path))
    params = {k: torch.from_numpy(v) for k, v in arrays.items() if k not in RESERVED_KEYS}
    data = Trajectories(torch.from_numpy(arrays["t"]), torch.from_numpy(arrays["z"]), params, meta, str(path))
    for problem in data.unphysical():
        log.warning("hamnet: warning: %s: %s", path, problem)
    return data


def _stored_bytes(path: Path) -> int:
    """Bytes the arrays of an ``.npz`` file take once loaded, read from their headers alone.

    A header that claims more data than its member holds (a truncated file, or a crafted one whose
    header claims terabytes) is refused here, before anything is allocated.
    """
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    raise TrajectoryFileError(f"{path}: holds {member.filename!r}, which is not a numpy array; "
                                              "a trajectory file holds only .npy arrays")
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(handle)
                    claimed = math.prod(shape) * dtype.itemsize
                    held = member.file_size - handle.tell()
                if claimed > held:
                    raise TrajectoryFileError(
                        f"{path}: array {member.filename[:-4]!r} claims shape {shape} ({claimed:,} bytes) but the "
                        f"file holds {held:,} bytes of it; the file is truncated or corrupt")
                total += claimed
    except TrajectoryFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrajectoryFileError(f"{path}: not a readable .npz trajectory file ({reason})") from error
    return total


def _validate(arrays: dict[str, np.ndarray], meta: dict, source: str) -> None:
    def fail(message: str):
        raise TrajectoryFileError(f"{source}: {message}")

    if not isinstance(meta, dict):
        fail("'meta' must be a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        fail(f"unknown schema version {version!r}; this hamnet reads version {SCHEMA_VERSION}")
    for key in REQUIRED_META:
        if key not in meta:
            fail(f"'meta' lacks {key!r}")
    for key in ("t", "z", "m"):
        if key not in arrays:
            fail(f"missing key {key!r}")
    for name, value in arrays.items():
        if value.dtype != np.float64:
            fail(f"{name!r} has dtype {value.dtype}; expected float64")
        if not np.isfinite(value).all():
            fail(f"{name!r} contains NaN or infinite values")
    z, t = arrays["z"], arrays["t"]
    if z.ndim != 5 or z.shape[2] != 2 or z.shape[4] not in (2, 3):
        fail(f"'z' has shape {z.shape}; expected (B, T, 2, N, D) with D = 2 or 3")
    n_systems, n_times, _, n_particles, _ = z.shape
    if min(n_systems, n_times, n_particles) < 1:
        fail(f"'z' has shape {z.shape}; B, T and N must be at least 1")
    if t.shape != (n_times,):
        fail(f"'t' has shape {t.shape}; expected ({n_times},) to match T in 'z'")
    if n_times > 1 and not (np.diff(t) > 0).all():
        fail("'t' must be strictly increasing")
    for name, value in arrays.items():
        if name in RESERVED_KEYS:
            continue
        if value.ndim not in (1, 2) or value.shape[0] != n_systems or (value.ndim == 2 and value.shape[1] != n_particles):
            fail(f"parameter {name!r} has shape {value.shape}; expected ({n_systems},) or ({n_systems}, {n_particles})")
    if (arrays["m"] <= 0).any():
        fail("masses 'm' must be positive")
    dt = meta["dt"]
    if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and dt > 0 and math.isfinite(dt)):
        fail(f"'meta' dt must be a positive number, got {dt!r}")
    if n_times > 1 and not np.allclose(np.diff(t), dt, rtol=1e-6, atol=0):
        fail(f"'t' is not spaced by meta's dt = {dt}")
    if not isinstance(meta["system"], str) or not isinstance(meta["system_settings"], dict):
        fail("'meta' system must be a name and system_settings a JSON object")
    for key, actual, axis in (("n_particles", n_particles, "N"), ("dim", z.shape[4], "D")):
        stated = meta["system_settings"].get(key)
        if isinstance(stated, int) and not isinstance(stated, bool) and stated != actual:
            fail(f"'meta' system_settings say {key} = {stated}, but 'z' holds {axis} = {actual}; the settings must "
                 "describe the arrays (fix meta or the arrays)")
