"""Conserved quantities and their drifts, as pure functions of states or trajectories.

Note to the reader: every function takes a state or trajectory whose last three axes are
``(2, N, D)`` (``[..., 0, :, :]`` positions ``q``, ``[..., 1, :, :]`` momenta ``p``), so the same call
works on one state ``(B, 2, N, D)`` and on a trajectory ``(B, T, 2, N, D)``. Nothing here knows
how the trajectory was made: truth and learned rollouts are measured the same way.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Hamiltonian = Callable[[Tensor, dict], Tensor]


def linear_momentum(z: Tensor) -> Tensor:
    """Total linear momentum ``sum_i p_i``; ``z: (..., 2, N, D)`` -> ``(..., D)``."""
    return z[..., 1, :, :].sum(-2)


def angular_momentum(z: Tensor) -> Tensor:
    """Total angular momentum about the origin ``sum_i q_i x p_i``.

    ``z: (..., 2, N, D)`` -> ``(...)`` for ``D = 2`` (the out-of-plane component) and ``(..., 3)`` for ``D = 3``.
    """
    q, p = z[..., 0, :, :], z[..., 1, :, :]
    if q.shape[-1] == 2:
        return (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).sum(-1)
    if q.shape[-1] == 3:
        return torch.linalg.cross(q, p, dim=-1).sum(-2)
    raise ValueError(f"angular momentum needs D = 2 or 3, got D = {q.shape[-1]}")


def energy(hamiltonian: Hamiltonian, z: Tensor, params: dict[str, Tensor]) -> Tensor:
    """``H`` along a trajectory; ``z: (B, T, 2, N, D)`` -> ``(B, T)``.

    ``hamiltonian(z, params)`` maps ``(B, 2, N, D)`` to ``(B,)``, e.g. ``system.hamiltonian`` or a
    learned model's. It is called once per time, so parameters are never copied along time.
    """
    return torch.stack([hamiltonian(z[:, j], params) for j in range(z.shape[1])], dim=1)


def momentum_scale(z: Tensor) -> Tensor:
    """The natural scale of momentum in each system, ``sum_i |p_i|`` at the first time, ``(B,)``.

    Total momentum is often zero, so a change in it is measured relative to this scale.
    ``z: (B, T, 2, N, D)``.
    """
    return z[:, 0, 1].norm(dim=-1).sum(-1)


def angular_momentum_scale(z: Tensor) -> Tensor:
    """``sum_i |q_i| |p_i|`` at the first time, ``(B,)``: the scale for changes in angular momentum."""
    return (z[:, 0, 0].norm(dim=-1) * z[:, 0, 1].norm(dim=-1)).sum(-1)


def relative_change(values: Tensor, scale: Tensor | None = None) -> Tensor:
    """Change from the first time at every time, per system: ``|x(t) - x(0)|``, divided by ``scale``.

    ``values: (B, T)`` or ``(B, T, K)`` (vector quantities use the Euclidean norm); ``scale: (B,)``.
    Returns ``(B, T)``.
    """
    change = values - values[:, :1]
    change = change.norm(dim=-1) if change.dim() == 3 else change.abs()
    # a zero scale (e.g. no motion at all) leaves the absolute change rather than 0 / 0
    return change if scale is None else change / scale.clamp_min(torch.finfo(scale.dtype).tiny).unsqueeze(-1)


def drift(values: Tensor, scale: Tensor | None = None) -> Tensor:
    """Largest change from the first time, per system: ``max_t |x(t) - x(0)|``, divided by ``scale``.

    ``values: (B, T)`` or ``(B, T, K)`` (vector quantities use the Euclidean norm); ``scale: (B,)``.
    """
    return relative_change(values, scale).amax(dim=1)


def conservation_series(z: Tensor, hamiltonian: Hamiltonian | None = None,
                        params: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Relative changes over time of a trajectory ``z: (B, T, 2, N, D)``, each ``(B, T)``:

    ``linear_momentum`` relative to ``momentum_scale``, ``angular_momentum`` relative to
    ``angular_momentum_scale`` and, when a Hamiltonian is given, ``energy`` relative to ``|H(0)|``.
    """
    series = {
        "linear_momentum": relative_change(linear_momentum(z), momentum_scale(z)),
        "angular_momentum": relative_change(angular_momentum(z), angular_momentum_scale(z)),
    }
    if hamiltonian is not None:
        h = energy(hamiltonian, z, params)
        series["energy"] = relative_change(h, h[:, 0].abs())
    return series


def conservation_report(z: Tensor, hamiltonian: Hamiltonian | None = None,
                        params: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Per-system drifts of a trajectory ``z: (B, T, 2, N, D)``, each ``(B,)``: the largest value over
    time of each :func:`conservation_series`."""
    return {name: values.amax(dim=1) for name, values in conservation_series(z, hamiltonian, params).items()}


def bounded_relative_error(predicted: Tensor, truth: Tensor) -> Tensor:
    """``|a - b| / (|a| + |b|)`` per system and time; ``(B, T, 2, N, D)`` -> ``(B, T)``.

    Norms run over all particles and coordinates of one system. The error lies in ``[0, 1]`` and
    does not blow up when a state passes near zero (1 means unrelated states of equal size).
    """
    difference = (predicted - truth).flatten(2).norm(dim=-1)
    size = predicted.flatten(2).norm(dim=-1) + truth.flatten(2).norm(dim=-1)
    return difference / size.clamp_min(torch.finfo(size.dtype).tiny)
