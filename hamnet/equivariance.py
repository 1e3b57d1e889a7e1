"""Check a model's symmetry under random group elements, so users can check their own models.

Two kinds of output, and a name for each:

- **invariant** outputs do not change when the input moves: a network on point clouds
  (:func:`invariance_error`, ``model(points, features, mask=None) -> (B, ...)`` on ``points: (B, N, D)``
  and ``features: (B, N, F)``, such as ``hamnet.lieconv.LieResNet``) or an energy of a phase-space state
  (:func:`energy_invariance_error`, :func:`assert_invariant`, ``energy(z, params) -> (B,)``);
- **equivariant** outputs move with the input: a vector field ``field(z, params) -> (B, 2, N, D)``, such
  as ``dz/dt`` (:func:`field_equivariance_error`, :func:`assert_equivariant`).

A group element ``g`` moves a state ``z: (B, 2, N, D)`` by acting on the positions ``z[:, 0]`` and
rotating the momenta ``z[:, 1]`` with its linear part (:func:`act_on_state`), and moves a vector field's
output, a velocity and a force, by its linear part only. That is right for groups that act affinely,
as every built-in group does. Random group elements come from ``LieGroup.sample`` (rotations
Haar-uniform, translations Gaussian). What "exact" means is one table, :data:`ROUND_OFF`.

Two kinds of invariance are told apart. An exactly invariant model (a LieResNet with the exact lift,
or any free action) changes by round-off under a group element, ``change / scale`` ~ 1e-14 in
float64, and redrawing its lift changes nothing. A Monte Carlo lifted model is invariant only in
distribution over its stabilizer samples: it changes under a group element by about as much as under
a fresh draw of its lift (``lift_spread``); a change well above that spread is a broken symmetry.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .lie_group import DEFAULT_LIFT_SEED, LieGroup

__all__ = ["ROUND_OFF", "InvarianceReport", "act_on_state", "assert_equivariant", "assert_invariant",
           "energy_invariance_error", "equivariance_error", "field_equivariance_error", "invariance_error"]

Params = dict[str, Tensor]

#: How far an exactly invariant or equivariant output may move under a group element, relative to the
#: output's largest magnitude: 100 units in the last place of the dtype.
ROUND_OFF = {dtype: 100 * torch.finfo(dtype).eps for dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                               torch.float64)}

#: Lift draws ``invariance_error(..., report=True)`` makes when not told; draw ``i`` is seeded
#: ``DEFAULT_LIFT_SEED + 1 + i``, never the model's own default draw.
DEFAULT_LIFT_DRAWS = 8


class InvarianceReport(NamedTuple):
    """What :func:`invariance_error` measures with ``report=True``, each the largest over systems and outputs.

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


def invariance_error(model: Callable[..., Tensor], group: LieGroup, points: Tensor, features: Tensor,
                       mask: Tensor | None = None, n_transforms: int = 8,
                       generator: torch.Generator | None = None, translation_scale: float = 1.0, *,
                       report: bool = False, lift_draws: int = DEFAULT_LIFT_DRAWS) -> float | InvarianceReport:
    """Largest absolute change of the output of a point-cloud network under random group elements.

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


def equivariance_error(*args, **kwargs) -> float | InvarianceReport:
    """Deprecated name of :func:`invariance_error`, which is what it always measured (an invariant
    output's change); for vector fields use :func:`field_equivariance_error`."""
    warnings.warn("hamnet.equivariance_error measures invariance and is now called invariance_error; "
                  "field_equivariance_error checks vector fields", DeprecationWarning, stacklevel=2)
    return invariance_error(*args, **kwargs)


# -- phase-space states: energies (invariant) and vector fields (equivariant) ------------------------

def act_on_state(group: LieGroup, g: Tensor, z: Tensor) -> Tensor:
    """``z: (B, 2, N, D)`` moved by ``g: (B, n, n)``: positions by the group's action, momenta by its
    linear part (``act(g, p) - act(g, 0)``: rotated, never translated)."""
    g = g.unsqueeze(1)
    return torch.stack([group.act(g, z[:, 0]), _linear_part(group, g, z[:, 1])], dim=1)


def energy_invariance_error(energy: Callable[[Tensor, Params], Tensor], group: LieGroup, z: Tensor, params: Params,
                            *, n_transforms: int = 8, generator: torch.Generator | None = None,
                            translation_scale: float = 1.0) -> float:
    """``max |energy(g z) - energy(z)|`` over ``n_transforms`` random elements per system (each system
    its own ``g``); ``energy(z, params) -> (B,)``, for example a model's or a system's ``hamiltonian``.
    Gradients stay on while ``energy`` runs (a Hamiltonian model may differentiate inside); the
    results are detached."""
    return _energy_change(energy, group, z, params, n_transforms, generator, translation_scale)[0]


def field_equivariance_error(field: Callable[[Tensor, Params], Tensor], group: LieGroup, z: Tensor, params: Params,
                             *, n_transforms: int = 8, generator: torch.Generator | None = None,
                             translation_scale: float = 1.0) -> float:
    """``max |field(g z) - g field(z)|`` over ``n_transforms`` random elements per system, where ``g``
    rotates both halves of the output ``(B, 2, N, D)`` (a velocity and a force are vectors, unmoved by a
    translation); ``field(z, params)``, for example a model's ``vector_field`` or
    ``hamnet.HamiltonianField(model, params)`` wrapped as ``lambda z, params: field(0, z)``."""
    return _field_change(field, group, z, params, n_transforms, generator, translation_scale)[0]


def assert_invariant(energy: Callable[[Tensor, Params], Tensor], group: LieGroup, z: Tensor, params: Params, *,
                     n_transforms: int = 8, generator: torch.Generator | None = None,
                     translation_scale: float = 1.0) -> None:
    """Raise ``AssertionError`` unless ``energy`` is invariant under ``group`` to the round-off of ``z``'s
    dtype (:data:`ROUND_OFF` times the largest ``|energy(z)|``); the options as for
    :func:`energy_invariance_error`."""
    change, reference = _energy_change(energy, group, z, params, n_transforms, generator, translation_scale)
    _assert_round_off("energy", change, reference, group, "invariant")


def assert_equivariant(field: Callable[[Tensor, Params], Tensor], group: LieGroup, z: Tensor, params: Params, *,
                       n_transforms: int = 8, generator: torch.Generator | None = None,
                       translation_scale: float = 1.0) -> None:
    """Raise ``AssertionError`` unless ``field`` is equivariant under ``group`` to the round-off of ``z``'s
    dtype (:data:`ROUND_OFF` times the largest ``|field(z)|``); the options as for
    :func:`field_equivariance_error`."""
    change, reference = _field_change(field, group, z, params, n_transforms, generator, translation_scale)
    _assert_round_off("vector field", change, reference, group, "equivariant")


def _energy_change(energy, group, z, params, n_transforms, generator, translation_scale) -> tuple[float, Tensor]:
    """The largest change of ``energy`` under the random elements, and ``energy(z)``."""
    elements = _elements(group, z, n_transforms, generator, translation_scale)
    reference = energy(z, params).detach()
    return max((energy(act_on_state(group, g, z), params).detach() - reference).abs().max().item()
               for g in elements), reference


def _field_change(field, group, z, params, n_transforms, generator, translation_scale) -> tuple[float, Tensor]:
    """The largest ``|field(g z) - g field(z)|`` under the random elements, and ``field(z)``."""
    elements = _elements(group, z, n_transforms, generator, translation_scale)
    reference = field(z, params).detach()
    worst = 0.0
    for g in elements:
        expected = torch.stack([_linear_part(group, g.unsqueeze(1), reference[:, i]) for i in range(2)], dim=1)
        worst = max(worst, (field(act_on_state(group, g, z), params).detach() - expected).abs().max().item())
    return worst, reference


def _assert_round_off(what: str, change: float, reference: Tensor, group: LieGroup, kind: str) -> None:
    scale = reference.abs().max().item()
    allowed = ROUND_OFF[reference.dtype] * scale
    if not change <= allowed:
        raise AssertionError(f"the {what} is not {kind} under {group.name}: it changes by {change:.3g} where "
                             f"{reference.dtype} round-off allows {allowed:.3g} (largest |output| {scale:.3g})")


def _elements(group: LieGroup, z: Tensor, n_transforms: int, generator: torch.Generator | None,
              translation_scale: float) -> list[Tensor]:
    """``n_transforms`` random elements ``(B, n, n)``, one per system each, once ``z`` is shown to be a state
    the group acts on."""
    if z.ndim != 4 or z.shape[1] != 2 or z.shape[-1] != group.space_dim:
        raise ValueError(f"{group.name} acts on {group.space_dim}-dimensional points: expected a state of shape "
                         f"(B, 2, N, {group.space_dim}), got {tuple(z.shape)}")
    generator = generator if generator is not None else torch.Generator().manual_seed(DEFAULT_LIFT_SEED)
    return [group.sample((z.shape[0],), generator, z.dtype, z.device, scale=translation_scale)
            for _ in range(n_transforms)]


def _linear_part(group: LieGroup, g: Tensor, vectors: Tensor) -> Tensor:
    return group.act(g, vectors) - group.act(g, torch.zeros_like(vectors))
