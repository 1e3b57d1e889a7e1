"""Other simulators' trajectory files: ``.npz`` and ``.npy`` arrays, and through ASE the atomistic formats.

:func:`import_trajectories` reads one of

- an ``.npz`` whose arrays carry the usual names (:data:`USUAL_NAMES`: ``positions`` or ``q``,
  ``momenta`` or ``p``, ``velocities`` or ``v``, ``masses`` or ``m``, ``t`` or ``time``, and a scalar
  ``dt``), or any names given by keyword (``positions="pos"``, on the command line ``--positions pos``);
- a ``.npy`` file, which holds one array: the positions; the momenta (or velocities), masses and times
  come from further ``.npy`` files named by keyword (``momenta="p.npy"``), masses also as a number;
- any other file through ASE (``pip install 'hamnet[ase]'``): extended XYZ, ASE's ``.traj`` and the
  other trajectory formats ASE reads, one file per system, with the masses and momenta (or velocities)
  the file stores and the times of its frames (``info["time"]``) where it has them. ASE stores momenta in
  its own units (amu times Angstrom per ASE time unit, about 10.18 fs): give ``dt`` in that time unit.

The arrays then go through :func:`hamnet.conversion.checked_arrays`, so every problem, the reader's
included, is reported at once, and ``meta`` records the files read (path and sha256), their format and
what was converted.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .conversion import IMPORTED_SYSTEM, ArrayProblems, checked_arrays, exact_number, inferred_step
from .io import Trajectories, TrajectoryFileError
from .provenance import file_sha256

__all__ = ["USUAL_NAMES", "import_trajectories"]

#: the names each quantity's array usually carries in an ``.npz``, looked for when no name is given
USUAL_NAMES = {"positions": ("positions", "q"), "momenta": ("momenta", "p"), "velocities": ("velocities", "v"),
               "masses": ("masses", "m"), "t": ("t", "time")}
#: per-atom arrays in which ASE's readers keep velocities, where a file stores them instead of momenta
ASE_VELOCITIES = ("velocities", "vel")


def import_trajectories(paths: str | os.PathLike | Sequence[str | os.PathLike], *, positions: str | None = None,
                        momenta: str | None = None, velocities: str | None = None, masses: str | float | None = None,
                        t: str | None = None, dt: float | None = None, params: Mapping[str, str] | None = None,
                        system: str = IMPORTED_SYSTEM, element_masses: bool = False,
                        format: str | None = None) -> Trajectories:
    """Read another simulator's trajectories (formats in the module's docstring) as hamnet's.

    ``paths``: one ``.npz`` or ``.npy`` file, or one or more files ASE reads (one system each, stacked
    in order). The keywords are named like ``hamnet import``'s flags: ``positions``, ``momenta``,
    ``velocities``, ``masses`` and ``t`` name an array (a key of the ``.npz``, or a further ``.npy`` file),
    ``masses`` may be a number, ``params`` maps a parameter's name to its array (for ASE, a per-atom
    array such as ``charges``); ``element_masses`` takes ASE's standard masses of the elements for a file
    that stores none, ``format`` is ASE's name of the format where the suffix does not tell it. Raises
    :class:`~hamnet.io.TrajectoryFileError` naming every problem at once.
    """
    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(path) for path in paths]
    names = {"positions": positions, "momenta": momenta, "velocities": velocities, "masses": masses, "t": t}
    kind = _kind(files, names, element_masses, format)
    if kind == "npz":
        found, reported, notes = _npz_arrays(files[0], names, dict(params or {}), dt)
    elif kind == "npy":
        found, reported, notes = _npy_arrays(files[0], names, dict(params or {}), dt)
    else:
        found, reported, notes = _ase_arrays(files, masses, element_masses, dict(params or {}), dt, format)
    where = str(files[0]) if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
    if "dt" in found:  # an .npz's own dt, used when no dt is given (and checked against t)
        stored = found.pop("dt")
        number = stored.shape == () and stored.dtype.kind in "fiu"
        if "t" in found:
            mismatch = _file_dt_mismatch(found["t"], exact_number(stored)) if number else None
            if mismatch:
                reported["t"] = mismatch
            elif number:
                dt = exact_number(stored)
            else:
                notes.append(f"the file's dt ignored (not a number: shape {stored.shape}, dtype {stored.dtype}); "
                             "the step comes from t")
        elif number:
            dt = exact_number(stored)
        else:
            reported["t"] = f"no t or dt: the file's dt is not a number (shape {stored.shape}, dtype {stored.dtype})"
    try:
        checked = checked_arrays(**found, dt=dt, system=system, reported=reported)
    except ArrayProblems as error:
        raise TrajectoryFileError(f"{where}: {error}") from None
    checked = dataclasses.replace(checked, notes=checked.notes + tuple(dict.fromkeys(notes)))
    record = {"format": kind, "files": [{"path": str(file), "sha256": file_sha256(file)} for file in files]}
    return Trajectories.from_checked(checked, where, imported_from=record)


def _kind(files: list[Path], names: dict, element_masses: bool, format: str | None) -> str:
    """``"npz"``, ``"npy"`` or ``"ase"`` (with ASE's format name, where given), after refusing missing files
    and keywords that do not apply to that kind."""
    if not files:
        raise ValueError("no file to import")
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise TrajectoryFileError(f"no such file: {', '.join(missing)}" if all(not Path(m).is_dir() for m in missing)
                                  else f"{', '.join(missing)}: not a file (a folder, or missing)")
    suffixes = {file.suffix.lower() for file in files}
    if format is None and suffixes & {".npz", ".npy"}:
        if len(files) > 1:
            raise ValueError("import one .npz or .npy file at a time; several files (one system each) are read "
                             "only through ASE")
        if element_masses:
            raise ValueError("--element-masses applies to files read through ASE, not to .npz or .npy files")
        return suffixes.pop()[1:]
    given = [f"--{name}" for name in ("positions", "momenta", "velocities", "t") if names[name] is not None]
    if given:
        raise ValueError(f"{', '.join(given)} {'name arrays' if len(given) > 1 else 'names an array'} of a .npz or "
                         ".npy file; a file read through ASE stores its own (drop them)")
    return "ase" if format is None else f"ase:{format}"


def _number(text) -> float | None:
    """``text`` (a flag's value, or a number) as a number, or None when it is not one."""
    if isinstance(text, bool):
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# -- .npz and .npy --------------------------------------------------------------------------------------------
#: for each quantity an .npz lacks: what it is called in the message, the names looked for, the flag to give
MISSING = {"positions": ("positions", "positions or q", "--positions KEY"),
           "momenta": ("momenta or velocities", "momenta, p, velocities or v", "--momenta KEY or --velocities KEY"),
           "masses": ("masses", "masses or m", "--masses KEY (or a number)"),
           "t": ("t or dt", "t, time or dt", "--t KEY or --dt")}


def _npz_arrays(path: Path, names: dict, params: dict, dt) -> tuple[dict, dict, list[str]]:
    """The arrays of an ``.npz`` for :func:`checked_arrays`, the problems of finding them, and notes."""
    if not zipfile.is_zipfile(path):
        raise TrajectoryFileError(f"{path}: not a readable .npz file (expected a zip archive written by numpy)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            held = list(archive.files)
            keys, reported = _npz_keys(held, names, params, dt)
            found = {quantity: archive[key] for quantity, key in keys.items()}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrajectoryFileError(f"{path}: not a readable .npz file ({reason})") from error
    if {"z", "meta"} <= set(held):
        raise TrajectoryFileError(f"{path} is a hamnet trajectory file already: use it as it is (hamnet info {path})")
    if names["masses"] is not None and "masses" not in keys and _number(names["masses"]) is not None:
        found["masses"] = _number(names["masses"])
    found["params"] = {name: found.pop(f"param {name}") for name in params if f"param {name}" in found}
    ignored = [key for key in held if key not in keys.values()]
    return found, reported, [f"ignored arrays {', '.join(map(repr, ignored))}"] if ignored else []


def _file_dt_mismatch(t, dt: float) -> str | None:
    """Why a file's own ``dt`` contradicts its times ``t``, or None (when they agree, or ``t`` has problems of its
    own, which the checks of ``t`` report)."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2 or not np.isfinite(t).all():
        return None
    step = inferred_step(t, None, [])
    if step is None or inferred_step(t, dt, []) is not None:
        return None
    return (f"the file's dt {dt:g} does not match its t (spaced by {step:g}): give --dt {step:g} to take t's "
            "spacing, or correct the file")


def _npz_keys(held: list[str], names: dict, params: dict, dt) -> tuple[dict[str, str], dict[str, str]]:
    """The key in the file of each quantity (the name given, else a usual one) and of each parameter (as
    ``"param NAME"``), and the problems of choosing them."""
    keys, reported = {}, {}
    listing = ", ".join(held) or "nothing"
    for quantity, chosen in names.items():
        if chosen is not None and str(chosen) in held:
            keys[quantity] = str(chosen)
        elif chosen is not None and not (quantity == "masses" and _number(chosen) is not None):
            reported[_missing(quantity)] = f"no array {chosen!r} (--{quantity} {chosen}): the file holds {listing}"
    motion_named = names["momenta"] is not None or names["velocities"] is not None
    for quantity, usual in USUAL_NAMES.items():
        if names[quantity] is not None or (_missing(quantity) == "momenta" and motion_named):
            continue
        matches = [name for name in usual if name in held]
        if len(matches) > 1:
            reported[_missing(quantity)] = (f"the file holds both {matches[0]!r} and {matches[1]!r}: name one with "
                                            f"--{quantity} KEY")
        elif matches:
            keys[quantity] = matches[0]
    if not motion_named and {"momenta", "velocities"} <= set(keys):
        reported["momenta"] = (f"the file holds momenta {keys.pop('momenta')!r} and velocities "
                               f"{keys.pop('velocities')!r}: choose one with --momenta KEY or --velocities KEY")
    if "dt" in held and dt is None:  # the file's dt: the step, or checked against its t where both are there
        keys["dt"] = "dt"
    given = {"masses": names["masses"] is not None, "t": dt is not None or names["t"] is not None,
             "momenta": motion_named, "positions": names["positions"] is not None}
    for quantity, (what, looked, flag) in MISSING.items():
        if not given[quantity] and not any(_missing(key) == quantity for key in keys) and quantity not in reported:
            reported[quantity] = (f"no {what}: none of the file's arrays ({listing}) is named {looked}: name one "
                                  f"with {flag}")
    for name, key in params.items():
        if key in held:
            keys[f"param {name}"] = key
        else:
            reported[f"param {name}"] = f"no array {key!r} for the parameter {name!r}: the file holds {listing}"
    return keys, reported


def _missing(quantity: str) -> str:
    """The quantity whose absence ``quantity`` reports: velocities stand in for momenta, dt for t."""
    return {"velocities": "momenta", "dt": "t"}.get(quantity, quantity)


def _npy_arrays(path: Path, names: dict, params: dict, dt) -> tuple[dict, dict, list[str]]:
    """A ``.npy`` file's positions, with the arrays of the further ``.npy`` files named (masses also as a
    number), the problems of reading them, and no notes."""
    if names["positions"] is not None:
        raise ValueError("--positions names an array of a .npz file; a .npy file is the positions (drop it)")
    found, reported = {"positions": _load_npy(path)}, {}
    for quantity in ("momenta", "velocities", "masses", "t"):
        chosen = names[quantity]
        if chosen is not None and quantity == "masses" and _number(chosen) is not None:
            found["masses"] = _number(chosen)
        elif chosen is not None:
            try:
                found[quantity] = _load_npy(Path(chosen), f"--{quantity} ")
            except TrajectoryFileError as error:
                reported[_missing(quantity)] = str(error)
    found["params"] = {}
    for name, file in params.items():
        try:
            found["params"][name] = _load_npy(Path(file), f"the parameter {name!r}: ")
        except TrajectoryFileError as error:
            reported[f"param {name}"] = str(error)
    has = {"momenta": "momenta" in found or "velocities" in found, "masses": "masses" in found,
           "t": "t" in found or dt is not None}
    for quantity, hint in (("momenta", "a .npy file holds one array, the positions: give the momenta (--momenta "
                                       "FILE.npy) or the velocities (--velocities FILE.npy) too"),
                           ("masses", "give --masses, a number or a .npy file of shape (N,) or (B, N)"),
                           ("t", "give --dt, or the times as --t FILE.npy")):
        if not has[quantity] and quantity not in reported:
            reported[quantity] = f"no {MISSING[quantity][0]}: {hint}"
    return found, reported, []


def _load_npy(path: Path, flag: str = "") -> np.ndarray:
    """One array of a ``.npy`` file (never a pickle); TrajectoryFileError naming ``flag`` and the file otherwise."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise TrajectoryFileError(f"{flag}{path}: not a readable .npy file ({reason})") from error
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise TrajectoryFileError(f"{flag}{path}: an .npz archive, not one .npy array")
    return array


# -- through ASE ----------------------------------------------------------------------------------------------
def _ase_arrays(files: list[Path], masses, element_masses: bool, params: dict, dt,
                format: str | None) -> tuple[dict, dict, list[str]]:
    """The systems of files ASE reads (one each), stacked, the problems found in them (under the quantity
    each leaves missing, the first time), and notes."""
    if masses is not None and _number(masses) is None:
        raise ValueError(f"--masses {masses}: a file read through ASE takes a number (one mass for every atom)")
    read = _ase_reader(files[0])
    systems, reported, notes = [], {}, []
    for file in files:
        found, problems, file_notes = _ase_file(read(file, format), file, masses, element_masses, params)
        systems.append(found)
        notes += file_notes
        for label, problem in problems.items():
            reported[label if label not in reported else f"{label} {file}"] = (
                f"{file}: {problem}" if len(files) > 1 else problem)
    if dt is None and any("t" not in found for found in systems) and "t" not in reported:
        reported["t"] = ("no t or dt: the frames carry no time (info 'time'): give --dt, in the time unit of the "
                         "file's momenta (ASE's, about 10.18 fs, for its own formats)")
    shapes = {str(file): found["positions"].shape for file, found in zip(files, systems) if "positions" in found}
    if len(set(shapes.values())) > 1:  # then only the first file's arrays are checked further
        reported.setdefault("positions", "the files differ in frames or atoms (" + ", ".join(
            f"{file}: {shape[0]} frames of {shape[1]} atoms" for file, shape in shapes.items()) + ")")
        systems = systems[:1]
    stacked = {key: np.stack([found[key] for found in systems]) for key in ("positions", "momenta", "velocities",
                                                                           "masses")
               if all(key in found for found in systems)}
    if not {"momenta", "velocities"} & set(stacked) and "momenta" not in reported:
        reported["momenta"] = "no momenta or velocities: some files store momenta, others velocities"
    times = [found["t"] for found in systems if "t" in found]
    if dt is None and len(times) == len(systems):
        stacked["t"] = times[0]
        if any(t.shape != times[0].shape or not np.array_equal(t, times[0]) for t in times):
            reported["t"] = "the files' frames carry different times"
    stacked["params"] = {name: np.stack([found["params"][name] for found in systems]) for name in params
                         if all(name in found["params"] for found in systems)}
    return stacked, reported, notes


def _ase_reader(first: Path):
    """``read(path, format)``: every frame of one file, as ASE reads it; TrajectoryFileError when ASE is not
    installed, or cannot read the file."""
    try:
        import ase.io
    except ModuleNotFoundError as error:
        raise TrajectoryFileError(f"{first}: reading this format needs ASE, which is not installed: "
                                  "pip install 'hamnet[ase]'") from error

    def read(path: Path, format: str | None) -> list:
        try:
            frames = ase.io.read(path, index=":", format=format)
        except Exception as error:  # ASE's many readers fail in many ways; each is one line here
            reason = str(error).splitlines()[0] if str(error) else "no detail"
            raise TrajectoryFileError(f"{path}: not a trajectory ASE can read ({type(error).__name__}: "
                                      f"{reason})") from error
        return frames if isinstance(frames, list) else [frames]
    return read


def _ase_file(frames: list, path: Path, masses, element_masses: bool,
              params: dict) -> tuple[dict, dict[str, str], list[str]]:
    """One file's system: positions ``(T, N, 3)``, momenta or velocities, masses ``(N,)``, the times where
    every frame has one, and per-atom parameters; the problems found under the quantity each leaves missing.
    A file that is no trajectory (one frame, or frames of different atoms) is refused outright."""
    reported, notes, found = {}, [], {}
    counts = sorted({len(frame) for frame in frames})
    if len(frames) < 2:
        raise TrajectoryFileError(f"{path}: {len(frames)} frame{'s' if len(frames) != 1 else ''}, a structure, not a "
                                  "trajectory (hamnet needs at least 2 frames of the same atoms)")
    if len(counts) > 1 or any((frame.numbers != frames[0].numbers).any() for frame in frames):
        raise TrajectoryFileError(f"{path}: the frames hold different atoms ({' or '.join(map(str, counts))} atoms), "
                                  "not one trajectory of the same particles")
    found["positions"] = np.stack([frame.positions for frame in frames])
    _ase_motion(frames, found, reported)
    _ase_masses(frames, masses, element_masses, found, reported, notes)
    if all("time" in frame.info for frame in frames):
        found["t"] = np.array([frame.info["time"] for frame in frames], dtype=np.float64)
    found["params"] = {}
    for name, key in params.items():
        if all(key in frame.arrays for frame in frames):
            found["params"][name] = frames[0].arrays[key]
        else:
            reported[f"param {name}"] = f"no per-atom array {key!r} for the parameter {name!r} in every frame " \
                                        f"(it has {', '.join(frames[0].arrays)})"
    if any(frame.pbc.any() for frame in frames):
        notes.append("the periodic cell ignored (positions as stored)")
    return found, reported, notes


def _ase_motion(frames: list, found: dict, reported: dict) -> None:
    """Momenta where every frame stores them, else velocities where every frame does."""
    if all(frame.has("momenta") for frame in frames):
        found["momenta"] = np.stack([frame.get_momenta() for frame in frames])
        return
    for key in ASE_VELOCITIES:
        if all(key in frame.arrays for frame in frames):
            found["velocities"] = np.stack([frame.arrays[key] for frame in frames])
            return
    some = any(frame.has("momenta") for frame in frames)
    reported["momenta"] = ("only some frames store momenta" if some else
                           "no momenta or velocities: the file stores neither (hamnet learns from positions and "
                           "momenta)")


def _ase_masses(frames: list, masses, element_masses: bool, found: dict, reported: dict, notes: list[str]) -> None:
    """The masses given, else those the file stores (the same in every frame), else, asked for, ASE's
    standard masses of the elements."""
    if masses is not None:
        found["masses"] = np.full(len(frames[0]), _number(masses))
        return
    if frames[0].has("masses"):
        stored = frames[0].get_masses()
        if any(not frame.has("masses") or not np.array_equal(frame.get_masses(), stored) for frame in frames):
            reported["masses"] = "the masses change between frames"
        found["masses"] = stored
    elif element_masses:
        if (frames[0].numbers == 0).any():
            reported["masses"] = "atoms of no element (X) have no standard mass: give --masses"
        found["masses"] = frames[0].get_masses()
        notes.append("masses of the elements from ASE's table")
    else:
        reported["masses"] = ("no masses: the file stores none: give --masses (one for every atom) or "
                              "--element-masses (ASE's standard masses of the elements)")
