"""The rigid motions and their subgroups as matrix Lie groups: T(D), SO(2), SE(2), SO(3), SE(3).

Note to the reader: the conventions (elements, algebra coordinates, ``chart``) are those of
:mod:`hamnet.lie_group`; algebra coordinates are ordered rotation first, then translation.

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

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .lie_group import DEFAULT_LIFT_SEED, LieGroup, check_dim, eye_like, randn

__all__ = ["SE2", "SE3", "SO2", "SO3", "T"]


# Below this value of theta^2 the closed forms are replaced by their Taylor series (through theta^12,
# truncation error < 1e-16 there), far enough from 0 that the closed forms' cancellation stays small.
SERIES_THRESHOLD = 0.25
# SO(3) log: series in s^2 = sin(theta)^2 below this (arcsin(s)/s converges slowly, so it is smaller).
_ARCSIN_THRESHOLD = 1e-2
# SO(3) log: below this cos(theta) the axis is read from the symmetric part of R (theta > 2 pi / 3).
_NEAR_PI_COS = -0.5


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


def _rot2(c: Tensor, s: Tensor) -> Tensor:
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _uniform_angle(shape, generator, dtype, device) -> Tensor:
    """Angles uniform on the circle, as ``atan2`` of a Gaussian pair (exactly uniform)."""
    xy = randn((*shape, 2), generator, dtype, device)
    return torch.atan2(xy[..., 1], xy[..., 0])


def _uniform_so3(shape, generator, dtype, device) -> Tensor:
    """Haar-uniform rotations ``(*shape, 3, 3)`` from normalised Gaussian quaternions."""
    q = randn((*shape, 4), generator, dtype, device)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, -2)


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
            R = eye_like(t, D).expand(*t.shape[:-1], D, D)
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
        identity = eye_like(relative, n)[0] if n == 2 else eye_like(relative, n).flatten()
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
            return R[..., :, 0] - eye_like(R, 2)[0]
        return (R - eye_like(R, 3)).flatten(-2)

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
                parts.append((Rt @ Rv[..., :, :1]).squeeze(-1) - eye_like(Rv, 2)[0])
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
        t = scale * randn((*shape, self.space_dim), generator, dtype, device) if self.translates else None
        return self._join(R, t)


class T(_Rigid):
    """Translations of ``R^D`` (D = 2 or 3). Free and transitive: one lift per point, no orbit identifier."""

    rotates = False
    translates = True

    def __init__(self, dim: int) -> None:
        self.space_dim = self.lie_dim = check_dim(dim, (2, 3), "T")
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
        direction, r = _unit(points, eye_like(points, 2)[0])
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
    return eye_like(w, 3) + sinc(t2) * K + one_minus_cos_over_sq(t2) * (K @ K)


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
    sym = (R_pi + R_pi.transpose(-1, -2)) / 2 - c_pi[..., None, None] * eye_like(R, 3)
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
        e3 = eye_like(points, 3)[2]
        n, r = _unit(points, e3)
        # Rodrigues form of the rotation e3 -> n: I + K + K^2 / (1 + c), K = hat(e3 x n), c = n3
        ok = n[..., 2:] > -1 + torch.finfo(points.dtype).eps
        n = torch.where(ok, n, e3)
        k = torch.stack([-n[..., 1], n[..., 0], torch.zeros_like(n[..., 0])], -1)
        K = hat3(k)
        R = eye_like(points, 3) + K + (K @ K) / (1 + n[..., 2])[..., None, None]
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
        V = eye_like(a, 3) + one_minus_cos_over_sq(t2) * K + x_minus_sin_over_cube(t2) * (K @ K)
        return self._join(_so3_exp(w), (V @ v.unsqueeze(-1)).squeeze(-1))

    def log(self, g: Tensor) -> Tensor:
        R, t = self._blocks(g)
        w = _so3_log(R)
        K = hat3(w)
        t2 = w.square().sum(-1)[..., None, None]
        # V^-1 = I - K / 2 + (1 - (theta / 2) cot(theta / 2)) / theta^2 K^2, series coefficients shifted
        d = _even(t2, lambda x: (1 - (x / 2) / torch.tan(x / 2)) / x.square(), [-c for c in _HALF_COT[1:]])
        V_inv = eye_like(g, 3) - K / 2 + d * (K @ K)
        return torch.cat([w, (V_inv @ t.unsqueeze(-1)).squeeze(-1)], -1)

    def section(self, points: Tensor) -> tuple[Tensor, Tensor]:
        return self._join(None, points), points.new_zeros(*points.shape[:-1], 0)

    def sample_stabilizer(self, shape, generator, dtype, device) -> Tensor:
        R = _uniform_so3(shape, generator, dtype, device)
        return self._join(R, R.new_zeros(*shape, 3))
