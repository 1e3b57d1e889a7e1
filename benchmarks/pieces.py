"""What the long, resumable benchmarks share: running in pieces on several processes, logging, and
results files any JSON parser reads.

``--part K/N`` gives a process every N-th run of a benchmark's list, from the K-th, so N processes
(one per core) share the work; ``--report`` writes the results from the scores present.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch

from hamnet.io import atomic_path


def add_piece_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, help="torch threads (recorded in the results)")
    parser.add_argument("--part", default="1/1", help="K/N: this process takes every N-th run, starting at the K-th")
    parser.add_argument("--report", action="store_true", help="write the results from the scores present; train nothing")


def start_pieces(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, int, int]:
    """Parse the arguments, check ``--part``, set torch's threads and log lines with the time."""
    args = parser.parse_args()
    try:
        part, parts = (int(x) for x in args.part.split("/"))
        assert 1 <= part <= parts
    except (ValueError, AssertionError):
        parser.error(f"--part must be K/N with 1 <= K <= N, not {args.part!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamnet.training").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    return args, part, parts


def strict_json(value):
    """``value`` with non-finite floats as the strings "inf" / "nan", so any JSON parser reads it."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: Path, value) -> None:
    """``value`` as strict JSON in ``path``, written whole or not at all (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(strict_json(value), indent=2) + "\n")


def write_result_files(stem: Path, results: dict, lines: list[str]) -> None:
    """``<stem>.json`` (``results``, strict JSON) and ``<stem>.md`` (``lines``), each written whole or not
    at all (the JSON first: a failure leaves the old Markdown beside new figures, never a torn file)."""
    write_json(stem.parent / f"{stem.name}.json", results)
    with atomic_path(stem.parent / f"{stem.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    logging.info("wrote %s.md", stem)
