"""What a training run shows while it runs: progress bars, and its metrics as TensorBoard scalars.

Neither changes what a run computes: both only read the metrics each epoch already made, so a run
watched or not ends with bitwise the same weights, and neither is part of its configuration (nor of
what a resume compares). Progress bars are ``tqdm.auto``'s, text in a terminal and a widget in a
notebook; by default they show where someone is likely watching (:func:`watched`). TensorBoard event
files are written into the run folder itself, so ``tensorboard --logdir runs`` lists each run folder
under ``runs/`` as one run; they need the ``tensorboard`` package (``pip install 'hamnet[tensorboard]'``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = ["EVENT_FILE_PREFIX", "Monitor", "MonitorSettings", "check_tensorboard", "watched"]

#: how TensorBoard event files are named (``events.out.tfevents.<time>.<host>.<pid>.<n>``)
EVENT_FILE_PREFIX = "events.out.tfevents."


def watched() -> bool:
    """Whether someone is likely watching this process: its stderr is a terminal, or it is a notebook's
    kernel (IPython running under ipykernel). Logs, pipes and test runs are not watched."""
    stream = sys.stderr
    if stream is not None and getattr(stream, "isatty", lambda: False)():
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "ipykernel" in sys.modules


def check_tensorboard() -> None:
    """Refuse TensorBoard logging in one line, before anything is written, where the package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError("TensorBoard logging needs the tensorboard package: pip install 'hamnet[tensorboard]' "
                         "(or train without --tensorboard)")


@dataclass(frozen=True)
class MonitorSettings:
    """How a run is watched: ``progress`` bars (None: where :func:`watched` says someone looks) and
    ``tensorboard`` event files in the run folder."""

    progress: bool | None = None
    tensorboard: bool = False

    def open(self, folder: Path, epochs: int, done: int) -> "Monitor":
        """The monitor of a run in ``folder`` of ``epochs`` epochs that has ``done`` of them already."""
        return Monitor(folder if self.tensorboard else None, watched() if self.progress is None else self.progress,
                       epochs, done)


class Monitor:
    """One run's progress bars (one over the epochs, one over each epoch's batches) and its TensorBoard
    writer; a context manager that closes both. For a run that resumes after ``done`` epochs, the
    writer tells TensorBoard to drop what an earlier process logged for the epochs after ``done``,
    which this run computes again."""

    def __init__(self, board: Path | None, progress: bool, epochs: int, done: int) -> None:
        self.progress = progress
        self.bar = tqdm(total=epochs, initial=done, desc="training", unit="epoch", disable=not progress)
        self.writer = None
        if board is not None:
            from torch.utils.tensorboard import SummaryWriter  # imported here: it takes seconds, and is optional

            self.writer = SummaryWriter(str(board), purge_step=done + 1 if done else None)

    def batches(self, batches: Iterable, epoch: int) -> Iterator:
        """``batches`` with a bar of their own for epoch number ``epoch``, gone when the epoch ends."""
        return iter(tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not self.progress))

    def epoch_done(self, metrics: dict[str, Any]) -> None:
        """Show an epoch's metrics: every finite number in them as a scalar at step ``metrics["epoch"]``, tagged
        with its key in ``metrics.jsonl``, flushed at once so that TensorBoard shows it while the run goes on."""
        self.bar.update(1)
        self.bar.set_postfix(train=f"{metrics['train_loss']:.3g}", validation=f"{metrics['validation_mse']:.3g}")
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, metrics["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
