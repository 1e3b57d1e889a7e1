"""The region of state space a model was trained in, and where a rollout leaves it.

Note to the reader: a learned Hamiltonian is fitted only where its training states were. Outside, its
forces are an extrapolation: a rollout that leaves the region may still look healthy for a while, then
run away (particles that come closer than any training pair meet a potential nobody fitted). Training
records the region (:func:`data_region`, in the checkpoint's ``data`` record); rollouts and evaluations
report, per system, the first step outside it (:func:`region_exits`).

The region is three numbers over every training state (``z: (..., 2, N, D)``): the smallest and the
largest distance between two particles, and the largest momentum ``|p_i|`` of a particle. A state is
outside when a pair is closer than the smallest distance divided by :data:`REGION_MARGIN`, or farther
than the largest times it, or a particle's momentum exceeds the largest times it: the margin keeps
states at the data's edge, which a test system drawn like the training ones reaches, inside.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["REGION_MARGIN", "data_region", "region_exits", "check_region"]

#: how far beyond the training extremes a state may go before it counts as outside (a factor)
REGION_MARGIN = 1.25
#: states measured per block (bounds memory: a block holds states x N^2 distances)
_BLOCK_PAIRS = 2**22


def _pair_distances(q: Tensor) -> Tensor:
    """``q: (S, N, D)`` -> distances of the ``N (N - 1) / 2`` pairs ``(S, P)``."""
    i, j = torch.triu_indices(q.shape[1], q.shape[1], offset=1, device=q.device)
    return (q[:, i] - q[:, j]).norm(dim=-1)


def _blocks(states: Tensor) -> list[Tensor]:
    n = states.shape[-2]
    per_block = max(1, _BLOCK_PAIRS // max(1, n * n))
    return list(states.split(per_block))


def data_region(z: Tensor, systems: Tensor | None = None) -> dict[str, Any]:
    """The region of the states ``z: (..., 2, N, D)``, JSON-ready: ``{"pair_distance": [min, max] or None
    (one particle), "momentum": max |p_i|, "margin": REGION_MARGIN}``. ``systems``: indices into the first
    axis of ``z: (B, T, 2, N, D)``; the region of those systems' states alone, the same as
    ``data_region(z[systems])`` without that copy of them (a few systems are copied at a time)."""
    momentum, low, high = 0.0, math.inf, 0.0
    for part in _parts(z, systems):
        for block in _blocks(part.reshape(-1, *z.shape[-3:]).double()):
            momentum = max(momentum, float(block[:, 1].norm(dim=-1).amax()))
            if z.shape[-2] >= 2:
                distances = _pair_distances(block[:, 0])
                low, high = min(low, float(distances.amin())), max(high, float(distances.amax()))
    return {"pair_distance": [low, high] if z.shape[-2] >= 2 else None, "momentum": momentum,
            "margin": REGION_MARGIN}


def _parts(z: Tensor, systems: Tensor | None) -> Iterator[Tensor]:
    """``z`` whole, or the ``systems`` of ``z: (B, T, 2, N, D)`` a block's worth of states at a time."""
    if systems is None:
        yield z
        return
    states = math.prod(z.shape[1:-3])
    for index in systems.split(max(1, _BLOCK_PAIRS // max(1, z.shape[-2] ** 2) // max(1, states))):
        yield z[index]


def check_region(region: Any) -> dict[str, Any] | None:
    """``region`` if it is a region as :func:`data_region` writes it, else None (a checkpoint of an earlier
    hamnet, or a record that was edited): a rollout then reports nothing about the region."""
    try:
        pair, momentum, margin = region["pair_distance"], float(region["momentum"]), float(region["margin"])
        if pair is not None:
            low, high = (float(x) for x in pair)
            assert 0 <= low <= high
        assert momentum >= 0 and margin >= 1
    except (KeyError, TypeError, ValueError, AssertionError):
        return None
    return region


def region_exits(trajectory: Tensor, region: dict[str, Any]) -> tuple[Tensor, list[str]]:
    """For trajectories ``(B, T, 2, N, D)``: the first step at which each system is outside ``region``
    (``(B,)`` int64, -1 if never) and, for each, what was outside then ("" if never)."""
    margin = float(region["margin"])
    limits = {"momentum": float(region["momentum"]) * margin}
    if region["pair_distance"] is not None:
        limits["closest"] = float(region["pair_distance"][0]) / margin
        limits["farthest"] = float(region["pair_distance"][1]) * margin
    first = torch.full((trajectory.shape[0],), -1, dtype=torch.int64)
    reasons = [""] * trajectory.shape[0]
    for b in range(trajectory.shape[0]):
        states = trajectory[b].double()
        momentum = states[:, 1].norm(dim=-1).amax(-1)  # (T,)
        outside = {"momentum": momentum > limits["momentum"]}
        if "closest" in limits:
            distances = torch.cat([_pair_distances(block[:, 0]) for block in _blocks(states)])  # (T, P)
            outside["closest"] = distances.amin(-1) < limits["closest"]
            outside["farthest"] = distances.amax(-1) > limits["farthest"]
        any_outside = torch.stack(list(outside.values())).any(0)
        if bool(any_outside.any()):
            step = int(any_outside.int().argmax())
            first[b] = step
            reasons[b] = _reason(states[step], outside, step, region)
    return first, reasons


def _reason(state: Tensor, outside: dict[str, Tensor], step: int, region: dict[str, Any]) -> str:
    parts = []
    if bool(outside["momentum"][step]):
        parts.append(f"a momentum of {float(state[1].norm(dim=-1).amax()):.3g} (training: up to "
                     f"{float(region['momentum']):.3g})")
    if "closest" in outside and bool(outside["closest"][step]):
        parts.append(f"two particles {float(_pair_distances(state[None, 0]).amin()):.3g} apart (training: at least "
                     f"{float(region['pair_distance'][0]):.3g})")
    if "farthest" in outside and bool(outside["farthest"][step]):
        parts.append(f"two particles {float(_pair_distances(state[None, 0]).amax()):.3g} apart (training: at most "
                     f"{float(region['pair_distance'][1]):.3g})")
    return " and ".join(parts)
