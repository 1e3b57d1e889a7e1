"""Matrix Lie groups that act on point clouds: the symmetry groups LieConv is built on.

Note to the reader: every group element is a square matrix, stored as a tensor of shape
``(..., n, n)``; ``n = D + 1`` (homogeneous coordinates) for groups with translations, ``n = D`` for
rotation groups and ``n = 1`` for the trivial group. Composition is the matrix product. A Lie algebra
element is a flat coordinate vector ``a: (..., lie_dim)``; for the rigid groups it is ordered rotation
first, then translation: SO(2) ``(theta,)``, SE(2) ``(theta, v1, v2)``, SO(3) ``(w1, w2, w3)``,
SE(3) ``(w1, w2, w3, v1, v2, v3)``, T(D) ``(t1, ..., tD)``. Points are ``(..., D)``.

``log`` wraps where the exponential stops being injective (rotation angle ``pi``), so a network must
not see raw algebra coordinates. It sees ``embed(a)``, which equals ``chart(exp(a))``: the entries of
the matrix ``exp(a) - I`` that are not constant (for SO(2): ``(cos theta - 1, sin theta)``). That is
continuous and smooth across the wrap, and ``chart(u^-1 v)`` gives it straight from two elements
without evaluating ``log``, which is how ``hamnet.lieconv`` builds kernel inputs. For the rigid groups
the distance ``|chart(u^-1 v)|`` is the Frobenius distance between the matrices ``u`` and ``v``
(a left-invariant metric, monotone in the geodesic ``|log(u^-1 v)|`` near the identity), so nearest
neighbours can be searched with plain Euclidean distances between flattened matrices.

Where the action has a stabilizer (SE(2), SO(3), SE(3)), the paper lifts each point to random
elements ``section(x) h``, ``h`` uniform on the stabilizer ``H``, which makes a network invariant only
in distribution. The exact alternative keeps one lift per point and feeds the kernel only what does
not depend on the choice of ``h``: functions of the double coset ``H u^-1 v H``. For a pair of points
these are exactly the pair's invariants under the group, which ``pair_invariants`` computes straight
from the points as polynomials (``x_u . x_v`` and both ``|x|^2`` for SO(3), ``|x_v - x_u|^2`` for
SE(2) and SE(3)), smooth everywhere, the rotation centre included.

Closed forms such as ``sin(theta) / theta`` switch to Taylor series below ``SERIES_THRESHOLD`` in
``theta^2``, and every ``sqrt`` / division is guarded so that values and first and second derivatives
stay finite, including for a point at the rotation centre.
"""

from __future__ import annotations

import abc
import inspect
import math
import re
from collections.abc import Callable

import torch
from torch import Tensor

from .registry import Registry

# Below this value of theta^2 the closed forms are replaced by their Taylor series (through theta^12,
# truncation error < 1e-16 there), far enough from 0 that the closed forms' cancellation stays small.
SERIES_THRESHOLD = 0.25
# SO(3) log: series in s^2 = sin(theta)^2 below this (arcsin(s)/s converges slowly, so it is smaller).
_ARCSIN_THRESHOLD = 1e-2
# SO(3) log: below this cos(theta) the axis is read from the symmetric part of R (theta > 2 pi / 3).
_NEAR_PI_COS = -0.5
# Seed of the generator used for stabilizer samples when the caller passes none.
DEFAULT_LIFT_SEED = 0


def _taylor(coefficients: list[float]) -> Callable[[Tensor], Tensor]:
    def series(x2: Tensor) -> Tensor:
        out = torch.full_like(x2, coefficients[-1])
        for c in reversed(coefficients[:-1]):
            out = out * x2 + c
        return out

    return series


def _alternating(offset: int) -> list[float]:
    """Coefficients of sum_n (-1)^n x^(2n) / (2n + offset)!, in x^2."""
    return [(-1) ** n / math.factorial(2 * n + offset) for n in range(7)]


# (theta / 2) cot(theta / 2) = sum_n (-1)^n B_2n theta^2n / (2n)!, Bernoulli numbers B_2n
_BERNOULLI = [1.0, 1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730]
_HALF_COT = [(-1) ** n * b / math.factorial(2 * n) for n, b in enumerate(_BERNOULLI)]
# arcsin(s) / s = sum_n (2n)! / (4^n (n!)^2 (2n + 1)) s^2n
_ARCSIN = [math.comb(2 * n, n) / (4**n * (2 * n + 1)) for n in range(9)]


def _even(x2: Tensor, exact: Callable[[Tensor], Tensor], coefficients: list[float],
          threshold: float = SERIES_THRESHOLD) -> Tensor:
    """An even function of ``x`` given ``x^2``: series below ``threshold``, ``exact(x)`` above.

    The closed form is evaluated on a sanitised input where the series is used, so neither branch
    produces NaN or infinite gradients (the usual double-``where`` guard).
    """
    small = x2 < threshold
    x = torch.sqrt(torch.where(small, torch.full_like(x2, 4 * threshold), x2))
    return torch.where(small, _taylor(coefficients)(x2), exact(x))


def sinc(x2: Tensor) -> Tensor:
    """``sin(x) / x`` from ``x^2``; any shape."""
    return _even(x2, lambda x: torch.sin(x) / x, _alternating(1))


def one_minus_cos_over_sq(x2: Tensor) -> Tensor:
    """``(1 - cos x) / x^2`` from ``x^2``; any shape."""
    return _even(x2, lambda x: 2 * torch.sin(x / 2).square() / x.square(), _alternating(2))


def x_minus_sin_over_cube(x2: Tensor) -> Tensor:
    """``(x - sin x) / x^3`` from ``x^2``; any shape."""
    return _even(x2, lambda x: (x - torch.sin(x)) / x**3, _alternating(3))


def half_cot(x2: Tensor) -> Tensor:
    """``(x / 2) cot(x / 2)`` from ``x^2``; finite for ``|x| < 2 pi``; any shape."""
    return _even(x2, lambda x: (x / 2) / torch.tan(x / 2), _HALF_COT)


def _safe_norm(x: Tensor, dim: int = -1, keepdim: bool = False) -> Tensor:
    """Euclidean norm whose gradient is 0 (not NaN) at the zero vector."""
    sq = x.square().sum(dim, keepdim=keepdim)
    return torch.sqrt(torch.clamp(sq, min=torch.finfo(x.dtype).tiny))


def _unit(x: Tensor, fallback: Tensor) -> tuple[Tensor, Tensor]:
    """``(x / |x|, |x|)`` along the last axis; ``fallback`` direction and radius 0 where ``x`` ~ 0.

    Below ``|x|^2 = tiny^(1/3)`` the point counts as the origin; the guard keeps the second
    derivative of the direction (~ 1 / |x|^3) finite in float32 and float64.
    """
    sq = x.square().sum(-1, keepdim=True)
    ok = sq > torch.finfo(x.dtype).tiny ** (1 / 3)
    safe = torch.where(ok, x, fallback)
    r = torch.sqrt(safe.square().sum(-1, keepdim=True))
    return torch.where(ok, safe / r, fallback), torch.where(ok, r, torch.zeros_like(r))


def hat3(w: Tensor) -> Tensor:
    """Skew-symmetric matrix of a 3-vector: ``w: (..., 3)`` -> ``(..., 3, 3)`` with ``hat3(w) x = w x x``."""
    z = torch.zeros_like(w[..., 0])
    w1, w2, w3 = w.unbind(-1)
    rows = [torch.stack([z, -w3, w2], -1), torch.stack([w3, z, -w1], -1), torch.stack([-w2, w1, z], -1)]
    return torch.stack(rows, -2)


def _eye_like(x: Tensor, n: int) -> Tensor:
    return torch.eye(n, dtype=x.dtype, device=x.device)


def _rot2(c: Tensor, s: Tensor) -> Tensor:
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
           device: torch.device | str | None) -> Tensor:
    """Standard normals drawn in float64 on the generator's device, then cast: the same draws for
    every dtype. ``generator=None`` means a fresh generator seeded with ``DEFAULT_LIFT_SEED``."""
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_LIFT_SEED)
    x = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    return x.to(dtype=dtype, device=device)


def _uniform_angle(shape, generator, dtype, device) -> Tensor:
    """Angles uniform on the circle, as ``atan2`` of a Gaussian pair (exactly uniform)."""
    xy = _randn((*shape, 2), generator, dtype, device)
    return torch.atan2(xy[..., 1], xy[..., 0])


def _uniform_so3(shape, generator, dtype, device) -> Tensor:
    """Haar-uniform rotations ``(*shape, 3, 3)`` from normalised Gaussian quaternions."""
    q = _randn((*shape, 4), generator, dtype, device)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, -2)


class LieGroup(abc.ABC):
    """A matrix Lie group acting on ``D``-dimensional points.

    A new group sets ``name``, ``space_dim``, ``lie_dim``, ``matrix_size`` (and ``orbit_dim`` /
    ``stabilizer_dim`` when its action is not free and transitive) and implements ``hat`` (algebra
    coordinates to matrices), ``log`` and ``section`` (one element per point). Everything else has a
    generic default: ``exp`` is ``torch.linalg.matrix_exp`` of ``hat``, composition the matrix
    product, ``chart`` the entries of ``g - I``. Override for speed or numerical stability.
    """

    name: str
    space_dim: int  # D, the dimension of the points the group acts on
    lie_dim: int  # dimension of the Lie algebra
    matrix_size: int  # n, elements are (..., n, n)
    orbit_dim: int = 0  # size of the orbit identifier (0 when the action is transitive)
    stabilizer_dim: int = 0  # dimension of the stabilizer of a point (0: free action, one lift per point)

    # -- what a subclass provides ---------------------------------------------------------------
    @abc.abstractmethod
    def hat(self, a: Tensor) -> Tensor:
        """Algebra coordinates to algebra matrices: ``a: (..., lie_dim)`` -> ``(..., n, n)``."""

    @abc.abstractmethod
    def log(self, g: Tensor) -> Tensor:
        """Logarithm ``g: (..., n, n)`` -> ``a: (..., lie_dim)``, the principal branch."""

    @abc.abstractmethod
    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """One element per point: ``points: (..., D)`` -> ``(elements (..., n, n), orbits (..., orbit_dim))``.

        ``act(section(x), origin_of_orbit) = x``: the element carries the orbit's reference point to ``x``.
        """

    # -- generic operations ---------------------------------------------------------------------
    def exp(self, a: Tensor) -> Tensor:
        """Exponential ``a: (..., lie_dim)`` -> ``g: (..., n, n)``."""
        return torch.linalg.matrix_exp(self.hat(a))

    def identity(self, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> Tensor:
        """Identity elements ``(*shape, n, n)``."""
        eye = torch.eye(self.matrix_size, dtype=dtype, device=device)
        return eye.expand(*shape, self.matrix_size, self.matrix_size).clone()

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        """Product ``g h``, broadcasting: ``(..., n, n), (..., n, n)`` -> ``(..., n, n)``."""
        return g @ h

    def inv(self, g: Tensor) -> Tensor:
        """Inverse ``g^-1``: ``(..., n, n)`` -> ``(..., n, n)``."""
        return torch.linalg.inv(g)

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        """Action on points, broadcasting: ``g: (..., n, n)``, ``x: (..., D)`` -> ``(..., D)``.

        Linear when ``n == D``, affine (homogeneous coordinates) when ``n == D + 1``.
        """
        D = self.space_dim
        lin = (g[..., :D, :D] @ x.unsqueeze(-1)).squeeze(-1)
        return lin + g[..., :D, D] if self.matrix_size == D + 1 else lin

    def chart(self, g: Tensor) -> Tensor:
        """Smooth coordinates of ``g`` that vanish at the identity: ``(..., n, n)`` -> ``(..., embed_dim)``.

        The default is every entry of ``g - I``; groups drop the entries that are constant or repeated.
        """
        return (g - _eye_like(g, self.matrix_size)).flatten(-2)

    @property
    def embed_dim(self) -> int:
        """Length of ``embed(a)`` and ``chart(g)``."""
        return self.chart(self.identity()).shape[-1]

    def embed(self, a: Tensor) -> Tensor:
        """Kernel input for an algebra element: ``chart(exp(a))``, continuous across the wrap of ``log``.

        ``a: (..., lie_dim)`` -> ``(..., embed_dim)``.
        """
        return self.chart(self.exp(a))

    def relative(self, u: Tensor, v: Tensor) -> Tensor:
        """``embed(log(u^-1 v))`` computed without ``log``: ``(..., n, n)`` x2, broadcasting -> ``(..., embed_dim)``."""
        return self.chart(self.compose(self.inv(u), v))

    def kernel_inputs(self, relative: Tensor, orbit_u: Tensor, orbit_v: Tensor) -> Tensor:
        """What a LieConv kernel sees for a pair: ``relative(u, v)`` and both orbit identifiers,
        ``(..., embed_dim)``, ``(..., orbit_dim)`` x2 -> ``(..., embed_dim + 2 orbit_dim)``. Override to
        keep the inputs smooth functions of the points where the lift is not (see :class:`SO2`)."""
        if not self.orbit_dim:
            return relative
        return torch.cat([relative, orbit_u, orbit_v], -1)

    # -- the exact construction: pair invariants of points ------------------------------------------
    @property
    def has_exact_lift(self) -> bool:
        """Whether :meth:`pair_invariants` and :meth:`point_distance` exist, so that a network over the
        group is invariant to round-off (``LieResNet(lift="exact")``). True for free actions, whose one
        lift per point is deterministic; a group with a stabilizer overrides both methods and this."""
        return self.stabilizer_dim == 0

    def pair_invariants(self, x_u: Tensor, x_v: Tensor) -> Tensor:
        """What the kernel of an exact network sees for a pair of points: functions of the pair that the
        group, acting on both points at once, leaves unchanged. ``(..., D)`` x2, broadcasting ->
        ``(..., invariant_dim)``.

        They are the kernel inputs of the lifted pair that do not depend on which lift (which stabilizer
        element) either point got, so one lift per point gives an exactly invariant network. Default,
        for a free action: ``kernel_inputs`` of the section's elements, what the lift itself gives.
        """
        if self.stabilizer_dim:
            raise NotImplementedError(f"{self.name} has a stabilizer but no pair_invariants: its networks need "
                                      "lift='monte-carlo'")
        u, o_u = self.section(x_u)
        v, o_v = self.section(x_v)
        relative = self.relative(u, v)
        shape = relative.shape[:-1]
        return self.kernel_inputs(relative, o_u.expand(*shape, -1), o_v.expand(*shape, -1))

    @property
    def invariant_dim(self) -> int:
        """Length of :meth:`pair_invariants`."""
        x = torch.ones(self.space_dim, dtype=torch.float64, device="cpu")  # a lift may be singular at the origin
        return self.pair_invariants(x, x).shape[-1]

    def point_distance(self, x: Tensor, y: Tensor) -> Tensor:
        """A distance between points that the group leaves unchanged, by which an exact network chooses
        the k nearest: ``x: (B, m, D)``, ``y: (B, M, D)`` -> ``(B, m, M)``. Default, for a free action:
        ``sqrt(distance(section(x), section(y))^2 + |o_x - o_y|^2)``, as the search over lifts ranks."""
        if self.stabilizer_dim:
            raise NotImplementedError(f"{self.name} has a stabilizer but no point_distance")
        u, o_u = self.section(x)
        v, o_v = self.section(y)
        d2 = self.pairwise_distance(u, v).square()
        if self.orbit_dim:
            d2 = d2 + torch.cdist(o_u, o_v).square()
        return d2.sqrt()

    def distance(self, u: Tensor, v: Tensor) -> Tensor:
        """Left-invariant distance ``|chart(u^-1 v)|``, broadcasting: -> ``(...)``."""
        return _safe_norm(self.relative(u, v))

    def pairwise_distance(self, u: Tensor, v: Tensor) -> Tensor:
        """All distances between two sets: ``u: (B, m, n, n)``, ``v: (B, M, n, n)`` -> ``(B, m, M)``."""
        return self.distance(u.unsqueeze(2), v.unsqueeze(1))

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
               scale: float = 1.0) -> Tensor:
        """Random elements ``(*shape, n, n)``; the default is ``exp`` of Gaussian algebra coordinates
        with standard deviation ``scale``. Rigid groups draw rotations uniformly (Haar measure)."""
        return self.exp(scale * _randn((*shape, self.lie_dim), generator, dtype, device))

    def sample_stabilizer(self, shape: tuple[int, ...], generator: torch.Generator | None,
                          dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
        """Random elements ``(*shape, n, n)`` of the stabilizer of the reference points (uniform)."""
        raise NotImplementedError(f"{self.name} acts freely; its stabilizer is trivial")

    # -- lifting ----------------------------------------------------------------------------------
    def lift(self, points: Tensor, mask: Tensor | None = None, n_samples: int = 1,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Lift points to group elements: ``points: (B, N, D)``, ``mask: (B, N)`` bool or None.

        Returns ``elements (B, N * s, n, n)``, ``orbits (B, N * s, orbit_dim)`` and ``mask (B, N * s)``,
        ``s = n_samples``. For a free action ``s`` must be 1 and the lift is deterministic; otherwise each
        point gets ``s`` elements ``section(x) h`` with ``h`` uniform on the stabilizer, drawn from
        ``generator`` (``None``: a fresh generator seeded with ``DEFAULT_LIFT_SEED``, so the lift is a
        fixed function of the points), the same draws for particle ``i`` of every system in the batch.
        Samples of point ``i`` sit at ``i * s ... i * s + s - 1``.
        """
        if points.ndim != 3 or points.shape[-1] != self.space_dim:
            raise ValueError(f"{self.name} acts on {self.space_dim}-dimensional points: expected points of "
                             f"shape (B, N, {self.space_dim}), got {tuple(points.shape)}")
        B, N, _ = points.shape
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=points.device)
        base, orbits = self.section(points)
        if self.stabilizer_dim == 0:
            if n_samples != 1:
                raise ValueError(f"{self.name} acts freely, so each point has one lift; got n_samples={n_samples}")
            return base, orbits, mask
        n = self.matrix_size
        # one draw per particle slot, shared by every system of the batch: a system's lift (and so a
        # model's energy) then does not depend on where it sits in the batch or how large the batch is
        h = self.sample_stabilizer((1, N, n_samples), generator, points.dtype, points.device)
        elements = self.compose(base.unsqueeze(2), h).reshape(B, N * n_samples, n, n)
        orbits = orbits.repeat_interleave(n_samples, dim=1)
        return elements, orbits, mask.repeat_interleave(n_samples, dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:  # groups are values: T(2) == T(2)
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))


class Trivial(LieGroup):
    """The one-element group on ``R^D``: no symmetry. Each point is its own orbit (its coordinates
    are the orbit identifier), so LieConv over it is a plain continuous point convolution."""

    lie_dim = 0
    matrix_size = 1

    def __init__(self, dim: int) -> None:
        self.space_dim = _check_dim(dim, (1, 2, 3), "Trivial")
        self.orbit_dim = self.space_dim
        self.name = f"Trivial{self.space_dim}"

    def hat(self, a: Tensor) -> Tensor:
        return a.new_zeros((*a.shape[:-1], 1, 1))

    def exp(self, a: Tensor) -> Tensor:
        return a.new_ones((*a.shape[:-1], 1, 1))

    def log(self, g: Tensor) -> Tensor:
        return g.new_zeros((*g.shape[:-2], 0))

    def inv(self, g: Tensor) -> Tensor:
        return g

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        return x.expand(torch.broadcast_shapes(g.shape[:-2] + (1,), x.shape))

    def chart(self, g: Tensor) -> Tensor:
        return g.new_zeros((*g.shape[:-2], 0))

    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        return points.new_ones((*points.shape[:-1], 1, 1)), points

    def pairwise_distance(self, u: Tensor, v: Tensor) -> Tensor:
        return u.new_zeros(u.shape[0], u.shape[1], v.shape[1])

    def sample(self, shape, generator=None, dtype=torch.float64, device=None, scale=1.0) -> Tensor:
        return torch.ones((*shape, 1, 1), dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"Trivial({self.space_dim})"


class _Rigid(LieGroup):
    """Subgroups of the rigid motions E(D): rotations ``R`` (D x D block, or none), translations ``t``.

    Elements are ``[[R, t], [0, 1]]`` when the group translates, ``R`` otherwise. Inverse, chart and
    distances use the block structure; ``chart(g)`` is ``(rotation entries, t)`` and
    ``|chart(u^-1 v)| = |coords(u) - coords(v)|``, which the nearest-neighbour search exploits.
    """

    rotates: bool
    translates: bool

    def _blocks(self, g: Tensor) -> tuple[Tensor | None, Tensor | None]:
        D = self.space_dim
        R = g[..., :D, :D] if self.rotates else None
        t = g[..., :D, D] if self.translates else None
        return R, t

    def _join(self, R: Tensor | None, t: Tensor | None) -> Tensor:
        if not self.translates:
            return R
        D = self.space_dim
        if R is None:
            R = _eye_like(t, D).expand(*t.shape[:-1], D, D)
        top = torch.cat([R, t.unsqueeze(-1)], -1)
        bottom = torch.cat([t.new_zeros(*t.shape[:-1], 1, D), t.new_ones(*t.shape[:-1], 1, 1)], -1)
        return torch.cat([top, bottom], -2)

    def hat(self, a: Tensor) -> Tensor:
        D, n = self.space_dim, self.matrix_size
        r = (1 if D == 2 else 3) if self.rotates else 0  # rotation coordinates come first
        out = a.new_zeros(*a.shape[:-1], n, n)
        if self.rotates:
            out[..., :D, :D] = _rot2(torch.zeros_like(a[..., 0]), a[..., 0]) if D == 2 else hat3(a[..., :3])
        if self.translates:
            out[..., :D, D] = a[..., r:]
        return out

    def inv(self, g: Tensor) -> Tensor:
        R, t = self._blocks(g)
        Rt = R.transpose(-1, -2) if R is not None else None
        if t is None:
            return Rt
        return self._join(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1) if Rt is not None else -t)

    def kernel_inputs(self, relative: Tensor, orbit_u: Tensor, orbit_v: Tensor) -> Tensor:
        """For rotations about a centre (SO(2), SO(3)): the relative rotation weighted by both radii,
        then the squared radii.

        A point's lifted rotation turns abruptly as the point passes through the centre, so the
        relative rotation alone would make the potential, and with it the force ``~ 1 / distance``,
        singular there. Weighted by ``r_u r_v`` the inputs stay bounded with bounded derivatives; in
        the plane they are exactly ``(x_u . x_v, x_u x x_v, |x_u|^2, |x_v|^2)``, polynomials in the
        points. Invariance is untouched: radii are invariants.
        """
        if self.translates or not self.orbit_dim:
            return super().kernel_inputs(relative, orbit_u, orbit_v)
        n = self.space_dim
        identity = _eye_like(relative, n)[0] if n == 2 else _eye_like(relative, n).flatten()
        rotation = relative + identity  # the entries of R_u^T R_v the chart keeps
        return torch.cat([orbit_u * orbit_v * rotation, orbit_u.square(), orbit_v.square()], -1)

    @property
    def has_exact_lift(self) -> bool:
        return True

    def pair_invariants(self, x_u: Tensor, x_v: Tensor) -> Tensor:
        """Every invariant of a pair of points under the group, as polynomials in the points:

        - T(D): ``x_v - x_u``;
        - SO(2): ``(x_u . x_v, x_u x x_v, |x_u|^2, |x_v|^2)``, the radius-weighted kernel inputs of the
          lift (see :meth:`kernel_inputs`), free of its kink at the rotation centre;
        - SO(3): ``(x_u . x_v, |x_u|^2, |x_v|^2)``, both radii and the angle between the points:
          ``r_u r_v`` times the one entry of ``R_u^T R_v`` that rotations about either point's axis
          leave alone;
        - SE(2), SE(3): ``|x_v - x_u|^2``, the one thing about ``u^-1 v`` that rotations about
          either point leave alone.

        Those of SO(3), SE(2) and SE(3) are invariant to reflections too, so their networks cannot tell a
        configuration from its mirror image (SO(2)'s cross product can). ``(..., D)`` x2, broadcasting ->
        ``(..., invariant_dim)``.
        """
        x_u, x_v = torch.broadcast_tensors(x_u, x_v)
        if not self.rotates:
            return x_v - x_u
        if self.translates:
            return (x_v - x_u).square().sum(-1, keepdim=True)
        dot = (x_u * x_v).sum(-1, keepdim=True)
        radii = [x_u.square().sum(-1, keepdim=True), x_v.square().sum(-1, keepdim=True)]
        if self.space_dim == 3:
            return torch.cat([dot, *radii], -1)
        cross = x_u[..., :1] * x_v[..., 1:] - x_u[..., 1:] * x_v[..., :1]
        return torch.cat([dot, cross, *radii], -1)

    def point_distance(self, x: Tensor, y: Tensor) -> Tensor:
        """The Euclidean distance, which every rigid motion keeps."""
        return torch.cdist(x, y)

    def _rotation_chart(self, R: Tensor) -> Tensor:
        if self.space_dim == 2:  # (cos - 1, sin): the first column minus e1
            return R[..., :, 0] - _eye_like(R, 2)[0]
        return (R - _eye_like(R, 3)).flatten(-2)

    def chart(self, g: Tensor) -> Tensor:
        R, t = self._blocks(g)
        return torch.cat([p for p in (self._rotation_chart(R) if R is not None else None, t) if p is not None], -1)

    def coords(self, g: Tensor) -> Tensor:
        """Flat coordinates with ``|coords(u) - coords(v)| = distance(u, v)``: ``(..., n, n)`` -> ``(..., embed_dim)``."""
        R, t = self._blocks(g)
        parts = []
        if R is not None:
            parts.append(R[..., :, 0] if self.space_dim == 2 else R.flatten(-2))
        if t is not None:
            parts.append(t)
        return torch.cat(parts, -1)

    def relative(self, u: Tensor, v: Tensor) -> Tensor:
        Ru, tu = self._blocks(u)
        Rv, tv = self._blocks(v)
        parts = []
        if Ru is not None:
            Rt = Ru.transpose(-1, -2)
            if self.space_dim == 2:  # only the first column of R_u^T R_v is needed
                parts.append((Rt @ Rv[..., :, :1]).squeeze(-1) - _eye_like(Rv, 2)[0])
            else:
                parts.append(self._rotation_chart(Rt @ Rv))
        if tu is not None:
            dt = tv - tu
            parts.append((Ru.transpose(-1, -2) @ dt.unsqueeze(-1)).squeeze(-1) if Ru is not None else dt)
        return torch.cat(parts, -1)

    def pairwise_distance(self, u: Tensor, v: Tensor) -> Tensor:
        return torch.cdist(self.coords(u), self.coords(v))

    def _sample_rotation(self, shape, generator, dtype, device) -> Tensor:
        if self.space_dim == 2:
            theta = _uniform_angle(shape, generator, dtype, device)
            return _rot2(torch.cos(theta), torch.sin(theta))
        return _uniform_so3(shape, generator, dtype, device)

    def sample(self, shape, generator=None, dtype=torch.float64, device=None, scale=1.0) -> Tensor:
        if generator is None:
            generator = torch.Generator().manual_seed(DEFAULT_LIFT_SEED)
        R = self._sample_rotation(shape, generator, dtype, device) if self.rotates else None
        t = scale * _randn((*shape, self.space_dim), generator, dtype, device) if self.translates else None
        return self._join(R, t)


class T(_Rigid):
    """Translations of ``R^D`` (D = 2 or 3). Free and transitive: one lift per point, no orbit identifier."""

    rotates = False
    translates = True

    def __init__(self, dim: int) -> None:
        self.space_dim = self.lie_dim = _check_dim(dim, (2, 3), "T")
        self.matrix_size = self.space_dim + 1
        self.name = f"T{self.space_dim}"

    def exp(self, a: Tensor) -> Tensor:
        return self._join(None, a)

    def log(self, g: Tensor) -> Tensor:
        return g[..., : self.space_dim, self.space_dim]

    def relative(self, u: Tensor, v: Tensor) -> Tensor:
        return self.log(v) - self.log(u)

    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        return self.exp(points), points.new_zeros(*points.shape[:-1], 0)

    def __repr__(self) -> str:
        return f"T({self.space_dim})"


class SO2(_Rigid):
    """Rotations of the plane about the origin. Orbits are circles, identified by their radius; the
    lift of ``x`` is the rotation by the polar angle of ``x`` (deterministic). The origin lifts to the
    identity with radius 0 (its stabilizer is all of SO(2); this fixed choice keeps it finite)."""

    name = "SO2"
    space_dim = 2
    lie_dim = 1
    matrix_size = 2
    orbit_dim = 1
    rotates = True
    translates = False

    def exp(self, a: Tensor) -> Tensor:
        return _rot2(torch.cos(a[..., 0]), torch.sin(a[..., 0]))

    def log(self, g: Tensor) -> Tensor:
        return torch.atan2(g[..., 1, 0], g[..., 0, 0]).unsqueeze(-1)

    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        direction, r = _unit(points, _eye_like(points, 2)[0])
        return _rot2(direction[..., 0], direction[..., 1]), r


class SE2(_Rigid):
    """Rigid motions of the plane. Transitive with stabilizer SO(2): each point lifts to
    ``n_samples`` elements (translation to the point, then a uniformly random rotation)."""

    name = "SE2"
    space_dim = 2
    lie_dim = 3
    matrix_size = 3
    stabilizer_dim = 1
    rotates = True
    translates = True

    def exp(self, a: Tensor) -> Tensor:
        theta = a[..., 0]
        t2 = theta.square()
        A, Bt = sinc(t2), theta * one_minus_cos_over_sq(t2)
        v1, v2 = a[..., 1], a[..., 2]
        t = torch.stack([A * v1 - Bt * v2, Bt * v1 + A * v2], -1)
        return self._join(_rot2(torch.cos(theta), torch.sin(theta)), t)

    def log(self, g: Tensor) -> Tensor:
        theta = torch.atan2(g[..., 1, 0], g[..., 0, 0])
        alpha, beta = half_cot(theta.square()), theta / 2
        t1, t2 = g[..., 0, 2], g[..., 1, 2]
        return torch.stack([theta, alpha * t1 + beta * t2, -beta * t1 + alpha * t2], -1)

    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        return self._join(None, points), points.new_zeros(*points.shape[:-1], 0)

    def sample_stabilizer(self, shape, generator, dtype, device) -> Tensor:
        theta = _uniform_angle(shape, generator, dtype, device)
        return self._join(_rot2(torch.cos(theta), torch.sin(theta)), theta.new_zeros(*shape, 2))


def _so3_exp(w: Tensor) -> Tensor:
    K = hat3(w)
    t2 = w.square().sum(-1)[..., None, None]
    return _eye_like(w, 3) + sinc(t2) * K + one_minus_cos_over_sq(t2) * (K @ K)


def _so3_log(R: Tensor) -> Tensor:
    """Rotation vector of ``R: (..., 3, 3)``: series near the identity, the symmetric part near pi."""
    axial = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                         R[..., 1, 0] - R[..., 0, 1]], -1) / 2  # sin(theta) * axis
    c = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    s2 = axial.square().sum(-1)
    near_pi = c < _NEAR_PI_COS
    small = (s2 < _ARCSIN_THRESHOLD) & ~near_pi
    s = torch.sqrt(torch.clamp(s2, min=torch.finfo(R.dtype).tiny))
    # generic: w = theta / sin(theta) * axial, on inputs sanitised where another branch is used
    s_gen = torch.where(small | near_pi, torch.ones_like(s), s)
    generic = (torch.atan2(s_gen, c) / s_gen).unsqueeze(-1) * axial
    series = _taylor(_ARCSIN)(s2).unsqueeze(-1) * axial
    # near pi: axis from (R + R^T) / 2 - c I = (1 - c) k k^T, column with the largest diagonal
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=R.dtype, device=R.device))
    R_pi = torch.where(near_pi[..., None, None], R, flip)
    c_pi = torch.where(near_pi, c, -torch.ones_like(c))
    sym = (R_pi + R_pi.transpose(-1, -2)) / 2 - c_pi[..., None, None] * _eye_like(R, 3)
    j = sym.diagonal(dim1=-2, dim2=-1).argmax(-1)
    col = torch.gather(sym, -1, j[..., None, None].expand(*j.shape, 3, 1)).squeeze(-1)
    axis = col / col.norm(dim=-1, keepdim=True)
    sign = torch.where((axis * axial).sum(-1) < 0, -torch.ones_like(c), torch.ones_like(c))
    pi_branch = (sign * torch.atan2(s, c_pi)).unsqueeze(-1) * axis
    return torch.where(near_pi.unsqueeze(-1), pi_branch, torch.where(small.unsqueeze(-1), series, generic))


class SO3(_Rigid):
    """Rotations of space about the origin. Orbits are spheres (identified by the radius), the
    stabilizer of a point is the SO(2) of rotations about its axis: each point lifts to ``n_samples``
    elements ``R_x Rz(phi)``, ``R_x`` the rotation taking ``e3`` to ``x / |x|`` about ``e3 x x``
    (continuous except at ``-e3``) and ``phi`` uniform."""

    name = "SO3"
    space_dim = 3
    lie_dim = 3
    matrix_size = 3
    orbit_dim = 1
    stabilizer_dim = 1
    rotates = True
    translates = False

    def exp(self, a: Tensor) -> Tensor:
        return _so3_exp(a)

    def log(self, g: Tensor) -> Tensor:
        return _so3_log(g)

    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        e3 = _eye_like(points, 3)[2]
        n, r = _unit(points, e3)
        # Rodrigues form of the rotation e3 -> n: I + K + K^2 / (1 + c), K = hat(e3 x n), c = n3
        ok = n[..., 2:] > -1 + torch.finfo(points.dtype).eps
        n = torch.where(ok, n, e3)
        k = torch.stack([-n[..., 1], n[..., 0], torch.zeros_like(n[..., 0])], -1)
        K = hat3(k)
        R = _eye_like(points, 3) + K + (K @ K) / (1 + n[..., 2])[..., None, None]
        flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=points.dtype, device=points.device))
        return torch.where(ok.unsqueeze(-1), R, flip), r

    def sample_stabilizer(self, shape, generator, dtype, device) -> Tensor:
        phi = _uniform_angle(shape, generator, dtype, device)
        c, s = torch.cos(phi), torch.sin(phi)
        z, o = torch.zeros_like(phi), torch.ones_like(phi)
        return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1),
                            torch.stack([z, z, o], -1)], -2)


class SE3(_Rigid):
    """Rigid motions of space. Transitive with stabilizer SO(3): each point lifts to ``n_samples``
    elements (translation to the point, then a Haar-uniform rotation)."""

    name = "SE3"
    space_dim = 3
    lie_dim = 6
    matrix_size = 4
    stabilizer_dim = 3
    rotates = True
    translates = True

    def exp(self, a: Tensor) -> Tensor:
        w, v = a[..., :3], a[..., 3:]
        K = hat3(w)
        t2 = w.square().sum(-1)[..., None, None]
        V = _eye_like(a, 3) + one_minus_cos_over_sq(t2) * K + x_minus_sin_over_cube(t2) * (K @ K)
        return self._join(_so3_exp(w), (V @ v.unsqueeze(-1)).squeeze(-1))

    def log(self, g: Tensor) -> Tensor:
        R, t = self._blocks(g)
        w = _so3_log(R)
        K = hat3(w)
        t2 = w.square().sum(-1)[..., None, None]
        # V^-1 = I - K / 2 + (1 - (theta / 2) cot(theta / 2)) / theta^2 K^2, series coefficients shifted
        d = _even(t2, lambda x: (1 - (x / 2) / torch.tan(x / 2)) / x.square(), [-c for c in _HALF_COT[1:]])
        V_inv = _eye_like(g, 3) - K / 2 + d * (K @ K)
        return torch.cat([w, (V_inv @ t.unsqueeze(-1)).squeeze(-1)], -1)

    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        return self._join(None, points), points.new_zeros(*points.shape[:-1], 0)

    def sample_stabilizer(self, shape, generator, dtype, device) -> Tensor:
        R = _uniform_so3(shape, generator, dtype, device)
        return self._join(R, R.new_zeros(*shape, 3))


def _check_dim(dim: int, allowed: tuple[int, ...], name: str) -> int:
    if dim not in allowed:
        raise ValueError(f"{name} is available for dim in {allowed}, got dim={dim}")
    return int(dim)


GroupFactory = Callable[[int], LieGroup]

#: The group registry: name -> ``factory(dim) -> LieGroup``. Names are matched case-insensitively;
#: a family followed by a dimension (``"T2"``, ``"T(3)"``) asks the family's factory for that
#: dimension, and a name plus ``dim`` (``get_group("SO", dim=3)``) finds ``"SO3"``.
GROUPS: Registry[GroupFactory] = Registry("group")


def register_group(name: str, group: type[LieGroup] | GroupFactory, *, replace: bool = False) -> None:
    """Make a group available by ``name`` to :func:`get_group`, ``ModelConfig(group=name)``, checkpoints
    and the command line (``--group name``, with ``--plugin file.py`` holding this call).

    ``group`` is a :class:`LieGroup` subclass whose constructor takes no argument (its ``space_dim``
    fixed, like ``SO2``) or takes the dimension (like ``T``), or any callable ``factory(dim) -> LieGroup``.
    Registering the same group under the same name again does nothing.
    """
    if isinstance(group, type) and issubclass(group, LieGroup):
        takes_dim = any(p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
                        for p in inspect.signature(group).parameters.values())
        if not takes_dim:
            if name in GROUPS and getattr(GROUPS.get(name), "group_class", None) is group:
                return
            group = _fixed_dimension(name, group)
    elif not callable(group):
        raise TypeError(f"register_group needs a LieGroup subclass or a factory(dim), got {type(group).__name__}")
    GROUPS.register(name, group, replace=replace)


def _fixed_dimension(name: str, cls: type[LieGroup]) -> GroupFactory:
    def factory(dim: int | None = None) -> LieGroup:
        if dim is not None and dim != cls.space_dim:
            raise ValueError(f"group {name!r} acts in {cls.space_dim} dimensions, but dim={dim} was asked for")
        return cls()

    factory.group_class = cls
    return factory


for _name, _group in (("Trivial", Trivial), ("T", T), ("SO2", SO2), ("SE2", SE2), ("SO3", SO3), ("SE3", SE3)):
    register_group(_name, _group)


def group_names() -> list[str]:
    """Every name :func:`get_group` accepts without a ``dim`` for the built-in families, then the rest."""
    names = []
    for name in GROUPS.names():
        names += [f"{name}2", f"{name}3"] if name == "T" else [name]
    return names


def get_group(name: str, dim: int | None = None) -> LieGroup:
    """The group called ``name`` (case-insensitive) in :data:`GROUPS`: ``Trivial``, ``T2``, ``T3``,
    ``SO2``, ``SE2``, ``SO3``, ``SE3`` or one added with :func:`register_group`. ``Trivial`` and ``T``
    take their dimension from ``dim``, and ``SO`` / ``SE`` with ``dim`` mean ``SO2`` ... ``SE3``.

    Raises ``ValueError`` for an unknown name or a dimension that does not fit.
    """
    if not isinstance(name, str):
        raise ValueError(f"a group name must be a string, got {name!r}")
    key, digit = name.strip(), None
    if key not in GROUPS:
        match = re.fullmatch(r"(.+?)\(?([123])\)?", key)
        if match is not None and match.group(1) in GROUPS:  # "T2": the family T in 2 dimensions
            key, digit = match.group(1), int(match.group(2))
        elif match is not None and "".join(match.groups()) in GROUPS:  # "SO(2)" spelled with brackets
            key, digit = "".join(match.groups()), int(match.group(2))
        elif dim is not None and f"{key}{dim}" in GROUPS:
            key = f"{key}{dim}"
        else:
            raise ValueError(f"unknown group {name!r}; valid groups: {', '.join(group_names())} "
                             "(add your own with hamnet.groups.register_group)")
    if digit is not None and dim is not None and digit != dim:
        raise ValueError(f"group {name!r} acts in {digit} dimensions, but dim={dim} was asked for")
    dim = digit if digit is not None else dim
    factory = GROUPS.get(key)
    if dim is None and not hasattr(factory, "group_class"):
        raise ValueError(f"group {name!r} needs a dimension: pass dim=2 or dim=3 (or a name like {key}2)")
    return factory(dim) if dim is not None else factory()
