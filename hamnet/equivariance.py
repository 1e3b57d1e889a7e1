"""Measure how far a model is from invariance under a group, so users can check their own models.

Note to the reader: a model here is any callable ``model(points, features, mask=None) -> (B, ...)`` on
``points: (B, N, D)`` and ``features: (B, N, F)``, such as ``hamnet.lieconv.LieResNet``. Random group
elements come from ``LieGroup.sample`` (rotations Haar-uniform, translations Gaussian).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from hamnet.groups import DEFAULT_LIFT_SEED, LieGroup


def equivariance_error(model: Callable[..., Tensor], group: LieGroup, points: Tensor, features: Tensor,
                       mask: Tensor | None = None, n_transforms: int = 8,
                       generator: torch.Generator | None = None, translation_scale: float = 1.0) -> float:
    """Largest absolute change of the output of an invariant model under random group elements.

    For each of ``n_transforms`` draws, every system ``b`` gets its own random ``g_b`` and the points
    become ``act(g_b, points[b])``; the result is ``max |model(g x) - model(x)|`` over all draws, systems
    and outputs. ``points: (B, N, D)``, ``features: (B, N, F)``, ``mask: (B, N)`` bool or None;
    ``generator`` draws the group elements (None: seeded with ``DEFAULT_LIFT_SEED``);
    ``translation_scale`` is the standard deviation of random translations. The model is called
    without a generator, so a Monte Carlo-lifted model (SE(2), SO(3), SE(3)) uses the same stabilizer
    samples for ``x`` and ``g x``: its error then includes sampling noise, to be compared with its
    spread under resampling. Runs without gradients.
    """
    if points.ndim != 3 or points.shape[-1] != group.space_dim:
        raise ValueError(f"{group.name} acts on {group.space_dim}-dimensional points: expected points of "
                         f"shape (B, N, {group.space_dim}), got {tuple(points.shape)}")
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_LIFT_SEED)
    kwargs = {} if mask is None else {"mask": mask}
    worst = 0.0
    with torch.no_grad():
        reference = model(points, features, **kwargs)
        for _ in range(n_transforms):
            g = group.sample((points.shape[0],), generator, points.dtype, points.device, scale=translation_scale)
            moved = group.act(g.unsqueeze(1), points)
            worst = max(worst, (model(moved, features, **kwargs) - reference).abs().max().item())
    return worst
