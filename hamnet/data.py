"""Training windows cut from trajectory files.

Note to the reader: a trajectory file holds ``z: (B, T, 2, N, D)``. A *window* of ``chunk`` states
is ``z[b, s : s + chunk]`` for a system ``b`` and a start ``s``; the model is integrated from the
window's first state and compared with the other ``chunk - 1``. ``chunk`` counts states, as in the
paper's code (``chunk_len = 5``: the initial state and four predicted ones), so window errors
compare with its published figures. Every start ``0 <= s <= T - chunk`` of every system is a
usable window; nothing is drawn once and frozen.

Splits are by system, never by window, so no trajectory contributes to two splits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .io import Trajectories

DEFAULT_CHUNK = 5


@dataclass(frozen=True)
class Split:
    """System indices ``(n,)`` of each split of one trajectory file."""

    train: Tensor
    validation: Tensor
    test: Tensor


def split_systems(n_systems: int, validation: float, test: float, seed: int) -> Split:
    """A seeded random partition of ``range(n_systems)`` into train / validation / test by fraction.

    Each fraction in ``[0, 1)``; a non-zero fraction gets at least one system. Raises ValueError when
    no system is left for training.
    """
    for name, fraction in (("validation", validation), ("test", test)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {fraction}")
    n_val = max(1, round(validation * n_systems)) if validation > 0 else 0
    n_test = max(1, round(test * n_systems)) if test > 0 else 0
    if n_systems - n_val - n_test < 1:
        raise ValueError(
            f"{n_systems} systems leave none for training after {n_val} validation and {n_test} test systems; "
            "generate more systems or lower the fractions"
        )
    order = torch.randperm(n_systems, generator=torch.Generator().manual_seed(seed))
    return Split(train=order[n_val + n_test:].sort().values,
                 validation=order[:n_val].sort().values,
                 test=order[n_val:n_val + n_test].sort().values)


class Windows:
    """All windows of ``chunk`` states from the given systems of a trajectory file.

    ``max_windows`` keeps a seeded random subset of that many (for training-set-size studies);
    the same seed gives the same subset. Indexing with a tensor of window numbers returns
    ``(z, params)``: ``z: (b, chunk, 2, N, D)`` and per-system parameters ``(b, ...)``.
    """

    def __init__(self, data: Trajectories, chunk: int = DEFAULT_CHUNK, systems: Tensor | None = None,
                 max_windows: int | None = None, seed: int = 0) -> None:
        if chunk < 2:
            raise ValueError(f"chunk must be at least 2 states (an initial one and a target), got {chunk}")
        if data.n_times < chunk:
            raise ValueError(
                f"trajectories have {data.n_times} states, fewer than the window length chunk = {chunk}; "
                "generate more steps or lower --chunk"
            )
        systems = torch.arange(data.n_systems) if systems is None else systems
        if systems.numel() == 0:
            raise ValueError("no systems to cut windows from")
        starts_per_system = data.n_times - chunk + 1
        system_index = systems.repeat_interleave(starts_per_system)
        start_index = torch.arange(starts_per_system).repeat(systems.numel())
        if max_windows is not None:
            if max_windows < 1:
                raise ValueError(f"max_windows must be positive, got {max_windows}")
            keep = torch.randperm(system_index.numel(), generator=torch.Generator().manual_seed(seed))[:max_windows]
            keep = keep.sort().values
            system_index, start_index = system_index[keep], start_index[keep]
        self.data, self.chunk = data, chunk
        # window indices live where the data lives, so cutting a batch on a GPU needs no host copy
        device = data.z.device
        self.system_index, self.start_index = system_index.to(device), start_index.to(device)
        self._offsets = torch.arange(chunk, device=device)

    def __len__(self) -> int:
        return self.system_index.numel()

    def __getitem__(self, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        systems = self.system_index[index]
        times = self.start_index[index].unsqueeze(-1) + self._offsets  # (b, chunk)
        z = self.data.z[systems.unsqueeze(-1), times]
        return z, {k: v[systems] for k, v in self.data.params.items()}

    def compact(self) -> "Windows":
        """The same windows in the same order, on a copy of only what they read, so the file's tensors can be
        freed: their states, one system of ``chunk`` states per window, where that is fewer states than their
        systems' whole trajectories (a subset of a long file); else those systems' trajectories."""
        data = self.data
        systems, inverse = self.system_index.unique(return_inverse=True)
        if len(self) * self.chunk < systems.numel() * data.n_times:
            z, params = self[torch.arange(len(self), device=systems.device)]
            return Windows(Trajectories(data.t[:self.chunk], z, params, data.meta, data.source), self.chunk)
        if systems.numel() == data.n_systems:
            return self
        kept = Windows(Trajectories(data.t, data.z[systems], {k: v[systems] for k, v in data.params.items()},
                                    data.meta, data.source), self.chunk)
        kept.system_index, kept.start_index = inverse, self.start_index
        return kept

    def batches(self, batch_size: int, generator: torch.Generator | None = None, count: int | None = None):
        """Index tensors covering every window once, shuffled by ``generator`` (in order if None); or the first
        ``count`` windows of that order (with a generator, a fresh draw of that many each call)."""
        order = torch.arange(len(self)) if generator is None else torch.randperm(len(self), generator=generator)
        return order[:count].split(batch_size)


#: :func:`suggest_substeps`: the sub-step is at most this fraction of the approach time ... (a quarter:
#: on EGNN's charged set 4 sub-steps with warm-up and clipping trained better than the 10 a tenth gives,
#: benchmarks/results/frame_recipe_small.md)
SUBSTEP_FRACTION = 0.25
#: ... of the pair-states at this quantile (the closest, fastest-approaching 1 in 100)
APPROACH_QUANTILE = 0.01
#: pair-states sampled for the estimate (whole states, evenly spaced): bounds its memory
SUBSTEP_SAMPLE_PAIRS = 2**22


def suggest_substeps(data: Trajectories, systems: Tensor | None = None) -> int:
    """Integration steps per interval ``dt`` between stored states, chosen from the data.

    For every pair of particles in a state, ``r_ij / |v_i - v_j|`` is the time in which their
    separation could close at their relative speed (the time-step criterion of direct N-body codes);
    the sub-step is at most :data:`SUBSTEP_FRACTION` of its :data:`APPROACH_QUANTILE` quantile over
    the states of ``systems`` (all if None; evenly spaced ones, up to :data:`SUBSTEP_SAMPLE_PAIRS` pairs,
    and only those are copied). Frames 100 simulation steps apart of EGNN's charged set give 4.
    Velocities are ``p / m``; 1 for one-particle systems or data that does not move.
    """
    n_particles, n_times = data.z.shape[3], data.z.shape[1]
    if n_particles < 2:
        return 1
    systems = torch.arange(data.n_systems) if systems is None else systems.cpu()
    wanted = max(1, SUBSTEP_SAMPLE_PAIRS // (n_particles * (n_particles - 1) // 2))
    count = systems.numel() * n_times
    picked = torch.linspace(0, count - 1, min(count, wanted)).round().long()
    rows, times = systems[picked // n_times].to(data.z.device), (picked % n_times).to(data.z.device)
    states = data.z[rows, times].double()  # (S, 2, N, D): the picked states alone
    m = data.params["m"][rows].double()
    m = m if m.dim() == 2 else m.unsqueeze(-1).expand(-1, n_particles)  # (S, N)
    q, v = states[:, 0], states[:, 1] / m.unsqueeze(-1)
    i, j = torch.triu_indices(q.shape[1], q.shape[1], offset=1)
    approach = (q[:, i] - q[:, j]).norm(dim=-1) / (v[:, i] - v[:, j]).norm(dim=-1)  # inf where still
    finite = approach[torch.isfinite(approach)]
    if finite.numel() == 0:
        return 1
    scale = float(torch.quantile(finite, APPROACH_QUANTILE))
    dt = float(data.meta["dt"])
    return max(1, math.ceil(dt / (SUBSTEP_FRACTION * scale))) if scale > 0 else 1
