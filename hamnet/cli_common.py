"""What every ``hamnet`` subcommand shares: input errors, checks of flags and output paths, plugins.

Kept apart from :mod:`hamnet.cli` so that the subcommand modules (:mod:`hamnet.cli_visual`) and the
main parser import it without importing each other.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from systems import import_file

__all__ = ["InputError", "add_common_options", "load_plugins", "check_seed", "check_finite_positive",
           "check_writable"]


class InputError(ValueError):
    """An error in what the user asked for, reported as one line."""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes."""
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
        raise InputError(f"--seed must be between 0 and 2**63 - 1, got {seed}")


def check_finite_positive(flag: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise InputError(f"{flag} must be a positive finite number, got {value}")


def check_writable(path: str) -> None:
    """Fail early, before any work, when ``path`` cannot be written."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write {path}: folder {folder} is not writable")
    if Path(path).is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name")
