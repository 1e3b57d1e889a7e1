"""What the long, resumable benchmarks share: running in pieces on several processes, logging, and
results files any JSON parser reads.

Several processes started with the same command share a benchmark's runs: each takes the next run of the
list that no live process holds (a claim is a lock on ``<work>/claims/<run>.claim``, which the system
drops when its process ends, killed or not), so one long run does not leave a core idle the way a fixed
split can; at the end each waits for the runs it passed over (resuming any whose holder died), so the
last report written has every run. ``--part K/N`` still restricts a process to every N-th run, from the
K-th (for machines that share no folder); ``--report`` writes the results from the scores present.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from hamnet.paths import atomic_path


def run_script(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``, ending a foreseen failure (a cached run of other settings, a missing
    checkout, a file that cannot be written) with one line naming the script, not a traceback."""
    try:
        main()
    except (RuntimeError, ValueError, OSError) as error:
        raise SystemExit(f"{Path(sys.argv[0]).name}: error: {error}") from None


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


@contextmanager
def claimed(folder: Path, name: str, wait: bool = False) -> Iterator[bool]:
    """True, holding the claim on run ``name`` until the block ends, or False if another process (or another
    claim in this one) holds it; with ``wait``, blocks until the holder lets go, and is always True. The claim
    is an exclusive ``flock`` on ``folder/<name>.claim``: the system drops it when its holder ends, however
    it ends, so a killed process leaves nothing stale."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.claim", "a") as handle:  # the file stays: deleting it would let two hold it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            mine = True
        except BlockingIOError:
            mine = False
        yield mine


def my_runs(plan: Sequence[str], part: int, parts: int, claims: Path) -> Iterator[str]:
    """This process's runs of ``plan`` (run names): every ``parts``-th from the ``part``-th, each while this process
    holds its claim in ``claims`` (held until the loop moves on). Runs another process holds are passed
    over, then waited for at the end and given too: their holder may have been killed (the run resumes
    here), and when this generator ends every run is done, so a report written after it is complete.
    A run must check its own cached result, since another process may have finished it. Two walkers in
    one process can block each other (a lock held through one open file blocks another in the same
    process); one per process is the use."""
    passed_over = []
    for run in plan[part - 1::parts]:
        with claimed(claims, run) as mine:
            if mine:
                yield run
            else:
                logging.info("%s: another process has it; taking the next", run)
                passed_over.append(run)
    for run in passed_over:
        logging.info("%s: waiting for the process that holds it", run)
        with claimed(claims, run, wait=True):
            yield run


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
