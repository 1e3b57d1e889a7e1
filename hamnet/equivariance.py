"""Measure how far a model is from invariance under a group, so users can check their own models.

Note to the reader: a model here is any callable ``model(points, features, mask=None) -> (B, ...)`` on
``points: (B, N, D)`` and ``features: (B, N, F)``, such as ``hamnet.lieconv.LieResNet``. Random group
elements come from ``LieGroup.sample`` (rotations Haar-uniform, translations Gaussian).

Two kinds of invariance are told apart. An exactly invariant model (a LieResNet with the exact lift,
or any free action) changes by round-off under a group element, ``change / scale`` ~ 1e-14 in
float64, and redrawing its lift changes nothing. A Monte Carlo lifted model is invariant only in
distribution over its stabilizer samples: it changes under a group element by about as much as under
a fresh draw of its lift (``lift_spread``); a change well above that spread is a broken symmetry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from hamnet.groups import DEFAULT_LIFT_SEED, LieGroup

#: Lift draws ``equivariance_error(..., report=True)`` makes when not told; draw ``i`` is seeded
#: ``DEFAULT_LIFT_SEED + 1 + i``, never the model's own default draw.
DEFAULT_LIFT_DRAWS = 8


class InvarianceReport(NamedTuple):
    """What :func:`equivariance_error` measures with ``report=True``, each the largest over systems and outputs.

    ``change``: ``max |model(g x) - model(x)|`` over the random group elements (what it returns
    without ``report``); ``lift_spread``: ``max |model(x, generator=s) - model(x)|`` over fresh lift
    draws ``s``: 0 for a deterministic model, the Monte Carlo noise of a sampled lift, None when the
    model takes no ``generator``; ``scale``: ``max |model(x)|``.
    """

    change: float
    lift_spread: float | None
    scale: float

    @property
    def relative_change(self) -> float:
        """``change / scale``: round-off (about 100 eps or less) for an exactly invariant model."""
        return self.change / self.scale if self.scale else self.change


def equivariance_error(model: Callable[..., Tensor], group: LieGroup, points: Tensor, features: Tensor,
                       mask: Tensor | None = None, n_transforms: int = 8,
                       generator: torch.Generator | None = None, translation_scale: float = 1.0, *,
                       report: bool = False, lift_draws: int = DEFAULT_LIFT_DRAWS) -> float | InvarianceReport:
    """Largest absolute change of the output of an invariant model under random group elements.

    For each of ``n_transforms`` draws, every system ``b`` gets its own random ``g_b`` and the points
    become ``act(g_b, points[b])``; the result is ``max |model(g x) - model(x)|`` over all draws, systems
    and outputs. ``points: (B, N, D)``, ``features: (B, N, F)``, ``mask: (B, N)`` bool or None;
    ``generator`` draws the group elements (None: seeded with ``DEFAULT_LIFT_SEED``);
    ``translation_scale`` is the standard deviation of random translations. The model is called
    without a generator, so a Monte Carlo-lifted model uses its default stabilizer samples for ``x``
    and ``g x``: its error then includes sampling noise. ``report=True`` returns an
    :class:`InvarianceReport` instead, which sets that noise beside the change: the spread of the
    output over ``lift_draws`` fresh lift draws (``model(x, generator=...)``). Runs without gradients.
    """
    if points.ndim != 3 or points.shape[-1] != group.space_dim:
        raise ValueError(f"{group.name} acts on {group.space_dim}-dimensional points: expected points of "
                         f"shape (B, N, {group.space_dim}), got {tuple(points.shape)}")
    if report and lift_draws < 1:
        raise ValueError(f"lift_draws must be >= 1, got {lift_draws}")
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
        if not report:
            return worst
        spread = None
        if _takes_generator(model):
            spread = max((_redrawn(model, points, features, kwargs, i) - reference).abs().max().item()
                         for i in range(lift_draws))
    return InvarianceReport(worst, spread, reference.abs().max().item())


def _takes_generator(model: Callable[..., Tensor]) -> bool:
    try:
        parameters = inspect.signature(model).parameters
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return False
    return "generator" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _redrawn(model: Callable[..., Tensor], points: Tensor, features: Tensor, kwargs: dict, draw: int) -> Tensor:
    """The model on ``points`` with lift draw number ``draw`` (seeded ``DEFAULT_LIFT_SEED + 1 + draw``)."""
    return model(points, features, **kwargs, generator=torch.Generator().manual_seed(DEFAULT_LIFT_SEED + 1 + draw))
