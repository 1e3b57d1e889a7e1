"""What the machine can give a job: memory available, and a one-line refusal when a job needs more.

Preflight checks call these before allocating, so an impossible setting ends in one line that names
the flag to change instead of an allocator's traceback or a swapping machine.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_memory", "check_memory", "format_bytes"]

#: only this fraction of the available memory is planned for: the interpreter, torch's
#: temporaries and the rest of the machine need the remainder
USABLE_FRACTION = 0.8


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes free for a new allocation now on ``device``: CUDA's free memory on a GPU, else MemAvailable
    of /proc/meminfo (Linux), else the free physical pages; a very large number when unknown."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1  # unknown: do not refuse on a guess


def format_bytes(count: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.3g} PiB"


def check_memory(needed: float, what: str, advice: str, available: int | None = None) -> None:
    """Refuse (``MemoryError``, one line) when ``needed`` bytes exceed the usable share of ``available``
    (default: :func:`available_memory`). ``what`` names the job, ``advice`` the flag to change."""
    available = available_memory() if available is None else available
    if needed > USABLE_FRACTION * available:
        raise MemoryError(f"{what} needs about {format_bytes(needed)} of memory, more than the "
                          f"{format_bytes(USABLE_FRACTION * available)} usable of the {format_bytes(available)} "
                          f"free; {advice}")
