"""Matrix Lie groups that act on point clouds: the interface every group implements, and the trivial group.

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

The rigid groups (T(D), SO(2), SE(2), SO(3), SE(3)) are in :mod:`hamnet.rigid_groups`; the registry that
finds a group by name is :mod:`hamnet.groups`.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

__all__ = ["DEFAULT_LIFT_SEED", "LieGroup", "Trivial", "check_dim", "eye_like", "randn", "safe_norm"]

# Seed of the generator used for stabilizer samples when the caller passes none.
DEFAULT_LIFT_SEED = 0


def safe_norm(x: Tensor, dim: int = -1, keepdim: bool = False) -> Tensor:
    """Euclidean norm whose gradient is 0 (not NaN) at the zero vector."""
    sq = x.square().sum(dim, keepdim=keepdim)
    return torch.sqrt(torch.clamp(sq, min=torch.finfo(x.dtype).tiny))


def eye_like(x: Tensor, n: int) -> Tensor:
    return torch.eye(n, dtype=x.dtype, device=x.device)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
           device: torch.device | str | None) -> Tensor:
    """Standard normals drawn in float64 on the generator's device, then cast: the same draws for
    every dtype. ``generator=None`` means a fresh generator seeded with ``DEFAULT_LIFT_SEED``."""
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_LIFT_SEED)
    x = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    return x.to(dtype=dtype, device=device)


def check_dim(dim: int, allowed: tuple[int, ...], name: str) -> int:
    if dim not in allowed:
        raise ValueError(f"{name} is available for dim in {allowed}, got dim={dim}")
    return int(dim)


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
        return (g - eye_like(g, self.matrix_size)).flatten(-2)

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
        return safe_norm(self.relative(u, v))

    def pairwise_distance(self, u: Tensor, v: Tensor) -> Tensor:
        """All distances between two sets: ``u: (B, m, n, n)``, ``v: (B, M, n, n)`` -> ``(B, m, M)``."""
        return self.distance(u.unsqueeze(2), v.unsqueeze(1))

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
               scale: float = 1.0) -> Tensor:
        """Random elements ``(*shape, n, n)``; the default is ``exp`` of Gaussian algebra coordinates
        with standard deviation ``scale``. Rigid groups draw rotations uniformly (Haar measure)."""
        return self.exp(scale * randn((*shape, self.lie_dim), generator, dtype, device))

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
        self.space_dim = check_dim(dim, (1, 2, 3), "Trivial")
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
