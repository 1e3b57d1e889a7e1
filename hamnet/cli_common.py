"""What every ``hamnet`` subcommand shares: input errors, checks of flags and output paths, plugins.

Kept apart from :mod:`hamnet.cli` so that the subcommand modules (:mod:`hamnet.cli_visual`) and the
main parser import it without importing each other.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import threading
from collections.abc import Iterator

import torch

from .systems import import_file

from .integrate import ConvergenceError
from .resources import check_memory

__all__ = ["InputError", "Terminated", "add_common_options", "load_plugins", "one_line_error",
           "terminate_as_interrupt", "torch_threads", "check_seed", "check_finite_positive", "check_range",
           "check_in_dtype", "check_model_memory", "refuse_given", "true_system", "DEFAULT_THREADS"]

#: torch CPU threads of every command unless --threads says otherwise. Measured on 2 cores: `time hamnet demo
#: --quiet`, idle, 61 s on one thread against 57 s on torch's default two; with two other processes on the
#: cores, 105 s against 191 s (two threads spin-wait for each other); `hamnet rollout` of the pretrained
#: springs-so2, 16 systems x 1000 steps, with two other processes on the cores: 9.1-9.9 s on one thread,
#: 52-59 s on two. hamnet's networks are small: they gain little from a second thread and lose much when
#: others share the cores, so every command starts on one.
DEFAULT_THREADS = 1

#: phrases of torch's allocators when an allocation fails (CPU and CUDA)
_OUT_OF_MEMORY = ("can't allocate memory", "not enough memory", "out of memory", "failed to allocate")


class InputError(ValueError):
    """An error in what the user asked for, reported as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that every cleanup path for an interrupt runs."""


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block on ``count`` torch CPU threads (None: as they are), then give the caller's count back:
    ``hamnet.cli.main`` also runs inside other programs' processes (the tests, a notebook)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (the previous handler comes back after).
    Only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line_error(error: BaseException) -> str:
    """What went wrong, in one line, for ``hamnet: error: ...``.

    Expected failures (bad input: ValueError and its kin; the file system: OSError, a full disk
    included; memory) read as their message. Anything else is unexpected, a bug in hamnet or in a
    user's own code: its type is named and ``--debug`` offered for the traceback.
    """
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, SystemExit):
        return f"user code called sys.exit({error.code!r}) while hamnet was running; hamnet stopped"
    if isinstance(error, OSError):
        if error.strerror:  # str() would lead with "[Errno 28]"
            reason = " ".join(error.strerror.split())
            named = error.filename is not None and str(error.filename) not in reason
            return f"{error.filename}: {reason}" if named else reason
        return message
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError)
                                           and any(phrase in message.lower() for phrase in _OUT_OF_MEMORY)):
        if isinstance(error, MemoryError) and str(error):
            return message
        return ("out of memory: the job does not fit in this machine's memory; use fewer systems, steps or "
                f"particles, a smaller --batch-size or --width ({_shorten(message)})")
    if isinstance(error, (ValueError, ConvergenceError)):  # hamnet's expected failures carry a full message
        return message
    return f"{type(error).__name__}: {_shorten(message)} (unexpected; rerun with --debug for the traceback)"


def _shorten(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes (``--threads`` is applied by :func:`hamnet.cli.main`)."""
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch CPU threads (default: {DEFAULT_THREADS}; hamnet's small networks gain little from "
                        "more, and lose much when other work shares the cores; try more for wide models on an idle "
                        "machine)")
    parser.add_argument("--debug", action="store_true",
                        help="on failure, show the full traceback instead of one line (also: HAMNET_DEBUG=1)")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="import your own Python file first, so that the groups, systems, models and "
                        "integrators it registers can be named in the other flags and found in checkpoints "
                        "(repeatable; see docs/extending.md). Only files you name here are ever run.")


def load_plugins(paths: list[str]) -> None:
    """Import each plugin file named on the command line, in order."""
    for path in paths:
        import_file(path, what="plugin")


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        shown = str(seed) if len(str(seed)) <= 24 else f"{str(seed)[:12]}...({len(str(seed))} digits)"
        raise InputError(f"--seed must be between 0 and 2**63 - 1, got {shown}")


def check_finite_positive(flag: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise InputError(f"{flag} must be a positive finite number, got {value}")


def check_range(flag: str, value: float | None, low: float, high: float | None = None) -> None:
    """Refuse ``value`` below ``low`` or above ``high`` (None: no upper bound), or not finite, naming
    ``flag``; None passes."""
    if value is None:
        return
    finite = isinstance(value, int) or math.isfinite(value)
    if finite and low <= value and (high is None or value <= high):
        return
    shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:12]}...({len(str(value))} digits)"
    bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
    raise InputError(f"{flag} must be {bounds}, got {shown}")


def check_in_dtype(flag: str, value: float | None, dtype: str, *, zero: bool = False) -> None:
    """Refuse a setting that the dtype it will live in (``"float32"``, ``"float64"``) cannot hold: past its
    largest finite value (it would become inf) or, a positive one, below its smallest normal value (it
    would become 0 or lose its digits). ``zero=True`` lets 0 pass; None passes."""
    if value is None or (zero and value == 0):
        return
    info = torch.finfo(getattr(torch, dtype))
    if not info.tiny <= abs(value) <= info.max:
        raise InputError(f"{flag} {value:g} cannot be held in {dtype}, where it is used (its range is {info.tiny:.3g} "
                         f"to {info.max:.3g}); give a value inside it" + (" or use --dtype float64"
                                                                           if dtype == "float32" else ""))


def refuse_given(args: argparse.Namespace, flags: tuple[str, ...], reason: str) -> None:
    """Refuse the flags of ``flags`` that were given, saying ``reason`` (why they do not apply) and which to
    drop. Such a flag defaults to None or False, so one given at any value, its documented default's
    included, counts as given."""
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in flags}
    given = [flag for flag, value in values.items() if value is not None and value is not False]  # 0 is given
    if given:
        raise InputError(f"{reason}; drop {', '.join(given)}")


def check_model_memory(config, dtype: str) -> None:
    """Refuse a model whose weights, gradients and Adam's two moments cannot fit in memory, naming
    --width and --depth, before anything is built."""
    from .models import parameter_count

    count = parameter_count(config)
    bytes_per_value = 8 if dtype == "float64" else 4
    check_memory(4 * count * bytes_per_value,
                 f"training a {config.name} model of width {config.width} and depth {config.depth} ({count:,} weights)",
                 "use a smaller --width or --depth")


def true_system(data, spec: str | None):
    """The system whose true Hamiltonian to measure ``data`` (a :class:`hamnet.io.Trajectories`) with:
    the one ``spec`` names (``--true-system``, the user's own choice, so its file may be imported), else
    the file's own registered system, else None (the file names code, which is never run for it)."""
    from .io import SystemUnavailable

    if spec is None:
        try:
            return data.system()
        except SystemUnavailable:
            return None
    try:
        return data.system(spec)
    except (ValueError, OSError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # a user's system class can fail in any way; say so in one line
        raise InputError(f"system {spec!r} failed while being built: {type(error).__name__}: {error}") from error
