"""Another simulator's arrays as hamnet's trajectories: every check at once, and what was converted.

Positions ``q`` and momenta ``p`` (or velocities ``v`` with masses ``m``: then ``p = m v``) come as
NumPy arrays or torch tensors of shape ``(B, T, N, D)``, or ``(T, N, D)`` for one system, in float32
or float64, with the times ``t: (T,)`` or the step ``dt`` between them; masses and other per-particle
parameters as a number, ``(N,)`` (the same in every system) or ``(B, N)``. :func:`checked_arrays`
checks all of it, reports every problem in one :class:`ArrayProblems` (one line), and returns hamnet's
schema in float64 (:class:`CheckedArrays`: ``t[i] = i * dt``, ``z: (B, T, 2, N, D)``, parameters
``(B, N)``) with notes that say what was converted.

Time stamps written in float32 (``np.linspace(0, 2, 201, dtype=np.float32)``) are even only to their
round-off: steps ``t[i + 1] - t[i]`` that differ from their mean by at most :data:`TIME_ROUND_OFF`
times the largest ``|t|`` count as even, and ``dt`` inferred from them is the shortest decimal that
fits them all (0.01, not 0.0099999998). ``hamnet.io.Trajectories.from_arrays`` is the public door.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ArrayProblems", "CheckedArrays", "IMPORTED_SYSTEM", "TIME_ROUND_OFF", "checked_arrays", "exact_number",
           "inferred_step"]

#: how far float32 time stamps may stray from an even grid, relative to the largest |t|: each stamp is
#: off by up to half a float32 unit in the last place, so a step by up to one; four leaves a margin
TIME_ROUND_OFF = 4 * float(np.finfo(np.float32).eps)
#: the system name of imported data when none is given (not a registered system: commands that need
#: the true energy skip it, or take --true-system)
IMPORTED_SYSTEM = "imported"
#: the quantities given as trajectories, (B, T, N, D) or (T, N, D)
MOTION = ("positions", "momenta", "velocities")
#: parameter names the file schema keeps for itself ("m" is given as masses)
RESERVED = ("t", "z", "meta", "m")


class ArrayProblems(ValueError):
    """Arrays that cannot become trajectories; ``problems`` lists every reason, the message joins them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            super().__init__(f"{len(problems)} problems: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1)))


@dataclass(frozen=True)
class CheckedArrays:
    """Checked and converted arrays, float64: ``t: (T,)``, ``z: (B, T, 2, N, D)``, ``params`` name ->
    ``(B, N)`` (masses ``m`` first), the step ``dt``, the system's name and settings, and ``notes``, each
    a conversion made (``"float32 -> float64"``, ``"dt 0.01 inferred from t"``)."""

    t: np.ndarray
    z: np.ndarray
    params: dict[str, np.ndarray]
    dt: float
    system: str
    system_settings: dict
    notes: tuple[str, ...] = ()

    @property
    def converted(self) -> str:
        """The notes in one line (``"nothing"`` when nothing was converted)."""
        return ", ".join(self.notes) or "nothing"


def checked_arrays(*, positions=None, momenta=None, velocities=None, masses=None, t=None, dt: float | None = None,
                   params: Mapping[str, object] | None = None, system: str = IMPORTED_SYSTEM,
                   system_settings: Mapping | None = None, reported: Mapping[str, str] | None = None) -> CheckedArrays:
    """Check and convert another simulator's arrays (shapes in the module's docstring); raises
    :class:`ArrayProblems` naming every problem found. ``reported`` holds problems a file reader found,
    each under the quantity it leaves missing (``"positions"``, ``"momenta"`` for momenta or velocities,
    ``"masses"``, ``"t"`` for t or dt) or any other label: they come first, and a quantity named there
    is not reported missing again."""
    problems = list((reported or {}).values())
    given = {name: value for name, value in (("positions", positions), ("momenta", momenta),
                                              ("velocities", velocities), ("t", t)) if value is not None}
    _check_presence(given, masses, dt, set(reported or {}), problems)
    dtypes: dict[str, str] = {}
    arrays = _as_floats(given, dtypes, problems)
    per_particle = _as_numbers(masses, params or {}, dtypes, problems)
    shape = _motion_shape(arrays, problems)
    for name, value in arrays.items():
        _check_finite(_plural(name), value, problems)
    for name, value in per_particle.items():
        _check_finite("masses" if name == "m" else f"parameter {name!r}", value, problems)
    if shape is not None:
        per_particle = {name: _per_particle(name, value, shape, problems) for name, value in per_particle.items()}
    notes: list[str] = []
    step = _time_step(arrays.get("t"), dt, shape, problems, notes)
    _check_system(system, system_settings, problems)
    if problems:
        raise ArrayProblems(problems)
    q = arrays["positions"].reshape(shape)
    if "momenta" in arrays:
        p = arrays["momenta"].reshape(shape)
    else:
        p = arrays["velocities"].reshape(shape) * per_particle["m"][:, None, :, None]
        notes.insert(0, "velocities x masses -> momenta")
    notes[:0] = _dtype_notes(dtypes)
    z = np.stack([q, p], axis=2)
    t_out = np.arange(shape[1], dtype=np.float64) * step
    return CheckedArrays(t_out, z, per_particle, step, system, dict(system_settings or {}), tuple(notes))


def _check_presence(given: dict, masses, dt, explained: set[str], problems: list[str]) -> None:
    """What must be there: positions, momenta or velocities (not both), masses, and t or dt; a quantity
    in ``explained`` was reported by the caller already."""
    if "positions" not in given and "positions" not in explained:
        problems.append("no positions")
    if "momenta" in given and "velocities" in given:
        problems.append("both momenta and velocities given (give one)")
    elif not {"momenta", "velocities"} & set(given) and "momenta" not in explained:
        problems.append("no momenta or velocities")
    if masses is None and "masses" not in explained:
        problems.append("no masses (every hamnet system has masses m: give them per particle)")
    if "t" not in given and dt is None and "t" not in explained:
        problems.append("no t or dt: give the times t, shape (T,), or the step dt between them")


def _as_floats(given: dict, dtypes: dict[str, str], problems: list[str]) -> dict[str, np.ndarray]:
    """The trajectory arrays and ``t`` as float64 NumPy arrays; any dtype but float32 and float64 is a problem.
    Records each one's dtype in ``dtypes``."""
    arrays = {}
    for name, value in given.items():
        array = _numpy(name, value, problems)
        if array is not None and array.dtype not in (np.float32, np.float64):
            problems.append(f"{_plural(name)} have dtype {array.dtype} (give float32 or float64)")
        elif array is not None:
            dtypes[name] = str(array.dtype)
            arrays[name] = array.astype(np.float64)
    return arrays


def _as_numbers(masses, params: Mapping, dtypes: dict[str, str], problems: list[str]) -> dict[str, np.ndarray]:
    """Masses (as ``m``) and the parameters as float64 arrays, from floats, integers or plain numbers;
    parameter names checked. Records the dtype of each one given as an array in ``dtypes``."""
    entries = [] if masses is None else [("m", masses, "masses", "masses")]  # key, value, in messages, in notes
    entries += [(key, value, f"parameter {key!r}", key) for key, value in params.items()]
    arrays = {}
    for key, value, label, name in entries:
        if label != "masses" and (not isinstance(key, str) or not key.isidentifier() or key in RESERVED):
            problems.append(f"parameter name {key!r} is not allowed: use a Python identifier other than "
                            f"{', '.join(RESERVED)} (masses are given as masses)")
            continue
        array = _numpy(label, value, problems)
        if array is not None and (array.dtype.kind not in "fiu" or array.dtype == np.float16):
            problems.append(f"{label} have dtype {array.dtype} (give float32, float64 or integer numbers)")
        elif array is not None:
            if isinstance(value, np.ndarray) or _is_torch(value):  # a plain number or list has no dtype of its own
                dtypes[name] = str(array.dtype)
            arrays[key] = array.astype(np.float64)
    return arrays


def _numpy(label: str, value, problems: list[str]) -> np.ndarray | None:
    """A NumPy array of ``value``: a torch tensor (any device, gradients dropped), an array, a list or a
    number; None after reporting what it is not."""
    try:
        return value.detach().cpu().numpy() if _is_torch(value) else np.asarray(value)
    except (ValueError, TypeError) as error:  # a ragged list, or a torch dtype NumPy lacks (bfloat16)
        problems.append(f"{label} are not an array of numbers ({str(error).splitlines()[0]})")
        return None


def _is_torch(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _motion_shape(arrays: dict[str, np.ndarray], problems: list[str]) -> tuple[int, int, int, int] | None:
    """``(B, T, N, D)`` shared by positions and momenta or velocities, or None after reporting why not."""
    shapes = {name: arrays[name].shape for name in MOTION if name in arrays}
    if "positions" not in shapes:
        return None
    shape = shapes["positions"]
    if len(shape) not in (3, 4) or shape[-1] not in (2, 3):
        problems.append(f"positions have shape {shape}, expected (B, T, N, D) or (T, N, D) with D = 2 or 3")
        return None
    for name, other in shapes.items():
        if other != shape:
            problems.append(f"{name} have shape {other} but positions {shape} (they must match)")
    full = (1, *shape) if len(shape) == 3 else shape
    if min(full[0], full[2]) < 1 or full[1] < 2:
        problems.append(f"positions have shape {shape}: a trajectory needs at least 2 times and 1 particle")
        return None
    return full


def _check_finite(label: str, value: np.ndarray, problems: list[str]) -> None:
    bad = ~np.isfinite(value)
    if bad.any():
        first = [int(i) for i in np.argwhere(bad)[0]]
        where = f" (the first at index {first})" if first else ""
        problems.append(f"{label} hold {int(bad.sum())} NaN or infinite value{'s' if bad.sum() > 1 else ''}{where}")


def _per_particle(name: str, value: np.ndarray, shape: tuple[int, int, int, int], problems: list[str]) -> np.ndarray:
    """``value`` as ``(B, N)``: a number for every particle, ``(N,)`` for every system, or ``(B, N)``."""
    n_systems, _, n_particles, _ = shape
    label = "masses" if name == "m" else f"parameter {name!r}"
    if value.ndim == 0 or value.shape == (n_particles,):
        value = np.broadcast_to(value, (n_systems, n_particles)).copy()
    elif value.shape != (n_systems, n_particles):
        problems.append(f"{label} have shape {value.shape}, expected a number, ({n_particles},) for every system, "
                        f"or ({n_systems}, {n_particles})")
        return value
    if name == "m" and np.isfinite(value).all() and (value <= 0).any():
        problems.append(f"masses must be positive ({int((value <= 0).sum())} are not)")
    return value


def _time_step(t: np.ndarray | None, dt, shape, problems: list[str], notes: list[str]) -> float | None:
    """The step between the times: ``dt`` as given (checked against ``t`` when both are), or inferred from ``t``."""
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer))
                           or not (math.isfinite(dt) and dt > 0)):
        problems.append(f"dt must be a positive number, got {dt!r}")
        return None
    dt = None if dt is None else exact_number(dt)
    if t is None:
        return dt
    n_times = None if shape is None else shape[1]
    if t.ndim != 1 or (n_times is not None and t.shape != (n_times,)):
        problems.append(f"t has shape {t.shape}, expected ({n_times if n_times is not None else 'T'},), one time "
                        "per frame")
        return None
    if not np.isfinite(t).all() or len(t) < 2:
        return None
    step = inferred_step(t, dt, problems)
    if step is not None and dt is None:
        notes.append(f"dt {step:g} inferred from t")
    if step is not None and t[0] != 0:
        notes.append(f"t shifted to start at 0 (it started at {t[0]:g})")
    return step


def inferred_step(t: np.ndarray, dt: float | None, problems: list[str]) -> float | None:
    """The even step of the times ``t: (T,)`` to float32 round-off, the shortest decimal that fits them
    (or ``dt``, when given and it fits); None after adding the reason to ``problems``."""
    steps = np.diff(t)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        problems.append(f"t is not increasing: t[{i + 1}] = {t[i + 1]:g} follows t[{i}] = {t[i]:g} "
                        f"({int((steps <= 0).sum())} such steps): sort the frames by time")
        return None
    slack = TIME_ROUND_OFF * float(np.abs(t).max())
    mean = (t[-1] - t[0]) / (len(t) - 1)
    if np.abs(steps - mean).max() > slack:
        problems.append(f"t is not evenly spaced: its steps run from {steps.min():.6g} to {steps.max():.6g}, "
                        f"further apart than float32 time stamps allow ({slack:.2g}): hamnet needs one dt, so "
                        "resample at even times")
        return None
    tolerance = slack / (len(t) - 1)
    if dt is not None:
        if abs(mean - dt) > tolerance:
            problems.append(f"t is spaced by {mean:.6g}, not by dt = {dt:g}")
            return None
        return dt
    for digits in range(1, 17):
        candidate = float(f"{mean:.{digits - 1}e}")
        if abs(candidate - mean) <= tolerance:
            return candidate
    return float(mean)


def exact_number(value) -> float:
    """``value`` as the float it was written as: a float32 0.01 is 0.01, not 0.009999999776 (NumPy prints a
    scalar as the shortest decimal that its own dtype reads back as the same number)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return float(str(value)) if isinstance(value, np.floating) else float(value)


def _plural(name: str) -> str:
    """How a message names an array: ``t`` as the times t, so that it reads "the times t have ..."."""
    return "the times t" if name == "t" else name


def _check_system(system, settings, problems: list[str]) -> None:
    if not isinstance(system, str) or not system.strip():
        problems.append(f"the system name must be a non-empty string, got {system!r}")
    if settings is not None:
        try:
            json.dumps(dict(settings))
        except (TypeError, ValueError):
            problems.append("system_settings must be a mapping that JSON can write")


def _dtype_notes(dtypes: dict[str, str]) -> list[str]:
    """``["float32 -> float64"]`` when everything given came in one other dtype, else one note per dtype
    naming what came in it (``"positions and momenta float32 -> float64"``); ``t`` is rebuilt, not converted."""
    kept = {name: dtype for name, dtype in dtypes.items() if name != "t"}
    groups: dict[str, list[str]] = {}
    for name, dtype in kept.items():
        if dtype != "float64":
            groups.setdefault(dtype, []).append(name)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(kept):
        return [f"{next(iter(groups))} -> float64"]
    return [f"{' and '.join(names)} {dtype} -> float64" for dtype, names in groups.items()]
