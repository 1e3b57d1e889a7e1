"""Building blocks the models share: MLPs, pair gathers over the other particles, reproducible init.

Note to the reader: per-particle inputs are ``x: (B, N, F)``; a pairwise quantity is ``(B, N, N, C)``
with entry ``[:, i, j]`` for the ordered pair ``(i, j)``. The pair helpers keep the ``N (N - 1)``
pairs of two different particles only, ``j`` running over the others of ``i`` in order, so a sum over
dim 2 is ``sum_{j != i}``; their indices are arithmetic, never a boolean mask, so building them never
waits on a GPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["DEFAULT_INIT_SEED", "init_parameters", "mlp", "off_diagonal", "others", "pairs_of_others",
           "pairwise_differences"]

#: seed of the generator that initialises weights when ``hamnet.models.build_model`` is given none
DEFAULT_INIT_SEED = 0


def mlp(in_features: int, width: int, depth: int, out_features: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` with Swish, then a linear output."""
    layers: list[nn.Module] = []
    size = in_features
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.SiLU()]
        size = width
    layers.append(nn.Linear(size, out_features))
    return nn.Sequential(*layers)


def others(n: int, device: torch.device) -> Tensor:
    """``(N, N - 1)``: row ``i`` lists every ``j != i`` in order. Arithmetic, not a boolean mask, so
    building it never waits on the device."""
    k = torch.arange(n - 1, device=device)
    return k + (k >= torch.arange(n, device=device).unsqueeze(1))


def off_diagonal(pairwise: Tensor) -> Tensor:
    """The entries ``j != i`` of every row ``i``, in order: ``(B, N, N, C)`` -> ``(B, N, N - 1, C)``."""
    n = pairwise.shape[1]
    return pairwise[:, torch.arange(n, device=pairwise.device).unsqueeze(1), others(n, pairwise.device)]


def pairs_of_others(x: Tensor, *edges: Tensor) -> Tensor:
    """The inputs ``[x_i, x_j, edges_ij]`` of every ordered pair of two different particles (self-pairs
    are never computed: a particle sends itself no message, and at ``N = 6`` they would be a sixth of the
    edge network's work); ``x: (B, N, F)`` and each of ``edges: (B, N, N, E)`` ->
    ``(B, N, N - 1, 2 F + sum E)``, ``j`` running over the others of ``i`` in order. Sum over dim 2 for
    ``sum_{j != i}``."""
    n = x.shape[1]
    x_j = x[:, others(n, x.device)]
    return torch.cat([x.unsqueeze(2).expand(-1, -1, n - 1, -1), x_j, *map(off_diagonal, edges)], dim=-1)


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every ``nn.Linear`` in ``module`` from ``generator`` (torch's default scheme:
    weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), so building is reproducible."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                for tensor in (layer.weight, layer.bias):
                    if tensor is not None:
                        noise = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
                        tensor.copy_((2.0 * noise - 1.0) * bound)


def pairwise_differences(q: Tensor) -> tuple[Tensor, Tensor]:
    """``(q_i - q_j, |q_i - q_j|^2)`` of every ordered pair; ``q: (B, N, D)`` -> ``(B, N, N, D)``,
    ``(B, N, N, 1)``. Smooth everywhere (no square root), and ``|q_j - q_i|^2`` equals ``|q_i - q_j|^2``
    bit for bit, so a function of them is symmetric in each pair to round-off."""
    differences = q.unsqueeze(2) - q.unsqueeze(1)
    return differences, differences.square().sum(-1, keepdim=True)
