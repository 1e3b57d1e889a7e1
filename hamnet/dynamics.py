"""Hamiltonian vector fields ``dz/dt = J grad H`` for torchdiffeq.

Note to the reader: a state ``z`` has shape ``(B, 2, N, D)`` (``z[:, 0]`` positions ``q``, ``z[:, 1]``
momenta ``p``) and ``J = [[0, I], [-I, 0]]``, so ``dq/dt = dH/dp`` and ``dp/dt = -dH/dq``.

Everything that flows (a true system from ``systems`` or a learned model from ``hamnet.models``)
follows one duck-typed protocol, so truth and models are interchangeable:

- ``hamiltonian(z, params) -> (B,)`` and ``separable: bool``;
- when ``separable`` (``H = T(p) + V(q)`` with ``T = sum |p|^2 / 2m``), also
  ``velocity(p, params) -> (B, N, D)`` (``p / m``, no autograd) and ``forces(q, params) -> (B, N, D)``
  (``-dV/dq``), which lets splitting integrators (leapfrog, Yoshida) update ``q`` and ``p`` in turn;
- a model that predicts the dynamics directly (the FC-NODE baseline) has no ``hamiltonian`` but
  ``vector_field(z, params) -> (B, 2, N, D)``, and ``separable = False``.

Graphs: a field keeps the autograd graph of a gradient (so that a training loss can be
differentiated through the force, ``create_graph=True``) exactly when gradients are enabled and
something it depends on requires grad: the state, a parameter tensor or a model weight. Under
``torch.no_grad()`` it still computes ``grad H`` (autograd is switched on locally for that) but
returns detached tensors, so long rollouts keep no graphs.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from .systems import autograd_gradient

Params = dict[str, Tensor]

__all__ = ["HamiltonianField", "CompiledDynamics", "keeps_graph", "potential_force", "hamiltonian_gradient"]


def _module_parameters(obj: Any) -> Iterable[Tensor]:
    return obj.parameters() if isinstance(obj, nn.Module) else ()


def keeps_graph(*dependencies: Any) -> bool:
    """Whether a gradient computed now must keep its graph for a later backward pass.

    True when gradients are enabled and any of ``dependencies`` requires grad: tensors are checked
    directly, dicts by their tensor values and ``nn.Module`` objects by their parameters.
    """
    if not torch.is_grad_enabled():
        return False
    for item in dependencies:
        if isinstance(item, Tensor):
            tensors: Iterable[Tensor] = (item,)
        elif isinstance(item, dict):
            tensors = (v for v in item.values() if isinstance(v, Tensor))
        else:
            tensors = _module_parameters(item)
        if any(t.requires_grad for t in tensors):
            return True
    return False


def potential_force(potential, q: Tensor, params: Params, *, owner: Any = None) -> Tensor:
    """``-dV/dq`` by autograd for ``potential(q, params) -> (B,)``; ``q: (B, N, D)`` -> ``(B, N, D)``.

    Unlike ``systems.gradient_force``, the graph is also kept when only the weights of ``owner``
    (an ``nn.Module``, typically the model that defines ``potential``) or a parameter tensor
    require grad: training differentiates the loss through the force with respect to the weights
    even though the data state ``q`` does not require grad.
    """
    return -autograd_gradient(potential, q, params, keeps_graph(q, params, owner))


def hamiltonian_gradient(hamiltonian, z: Tensor, params: Params, *, owner: Any = None) -> Tensor:
    """``grad_z H`` by autograd; ``z: (B, 2, N, D)`` -> ``(B, 2, N, D)``. Graph kept as in :func:`potential_force`."""
    return autograd_gradient(hamiltonian, z, params, keeps_graph(z, params, owner))


class HamiltonianField(nn.Module):
    """The vector field ``dz/dt = J grad H`` of a Hamiltonian object, as a torchdiffeq ``func(t, z)``.

    ``model`` is any object following the protocol in this module's docstring (a system from
    ``systems`` or a model from ``hamnet.models``); ``params`` are its parameters, tensors with a
    leading batch axis ``B`` matching the state. A model that is an ``nn.Module`` is registered as
    a submodule, so ``odeint_adjoint`` finds its weights. The field is autonomous: ``t`` is ignored.

    Splitting integrators call :meth:`velocity` and :meth:`force` separately; they exist only
    for a separable ``model``.
    """

    def __init__(self, model: Any, params: Params) -> None:
        super().__init__()
        has_hamiltonian = callable(getattr(model, "hamiltonian", None))
        has_vector_field = callable(getattr(model, "vector_field", None))
        if not (has_hamiltonian or has_vector_field):
            raise TypeError(
                f"{type(model).__name__} has neither hamiltonian(z, params) nor vector_field(z, params); "
                "see hamnet.dynamics for the protocol a system or model follows"
            )
        self.separable = bool(getattr(model, "separable", False)) and has_hamiltonian
        if self.separable and not (callable(getattr(model, "velocity", None)) and callable(getattr(model, "forces", None))):
            raise TypeError(f"{type(model).__name__} says separable = True but lacks velocity(p, params) or forces(q, params)")
        if isinstance(model, nn.Module):
            self.model = model
        else:
            # a plain object (a true system) holds no weights; keep it outside the module tree
            object.__setattr__(self, "model", model)
        self.params = params
        self._direct = has_vector_field and not has_hamiltonian

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``dz/dt``; ``z: (B, 2, N, D)`` -> ``(B, 2, N, D)``. ``t`` is ignored (autonomous)."""
        if self._direct:
            return self.model.vector_field(z, self.params)
        if self.separable:
            return torch.stack([self.velocity(z[:, 1]), self.force(z[:, 0])], dim=1)
        grad = hamiltonian_gradient(self.model.hamiltonian, z, self.params, owner=self.model)
        return torch.stack([grad[:, 1], -grad[:, 0]], dim=1)

    def velocity(self, p: Tensor) -> Tensor:
        """``dq/dt = dH/dp = p / m`` of a separable model; ``p: (B, N, D)`` -> ``(B, N, D)``."""
        return self.model.velocity(p, self.params)

    def force(self, q: Tensor) -> Tensor:
        """``dp/dt = -dV/dq`` of a separable model; ``q: (B, N, D)`` -> ``(B, N, D)``."""
        return self.model.forces(q, self.params)

    def hamiltonian(self, z: Tensor) -> Tensor:
        """``H(z)``; ``z: (B, 2, N, D)`` -> ``(B,)``."""
        return self.model.hamiltonian(z, self.params)


class CompiledDynamics:
    """``model``'s dynamics with its costly call compiled by ``torch.compile``, for long rollouts.

    Follows the protocol above: a separable model keeps ``velocity`` and ``hamiltonian`` and gets its
    ``forces`` compiled (forces by ``torch.func.grad`` there); any other model becomes a direct model
    (no ``hamiltonian``) whose compiled ``vector_field`` is its field ``J grad H`` (or its own
    ``vector_field``). The states are those of the eager model to round-off, not bitwise. The first call
    of a shape compiles (tens of seconds on a CPU); a second batch size makes the compiled code
    shape-generic once. The model itself is held, not copied: its weights are read at every call. Trap:
    compiled code is kept per function and guarded on the model (its kernel bound among them), so each
    further model compiles again, and past torch's recompile limit (8) a process runs the forces eagerly
    (same numbers, a log warning).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.separable = bool(getattr(model, "separable", False)) and callable(getattr(model, "hamiltonian", None))
        # the one compiled call: forces(q, params) of a separable model, else vector_field(z, params)
        compiled = torch.compile(model.forces if self.separable else functools.partial(_vector_field, model))
        setattr(self, "forces" if self.separable else "vector_field", compiled)

    def __getattr__(self, name: str) -> Any:
        # the rest of the protocol is the model's own; a model made direct shows no hamiltonian
        if name in ("velocity", "trained_substeps", "config") or (name == "hamiltonian" and self.separable):
            return getattr(self.model, name)
        raise AttributeError(name)


def _vector_field(model: Any, z: Tensor, params: Params) -> Tensor:
    return HamiltonianField(model, params)(None, z)
