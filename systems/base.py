"""The interface every physical system implements.

Note to the reader: a phase-space state ``z`` has shape ``(B, 2, N, D)``; ``z[:, 0]`` holds the
positions ``q`` and ``z[:, 1]`` the momenta ``p`` of ``N`` particles in ``D`` dimensions for ``B``
independent systems. System parameters are a dict of tensors with a leading batch axis, for example
``{"m": (B, N), "k": (B, N)}``; every system has masses ``m``.

All built-in systems are separable, ``H(q, p) = T(p) + V(q)`` with ``T = sum_i |p_i|^2 / (2 m_i)``,
so a system only has to say what its potential ``V`` is (and, for speed, its forces ``-dV/dq``).
This module depends on torch alone, never on ``hamnet``.
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar, Mapping

import torch
from torch import Tensor

Params = dict[str, Tensor]


class HamiltonianSystem(abc.ABC):
    """A separable Hamiltonian system of ``N`` particles in ``D`` dimensions.

    Subclasses set ``name``, ``feature_keys`` (the parameters a learned model sees per particle)
    and ``symmetry`` (the largest group from ``hamnet.groups`` that leaves ``H`` invariant), and
    implement ``sample_params``, ``sample_state`` and ``potential``. Optionally ``timescale(params)``,
    the shortest dynamical time per system ``(B,)``, by which the ground truth sizes its sub-steps.
    """

    name: ClassVar[str]
    feature_keys: ClassVar[tuple[str, ...]] = ("m",)
    symmetry: ClassVar[str] = "Trivial"
    default_n_particles: ClassVar[int] = 6
    #: every built-in system has H = T(p) + V(q) with T = sum |p|^2 / 2m
    separable: ClassVar[bool] = True
    #: True when the forces are linear in ``q`` and act on each spatial axis alike
    #: (``V = sum_axes q^T S q / 2``); integrators may then precompute their step as a matrix
    linear: ClassVar[bool] = False
    #: constructor settings that lengthen ``timescale(params)`` when made larger (such as a
    #: softening length); a refusal to take too many sub-steps suggests them
    timescale_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_particles: int | None = None, dim: int = 2) -> None:
        n_particles = self.default_n_particles if n_particles is None else n_particles
        if int(n_particles) != n_particles or n_particles < 2:
            raise ValueError(f"n_particles must be an integer >= 2 (interactions need a pair), got {n_particles}")
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        self.n_particles = int(n_particles)
        self.dim = int(dim)

    # -- what a subclass provides -------------------------------------------------------------
    @abc.abstractmethod
    def sample_params(self, n_systems: int, generator: torch.Generator) -> Params:
        """Draw parameters for ``n_systems`` systems: dict of float64 tensors ``(B, N)`` (or ``(B,)``)."""

    @abc.abstractmethod
    def sample_state(self, params: Params, generator: torch.Generator) -> Tensor:
        """Draw initial states ``z: (B, 2, N, D)`` in float64 with zero total momentum per system."""

    @abc.abstractmethod
    def potential(self, q: Tensor, params: Params) -> Tensor:
        """Potential energy ``V(q)``; ``q: (B, N, D)`` -> ``(B,)``. Differentiable."""

    def unphysical(self, params: Params) -> list[str]:
        """What is unphysical in ``params`` for this system, one line each (empty if nothing is): masses
        that are not positive here; a subclass adds its own parameters' conditions."""
        m = params.get("m")
        if m is not None and bool((m <= 0).any()):
            count = int((m <= 0).reshape(m.shape[0], -1).any(-1).sum())
            return [f"masses 'm' must be positive; {count} of {m.shape[0]} systems have one that is not"]
        return []

    def settings(self) -> dict:
        """The constructor settings, JSON-serialisable, so that ``type(self)(**settings())`` rebuilds it."""
        return {"n_particles": self.n_particles, "dim": self.dim}

    def required_params(self) -> tuple[str, ...]:
        """The names of the parameters this system needs; by default the keys of one sampled system
        (cheap). Override when sampling is expensive or some parameters are optional."""
        return tuple(self.sample_params(1, torch.Generator().manual_seed(0)))

    # -- derived ------------------------------------------------------------------------------
    def check_params(self, params: Mapping[str, object], source: str) -> None:
        """Raise a one-line ``ValueError`` naming every parameter of :meth:`required_params` that
        ``params`` lacks; ``source`` says where ``params`` came from (a file name) in the message."""
        missing = [key for key in self.required_params() if key not in params]
        if missing:
            noun = "parameter" if len(missing) == 1 else "parameters"
            name = getattr(self, "name", None) or type(self).__name__
            raise ValueError(f"{source} lacks the {noun} {', '.join(map(repr, missing))} that {name} needs")

    def kinetic(self, p: Tensor, params: Params) -> Tensor:
        """Kinetic energy ``sum_i |p_i|^2 / (2 m_i)``; ``p: (B, N, D)`` -> ``(B,)``."""
        return kinetic_energy(p, params["m"])

    def hamiltonian(self, z: Tensor, params: Params) -> Tensor:
        """Total energy ``H(z)``; ``z: (B, 2, N, D)`` -> ``(B,)``. Differentiable torch."""
        return self.kinetic(z[:, 1], params) + self.potential(z[:, 0], params)

    def velocity(self, p: Tensor, params: Params) -> Tensor:
        """``dq/dt = dH/dp = p / m``; ``p: (B, N, D)`` -> ``(B, N, D)``."""
        return velocity(p, params["m"])

    def forces(self, q: Tensor, params: Params) -> Tensor:
        """``dp/dt = -dV/dq``; ``q: (B, N, D)`` -> ``(B, N, D)``. Autograd unless overridden."""
        return gradient_force(self.potential, q, params)

    def velocity_function(self, params: Params) -> Callable[[Tensor], Tensor]:
        """``p -> dq/dt`` with per-system constants computed once, for integrators' inner loops."""
        inverse_mass = params["m"].reciprocal().unsqueeze(-1)
        if type(self).velocity is HamiltonianSystem.velocity:
            return lambda p: p * inverse_mass
        return lambda p: self.velocity(p, params)

    def force_function(self, params: Params) -> Callable[[Tensor], Tensor]:
        """``q -> dp/dt`` with per-system constants computed once; override to precompute more."""
        return lambda q: self.forces(q, params)

    def features(self, params: Params) -> Tensor:
        """Per-particle features for learned models, ``(B, N, F)``: the ``feature_keys`` stacked."""
        return torch.stack([params[key] for key in self.feature_keys], dim=-1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


def kinetic_energy(p: Tensor, m: Tensor) -> Tensor:
    """``sum_i |p_i|^2 / (2 m_i)`` per system; ``p: (B, N, D)``, masses ``m: (B, N)`` -> ``(B,)``, in ``p``'s dtype.
    The one definition that true systems and learned models with the known kinetic energy share."""
    return 0.5 * (p.square().sum(-1) / m.to(p.dtype)).sum(-1)


def velocity(p: Tensor, m: Tensor) -> Tensor:
    """``dq/dt = p / m``; ``p: (B, N, D)``, ``m: (B, N)`` -> ``(B, N, D)``, in ``p``'s dtype."""
    return p / m.to(p.dtype).unsqueeze(-1)


def remove_total_momentum(p: Tensor) -> Tensor:
    """Subtract each system's mean momentum so that ``sum_i p_i = 0``; ``p: (B, N, D)``."""
    return p - p.mean(dim=1, keepdim=True)


def autograd_gradient(scalar_fn, x: Tensor, params: Params, keep_graph: bool | None = None) -> Tensor:
    """``d sum(scalar_fn(x, params)) / dx`` by autograd, for any ``scalar_fn(x, params) -> (B,)``.

    ``keep_graph``: keep the graph so the gradient can itself be differentiated (as training does);
    by default exactly when gradients are enabled and ``x`` already requires grad. Without a graph,
    a detached copy of ``x`` is the leaf and the result is detached. Inside ``torch.compile`` the
    gradient is ``torch.func.grad``'s instead (the same function, in a form the compiler traces; an
    outer backward pass differentiates through it).
    """
    if torch.compiler.is_compiling():
        return torch.func.grad(lambda y: scalar_fn(y, params).sum())(x)
    if keep_graph is None:
        keep_graph = torch.is_grad_enabled() and x.requires_grad
    with torch.enable_grad():
        if not (keep_graph and x.requires_grad):
            x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(scalar_fn(x, params).sum(), x, create_graph=keep_graph)
    return grad


def gradient_force(potential, q: Tensor, params: Params) -> Tensor:
    """``-dV/dq`` by autograd for any ``potential(q, params) -> (B,)``; ``q: (B, N, D)``; graph kept
    as in :func:`autograd_gradient`."""
    return -autograd_gradient(potential, q, params)
