"""LieConv: convolution over Lie group elements, and the residual network built from it.

Note to the reader: a batch holds ``B`` systems of ``N`` points in ``D`` dimensions, ``points: (B, N, D)``,
with per-point features ``(B, N, F)`` and an optional ``mask: (B, N)`` (True = real point, False =
padding). ``group.lift`` turns the points into ``M = N * s`` group elements ``(B, M, n, n)`` (``s`` lift
samples per point where the action has a stabilizer), orbit identifiers ``(B, M, O)`` and a lifted mask.

A convolution maps features ``f: (B, M, C)`` on the lifted elements to

    f'(u) = mean over neighbours v of u of  W [ k(embed(log(u^-1 v)), o_u, o_v) (x) f(v) ]

where the kernel ``k`` is a small Swish MLP with ``kernel_channels`` outputs, ``(x)`` the outer product
with the input channels and ``W`` a linear map to the output channels (the PointConv factorisation the
paper uses). ``embed(log(u^-1 v))`` is computed as ``group.relative(u, v)``: smooth across the wrap of
``log``, so the network is a smooth function of the points. Left-translating every element by one group
element leaves all kernel inputs, hence the features, unchanged: that is the equivariance.

Two lifts (``LieResNet(lift=...)``, one of :data:`LIFTS`):

- ``"exact"`` (the default wherever the group has one: every built-in group): one lift per point,
  and a kernel that sees only what does not depend on which stabilizer element each point's lift
  carries, ``group.pair_invariants(x_u, x_v)``, computed from the points (``M = N``). The output is
  invariant to round-off. For a free action (T(D), SO(2)) that is the paper's construction itself.
- ``"monte-carlo"`` (the paper's, for SE(2), SO(3), SE(3)): ``lift_samples`` elements per point,
  ``section(x) h`` with ``h`` drawn uniformly from the stabilizer; the kernel sees all of
  ``u^-1 v``. Invariant in distribution over the draws; exactly equivariant given transformed lifts
  (``forward_lifted``).

Neighbourhoods are built once per forward pass and shared by every layer: all ``M`` elements, or the
``k`` nearest (in the group distance plus orbit distance for lifted elements, in
``group.point_distance`` for the exact lift), found in row chunks so that neither the distances nor
the kernel inputs ever need ``M x M`` memory. Selection is not differentiated (it is piecewise
constant). Nothing in a forward pass changes module state; stabilizer samples come from the
``generator`` argument or, when it is None, from a fresh generator seeded with
``hamnet.groups.DEFAULT_LIFT_SEED``, so the network is a deterministic function of its inputs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor, nn

from hamnet.groups import LieGroup

#: The ways a network can lift points: exactly invariant pair invariants, or the paper's Monte Carlo lift.
LIFTS = ("exact", "monte-carlo")
# Lift samples per point of the Monte Carlo lift, when the caller does not say.
DEFAULT_LIFT_SAMPLES = 4
# Upper bound on the distances held at once during the nearest-neighbour search (B x rows x M).
_SEARCH_CHUNK_ELEMENTS = 1 << 22


_unchecked = 0  # how many unchecked_inputs() blocks are open


@contextlib.contextmanager
def unchecked_inputs() -> Iterator[None]:
    """Inside, the networks read no input values on the host (finiteness checks, HLieConv's split of
    non-finite systems): what ``torch.func.vmap`` needs, as ``torch.compile`` does. NaN input then flows
    to the output instead of raising."""
    global _unchecked
    _unchecked += 1
    try:
        yield
    finally:
        _unchecked -= 1


def checks_inputs() -> bool:
    """Whether a network may read its inputs' values on the host: not inside ``torch.compile`` or
    :func:`unchecked_inputs`."""
    return not (torch.compiler.is_compiling() or _unchecked)


class Neighbourhood(NamedTuple):
    """The pairs a convolution sums over, shared by all layers of a network.

    ``kernel_inputs: (B, M, K, C)``, ``C = embed_dim + 2 orbit_dim`` for lifted elements and
    ``invariant_dim`` for the exact lift; ``index: (B, M, K)`` neighbour indices, or
    None when every element is a neighbour (``K = M``, in order); ``weights: (B, M, K)``, the masked
    mean weights (1 / number of real neighbours, 0 for padding).
    """

    kernel_inputs: Tensor
    index: Tensor | None
    weights: Tensor


def _k_nearest(squared_distances: Callable[[slice], Tensor], mask: Tensor, k: int) -> Tensor:
    """Indices ``(B, M, k)`` of the ``k`` smallest of ``squared_distances(rows): (B, rows, M)`` in each
    row, computed a chunk of rows at a time; padded columns (``mask: (B, M)`` False) are chosen last."""
    B, M = mask.shape
    rows = max(1, _SEARCH_CHUNK_ELEMENTS // max(1, B * M))
    out = []
    with torch.no_grad():
        for start in range(0, M, rows):
            d2 = squared_distances(slice(start, min(M, start + rows)))
            d2 = d2.masked_fill(~mask.unsqueeze(1), float("inf"))
            out.append(d2.topk(k, dim=-1, largest=False).indices)
    return torch.cat(out, 1)


def nearest(group: LieGroup, elements: Tensor, orbits: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` nearest elements of each element (itself included), never holding more
    than a chunk of the ``M x M`` distances: ``elements: (B, M, n, n)``, ``orbits: (B, M, O)``,
    ``mask: (B, M)`` -> ``(B, M, k)`` long. Distance: ``sqrt(group distance^2 + |o_u - o_v|^2)``;
    padded elements are chosen last."""

    def squared_distances(rows: slice) -> Tensor:
        d2 = group.pairwise_distance(elements[:, rows], elements).square()
        return d2 + torch.cdist(orbits[:, rows], orbits).square() if orbits.shape[-1] else d2

    return _k_nearest(squared_distances, mask, k)


def nearest_points(group: LieGroup, points: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices ``(B, N, k)`` of the ``k`` nearest points of each point in ``group.point_distance``
    (itself included; padded points last), in row chunks: ``points: (B, N, D)``, ``mask: (B, N)``."""
    return _k_nearest(lambda rows: group.point_distance(points[:, rows], points).square(), mask, k)


def _neighbours(items: Tensor, mask: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor]:
    """Each row's neighbours of ``items: (B, M, ...)``, broadcastable against ``items.unsqueeze(2)``,
    and their mask ``(B, M, K)``: every item (``index`` None) or those ``index: (B, M, K)`` names."""
    B, M = mask.shape
    if index is None:
        return items.unsqueeze(1), mask.unsqueeze(1).expand(B, M, M)
    batch = torch.arange(B, device=mask.device).view(B, 1, 1)
    return items[batch, index], mask[batch, index]


def _mean_weights(neighbour_mask: Tensor, dtype: torch.dtype) -> Tensor:
    m_v = neighbour_mask.to(dtype)
    return m_v / m_v.sum(-1, keepdim=True).clamp(min=1)


def neighbourhood(group: LieGroup, elements: Tensor, orbits: Tensor, mask: Tensor,
                  k: int | None = None) -> Neighbourhood:
    """Kernel inputs and mean weights of lifted elements, for all pairs (``k=None``) or the ``k`` nearest.

    ``elements: (B, M, n, n)``, ``orbits: (B, M, O)``, ``mask: (B, M)`` bool. Kernel inputs are
    ``group.kernel_inputs(group.relative(u, v), o_u, o_v)``; ``relative`` is evaluated only on the
    selected pairs.
    """
    B, M = mask.shape
    index = None if k is None else nearest(group, elements, orbits, mask, k)
    v, m_v = _neighbours(elements, mask, index)
    o_v, _ = _neighbours(orbits, mask, index)
    u, o_u = elements.unsqueeze(2), orbits.unsqueeze(2)
    rel = group.relative(u, v)
    K = rel.shape[2]
    inputs = group.kernel_inputs(rel, o_u.expand(B, M, K, -1), o_v.expand(B, M, K, -1))
    return Neighbourhood(inputs, index, _mean_weights(m_v, rel.dtype))


def invariant_neighbourhood(group: LieGroup, points: Tensor, mask: Tensor, k: int | None = None) -> Neighbourhood:
    """Kernel inputs and mean weights of the exact lift (one per point), for all pairs (``k=None``) or
    the ``k`` nearest in ``group.point_distance``: ``points: (B, N, D)``, ``mask: (B, N)`` bool. Kernel
    inputs are ``group.pair_invariants(x_u, x_v)``, evaluated only on the selected pairs."""
    index = None if k is None else nearest_points(group, points, mask, k)
    x_v, m_v = _neighbours(points, mask, index)
    inputs = group.pair_invariants(points.unsqueeze(2), x_v)
    return Neighbourhood(inputs, index, _mean_weights(m_v, points.dtype))


class LieConv(nn.Module):
    """One LieConv layer: features on lifted elements ``(B, M, in_channels)`` -> ``(B, M, out_channels)``.

    ``kernel_inputs`` is the width of ``Neighbourhood.kernel_inputs``; the kernel MLP has two hidden
    layers of ``kernel_width`` with Swish (SiLU, smooth) and ``kernel_channels`` outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_inputs: int,
                 kernel_width: int = 32, kernel_channels: int = 16) -> None:
        super().__init__()
        self.kernel = nn.Sequential(
            nn.Linear(kernel_inputs, kernel_width), nn.SiLU(),
            nn.Linear(kernel_width, kernel_width), nn.SiLU(),
            nn.Linear(kernel_width, kernel_channels),
        )
        self.mix = nn.Linear(kernel_channels * in_channels, out_channels)

    def forward(self, features: Tensor, nbhd: Neighbourhood) -> Tensor:
        """``features: (B, M, C_in)`` -> ``(B, M, C_out)``."""
        k = self.kernel(nbhd.kernel_inputs) * nbhd.weights.unsqueeze(-1)  # (B, M, K, c)
        if nbhd.index is not None:
            # gather the neighbours' features, c times smaller than their W_c f_j would be
            batch = torch.arange(features.shape[0], device=features.device).view(-1, 1, 1)
            agg = torch.einsum("bijc,bijf->bicf", k, features[batch, nbhd.index])
            return self.mix(agg.flatten(-2))
        # all pairs: W (sum_j k_ij (x) f_j) = sum_{j,c} k_ijc (W_c f_j). Applying every W_c to every point
        # first is one large matmul (the same c C_in C_out per point as the mix), and the rest is one
        # contraction of length K c per system; the einsum order's contraction has length K (tiny,
        # slow batched matmuls) and feeds a (c C_in)-wide matmul that runs slower on CPU.
        B, M, K, c = k.shape
        c_in, c_out = features.shape[-1], self.mix.out_features
        weight = self.mix.weight.view(c_out, c, c_in).permute(2, 1, 0).reshape(c_in, c * c_out)
        h = (features @ weight).view(B, K * c, c_out)  # rows (j, c): W_c f_j
        return torch.baddbmm(self.mix.bias, k.reshape(B, M, K * c), h)


class _Bottleneck(nn.Module):
    """Residual block ``x + Linear(act(LieConv(act(Linear(act(x))))))`` with a 4x narrower convolution."""

    def __init__(self, width: int, kernel_inputs: int, kernel_width: int, kernel_channels: int) -> None:
        super().__init__()
        inner = max(1, width // 4)
        self.act = nn.SiLU()
        self.reduce = nn.Linear(width, inner)
        self.conv = LieConv(inner, inner, kernel_inputs, kernel_width, kernel_channels)
        self.expand = nn.Linear(inner, width)

    def forward(self, x: Tensor, nbhd: Neighbourhood) -> Tensor:
        h = self.conv(self.act(self.reduce(self.act(x))), nbhd)
        return x + self.expand(self.act(h))


class LieResNet(nn.Module):
    """A residual LieConv network with a group-invariant output per system.

    ``group``: the symmetry; ``in_features``: F, features per point; ``width``: channels;
    ``depth``: residual bottleneck blocks; ``out_features``: outputs per system; ``neighbours``: k of the
    k-nearest neighbourhood (counted in lifted elements), None for all points; ``lift``: ``"exact"``
    (one lift per point, kernel inputs ``group.pair_invariants``: invariant to round-off) or
    ``"monte-carlo"`` (the paper's random stabilizer samples: invariant in distribution), None for
    exact wherever the group has it (``group.has_exact_lift``; every built-in group); ``lift_samples``:
    the Monte Carlo sample count per point (None: ``DEFAULT_LIFT_SAMPLES``; 1 or None for the exact
    lift); ``kernel_width`` / ``kernel_channels``: the kernel MLP; ``kernel_bound``: None, or a bound ``c``
    through which every kernel input passes as ``c tanh(x / c)`` (close to ``x`` well inside ``c``), so
    the output is a bounded function of the points however far they go (``hamnet.training`` sets ``c``
    from the training data, with :meth:`kernel_input_extent`). ``coupling``: None, or every pair's weight
    times ``c_u c_v`` for a per-point ``c``: ``"affine"`` (a learned affine function of the point's
    features, so only a fit can make ``c`` vanish; True says the same) or an int ``j`` (feature ``j``
    itself, as when pair strengths are products of per-particle constants: springs' ``k_u k_v``,
    charges' ``q_u q_v``). A point with ``c = 0`` drops out of every pair: over translation-invariant
    kernel inputs it feels no force; about a centre it still moves the centroid. The output is the mean over real lifted
    elements of a per-element linear read-out. Parameters are created in the default dtype;
    convert the module (``model.to(torch.float64)``) to match the inputs.
    """

    def __init__(self, group: LieGroup, in_features: int, width: int = 128, depth: int = 4,
                 out_features: int = 1, neighbours: int | None = None, lift_samples: int | None = None,
                 kernel_width: int = 32, kernel_channels: int = 16, lift: str | None = None,
                 kernel_bound: float | None = None, coupling: str | int | None = None) -> None:
        super().__init__()
        for label, value in (("in_features", in_features), ("width", width), ("out_features", out_features),
                             ("kernel_width", kernel_width), ("kernel_channels", kernel_channels)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if neighbours is not None and neighbours < 1:
            raise ValueError(f"neighbours must be >= 1 or None (all points), got {neighbours}")
        self.kernel_bound = check_kernel_bound(kernel_bound)
        if isinstance(coupling, bool):  # the switch it was: True for the affine kind
            coupling = "affine" if coupling else None
        if not (coupling in (None, "affine") or (type(coupling) is int and 0 <= coupling < in_features)):
            raise ValueError(f"coupling must be None, 'affine' or a feature index below {in_features}, got {coupling!r}")
        self.group, self.in_features, self.out_features = group, in_features, out_features
        self.lift, self.lift_samples = resolve_lift(group, lift, lift_samples)
        self.neighbours = neighbours
        kernel_inputs = group.invariant_dim if self.lift == "exact" else group.embed_dim + 2 * group.orbit_dim
        self.embed = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(
            _Bottleneck(width, kernel_inputs, kernel_width, kernel_channels) for _ in range(depth))
        self.act = nn.SiLU()
        self.head = nn.Linear(width, out_features)
        self.coupling = nn.Linear(in_features, 1) if coupling == "affine" else None
        self.coupling_feature = coupling if type(coupling) is int else None

    def forward(self, points: Tensor, features: Tensor, mask: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """``points: (B, N, D)``, ``features: (B, N, F)``, ``mask: (B, N)`` bool -> ``(B, out_features)``.

        ``generator`` draws the stabilizer samples of a Monte Carlo lift (None: a fixed seed per call);
        the exact lift draws nothing. Padded points (mask False) are ignored and may hold any finite or
        non-finite values.
        """
        mask = self._validate(points, features, mask)
        features = torch.where(mask.unsqueeze(-1), features, torch.zeros_like(features))
        nbhd, lifted_mask = self._neighbourhood(points, mask, generator)
        return self._convolve(features.repeat_interleave(self.lift_samples, 1), lifted_mask, nbhd)

    def kernel_input_extent(self, points: Tensor, mask: Tensor | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
        """The largest ``|kernel input|`` (before any ``kernel_bound``) the network meets on ``points:
        (B, N, D)``, a 0-d tensor: the scale a bound should leave alone (``c tanh(x / c)`` bends ``x`` by
        less than 8% for ``|x| <= c / 2``)."""
        features = points.new_zeros(*points.shape[:2], self.in_features)
        mask = self._validate(points, features, mask)
        with torch.no_grad():
            nbhd, lifted_mask = self._neighbourhood(points, mask, generator)
            real = nbhd.weights > 0  # pairs of real elements
            return nbhd.kernel_inputs.abs().amax(-1).masked_fill(~real, 0).amax()

    def _neighbourhood(self, points: Tensor, mask: Tensor, generator: torch.Generator | None
                       ) -> tuple[Neighbourhood, Tensor]:
        """The neighbourhood of validated ``points`` and the mask of the elements it is over."""
        points = torch.where(mask.unsqueeze(-1), points, torch.zeros_like(points))
        if self.lift == "exact":
            return invariant_neighbourhood(self.group, points, mask, self.neighbours), mask
        elements, orbits, lifted_mask = self.group.lift(points, mask, self.lift_samples, generator)
        return neighbourhood(self.group, elements, orbits, lifted_mask, self.neighbours), lifted_mask

    def forward_lifted(self, elements: Tensor, orbits: Tensor, features: Tensor, mask: Tensor) -> Tensor:
        """The network on already lifted inputs: ``elements: (B, M, n, n)``, ``orbits: (B, M, O)``,
        ``features: (B, M, F)``, ``mask: (B, M)`` -> ``(B, out_features)``. Unchanged (to round-off)
        when every element is left-multiplied by the same group element. For a Monte Carlo network,
        or any network of a free action; an exact network of a group with a stabilizer sees pair
        invariants of points, not lifted elements."""
        if self.lift == "exact" and self.group.stabilizer_dim:
            raise ValueError(f"an exact {self.group.name} network takes points, not lifted elements; "
                             "forward_lifted needs lift='monte-carlo'")
        return self._convolve(features, mask, neighbourhood(self.group, elements, orbits, mask, self.neighbours))

    def _convolve(self, features: Tensor, mask: Tensor, nbhd: Neighbourhood) -> Tensor:
        """The blocks and the masked mean read-out: ``features: (B, M, F)``, ``mask: (B, M)``."""
        if self.kernel_bound is not None:
            c = self.kernel_bound
            nbhd = nbhd._replace(kernel_inputs=c * torch.tanh(nbhd.kernel_inputs / c))
        if self.coupling is not None or self.coupling_feature is not None:
            own = (self.coupling(features).squeeze(-1) if self.coupling is not None
                   else features[..., self.coupling_feature])  # (B, M)
            theirs = own.unsqueeze(1) if nbhd.index is None else torch.gather(
                own.unsqueeze(1).expand(-1, own.shape[1], -1), 2, nbhd.index)
            nbhd = nbhd._replace(weights=nbhd.weights * own.unsqueeze(-1) * theirs)
        x = self.embed(features)
        for block in self.blocks:
            x = block(x, nbhd)
        y = self.head(self.act(x))
        w = mask.to(y.dtype).unsqueeze(-1)
        return (y * w).sum(1) / w.sum(1).clamp(min=1)

    def _validate(self, points: Tensor, features: Tensor, mask: Tensor | None) -> Tensor:
        D = self.group.space_dim
        if points.ndim != 3 or points.shape[-1] != D:
            raise ValueError(f"{self.group.name} acts on {D}-dimensional points: expected points of shape "
                             f"(B, N, {D}), got {tuple(points.shape)}")
        B, N, _ = points.shape
        if features.shape != (B, N, self.in_features):
            raise ValueError(f"features must have shape (B, N, in_features) = {(B, N, self.in_features)}, "
                             f"got {tuple(features.shape)}")
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=points.device)
        elif mask.shape != (B, N) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {(B, N)}, got {mask.dtype} {tuple(mask.shape)}")
        # the values are not read inside torch.compile (a host read per call); there NaN flows to the output
        for label, x in (() if not checks_inputs() else (("points", points), ("features", features))):
            if not torch.isfinite(x[mask]).all():
                raise ValueError(f"{label} contain NaN or infinite values (at unmasked points)")
        dtype = self.head.weight.dtype
        if points.dtype != dtype or features.dtype != dtype:
            raise ValueError(f"inputs are {points.dtype}/{features.dtype} but the model is {dtype}; "
                             f"convert one of them, e.g. model.to({points.dtype})")
        if self.neighbours is not None and self.neighbours > N * self.lift_samples:
            raise ValueError(f"neighbours={self.neighbours} is larger than the number of points per system "
                             f"(N={N} points x {self.lift_samples} lift samples = {N * self.lift_samples})")
        return mask


def check_kernel_bound(kernel_bound: float | None) -> float | None:
    """``kernel_bound`` if it is None or a positive finite number; a one-line ValueError otherwise."""
    if kernel_bound is not None and not (math.isfinite(kernel_bound) and kernel_bound > 0):
        raise ValueError(f"kernel_bound must be a positive finite number or None (no bound), got {kernel_bound}")
    return kernel_bound


def resolve_lift(group: LieGroup, lift: str | None, lift_samples: int | None) -> tuple[str, int]:
    """``(lift, samples per point)`` for a network over ``group``, with clear errors: ``lift`` None
    means exact where ``group.has_exact_lift``, Monte Carlo otherwise; ``lift_samples`` is the Monte
    Carlo sample count (None: ``DEFAULT_LIFT_SAMPLES``) and must be 1 or None for the exact lift."""
    if lift is None:
        lift = "exact" if group.has_exact_lift else "monte-carlo"
    if lift not in LIFTS:
        raise ValueError(f"lift must be one of {', '.join(LIFTS)} (or None: exact where it exists), got {lift!r}")
    if lift == "exact":
        if not group.has_exact_lift:
            raise ValueError(f"{group.name} has no exact lift (no pair_invariants); use lift='monte-carlo'")
        if lift_samples not in (None, 1):
            raise ValueError(f"lift_samples must be 1 for {group.name} with the exact lift (one element per point), "
                             f"got {lift_samples}; lift='monte-carlo' samples the stabilizer")
        return lift, 1
    if not group.stabilizer_dim:
        raise ValueError(f"{group.name} acts freely, so its one lift per point is already exact: lift='monte-carlo' "
                         "needs a stabilizer to sample")
    samples = DEFAULT_LIFT_SAMPLES if lift_samples is None else lift_samples
    if samples < 1:
        raise ValueError(f"lift_samples must be >= 1, got {lift_samples}")
    return lift, samples


def centre(points: Tensor, mask: Tensor | None = None) -> Tensor:
    """Subtract each system's centroid over its real points: ``points: (B, N, D)``, ``mask: (B, N)``.

    A network of a rotation group applied to centred points is invariant to translations too.
    """
    if mask is None:
        return points - points.mean(1, keepdim=True)
    w = mask.to(points.dtype).unsqueeze(-1)
    return points - (points * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1)
