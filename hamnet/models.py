"""Learned models of particle dynamics: the paper's HLieConv and its baselines, EGNN among them.

Note to the reader: a state is ``z: (B, 2, N, D)`` (``z[:, 0]`` positions ``q``, ``z[:, 1]`` momenta
``p``) and ``params`` a dict of tensors with a leading batch axis (``{"m": (B, N), "k": (B, N)}``).
A model sees the parameters named by its ``feature_keys``, stacked into per-particle features
``(B, N, F)``. Every model follows the protocol of :mod:`hamnet.dynamics`, like the true systems:

============ ============================================================= ========== ===========
name         what it predicts                                              separable  any N
============ ============================================================= ========== ===========
hlieconv     ``H = sum |p|^2/2m + V(q - centroid, features)``, V a LieResNet yes        yes
fc-hnn       ``H`` from an MLP on flattened ``q, p, features``               no         no
hogn         ``H`` from a graph network over all particle pairs              no         yes
egnn-h       ``H = sum |p|^2/2m + V(q, features)``, V an invariant EGNN      yes        yes
fc-node      ``dz/dt`` from an MLP on flattened ``q, p, features``           no         no
egnn-node    ``dz/dt``: ``p/m`` and an E(n)-equivariant EGNN force            no         yes
============ ============================================================= ========== ===========

HLieConv and EGNN-H are separable (their kinetic energy is the known one), so they can be rolled
out with leapfrog / yoshida4; every Hamiltonian model works with implicit_midpoint / gauss4 / rk4,
and FC-NODE and EGNN-NODE (not Hamiltonian) with the explicit torchdiffeq methods.

Configuration is one frozen :class:`ModelConfig`; ``build_model(config)`` rebuilds a model, so a
checkpoint stores ``dataclasses.asdict(model.config)`` and the ``state_dict``. Activations are
Swish (SiLU): Hamiltonian training differentiates the network twice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .systems.base import kinetic_energy, velocity

from .dynamics import potential_force
from .groups import get_group
from .lieconv import LieResNet, centre, check_kernel_bound, resolve_lift
from .registry import Registry

Params = dict[str, Tensor]

__all__ = ["ModelConfig", "ParticleModel", "SeparableModel", "HLieConv", "FCNODE", "FCHNN", "HOGN", "EGNNH",
           "EGNNNODE", "EGNNLayer", "EGNN", "MODELS", "register_model", "build_model", "check_compatible",
           "init_parameters", "parameter_count"]

#: seed of the generator that initialises weights when ``build_model`` is given none
DEFAULT_INIT_SEED = 0
# kernel-input pairs per forward pass while measuring their extent (a few tens of MiB)
_EXTENT_PAIRS = 1 << 21


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (with ``build_model``), JSON- and ``torch.save``-friendly.

    ``name``: a name in :data:`MODELS` (the built-ins or one added with :func:`register_model`). ``n_particles`` and ``dim``: the systems the model is for (the
    fully connected models are tied to ``n_particles``; the others accept any ``N``).
    ``feature_keys``: the parameters stacked into per-particle features. ``width`` and ``depth``:
    hidden width and number of hidden layers (LieConv residual blocks for HLieConv, message
    passing MLP layers for HOGN, EGNN layers for EGNN-H and EGNN-NODE). HLieConv only: ``group``
    (a name for ``hamnet.groups.get_group``; default: the translations of ``dim``, ``"T2"`` or ``"T3"``),
    ``neighbours`` (k nearest in group distance; None for all particles), ``lift`` (``"exact"``: one
    lift per point and kernel inputs invariant under the stabilizer, so the potential is invariant to
    round-off; ``"monte-carlo"``: the paper's sampled lift, invariant in distribution; None: exact where
    the group has it, which every built-in group does), ``lift_samples`` (the Monte Carlo lift's sample
    count), ``kernel_width`` and
    ``kernel_channels`` (the LieConv kernel MLP), ``centre`` (subtract the centroid before the
    network, which makes V translation invariant, as in the paper) and ``kernel_bound`` (None, or ``c``:
    kernel inputs pass through ``c tanh(x / c)``, so V is bounded however far the particles go and a
    rollout's momenta stay bounded by its energy; ``hamnet.training`` sets it from the training data).
    """

    name: str = "hlieconv"
    n_particles: int = 6
    dim: int = 2
    feature_keys: tuple[str, ...] = ("m", "k")
    width: int = 128
    depth: int = 4
    group: str | None = None
    neighbours: int | None = None
    lift_samples: int | None = None
    lift: str | None = None
    kernel_width: int = 32
    kernel_channels: int = 16
    centre: bool = True
    kernel_bound: float | None = None

    def __post_init__(self) -> None:
        # a config read back from JSON carries a list
        object.__setattr__(self, "feature_keys", tuple(self.feature_keys))
        if self.group is None:
            object.__setattr__(self, "group", f"T{self.dim}")
        model_class = MODELS.get(self.name)  # unknown names fail here, with the known ones listed
        if self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim}")
        if self.n_particles < 1 or self.width < 1 or self.depth < 1:
            raise ValueError(
                f"n_particles, width and depth must be positive, got {self.n_particles}, {self.width}, {self.depth}"
            )
        if not self.feature_keys or "m" not in self.feature_keys:
            raise ValueError(f"feature_keys must include the masses 'm', got {self.feature_keys}")
        if self.kernel_bound is not None and not model_class.uses_group:
            raise ValueError(f"kernel_bound applies to hlieconv (a LieConv kernel), not to {self.name}; leave it None")
        check_kernel_bound(self.kernel_bound)
        if model_class.uses_group:  # an unknown group, a wrong dimension or an impossible lift fails before any build
            resolve_lift(get_group(self.group, self.dim), self.lift, self.lift_samples)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Rebuild from ``dataclasses.asdict(config)`` (e.g. read from a checkpoint); unknown keys are an error.

        A config saved before the exact lift existed has no ``lift``; its network was built with the
        Monte Carlo lift wherever the group has a stabilizer, so that is what it gets back."""
        if isinstance(values, Mapping) and "lift" not in values and values.get("name") == "hlieconv":
            try:
                stabilized = get_group(values.get("group") or f"T{values.get('dim', 2)}", values.get("dim")).stabilizer_dim
            except (ValueError, TypeError):
                stabilized = 0  # the constructor reports the bad group
            values = {**values, "lift": "monte-carlo" if stabilized else None}
        return config_from_dict(cls, values, "model config")


def config_from_dict(cls, values: Mapping[str, Any], what: str):
    """The frozen dataclass ``cls`` built from a dict (e.g. read back from JSON or a checkpoint).

    Refuses, with a one-line ``ValueError``, keys it does not know (a config written by another
    version or for another model) and values that are not of the field's annotated type: ``int``,
    ``float`` (an int is taken), ``str``, ``bool``, ``X | None``, ``tuple[X, ...]`` (a JSON list is
    taken) and nested dataclasses (a dict is built into one, as ``TrainConfig.model``).
    """
    import types  # here rather than at the top: only this function reads annotations
    import typing

    if not isinstance(values, Mapping):
        raise ValueError(f"{what} must be a dict of settings, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}")

    def describe(hint) -> str:
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            return " or ".join(describe(option) for option in typing.get_args(hint))
        if typing.get_origin(hint) is tuple:
            return f"a list of {describe(typing.get_args(hint)[0])}"
        if dataclasses.is_dataclass(hint):
            return f"a dict of {hint.__name__} settings"
        return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))

    def converted(name: str, value: Any, hint: Any) -> Any:
        """``value`` as the annotated type; raises TypeError if it is not one."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            for option in (arg for arg in args if arg is not type(None)):
                try:
                    return converted(name, value, option)
                except TypeError:
                    continue
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            if isinstance(value, (list, tuple)):
                return tuple(converted(name, item, args[0]) for item in value)
        elif dataclasses.is_dataclass(hint):
            if isinstance(value, hint):
                return value
            if isinstance(value, Mapping):
                return config_from_dict(hint, value, f"{name} config")
        elif hint in (int, float, str, bool):
            if isinstance(value, bool) != (hint is bool):  # bool is an int to Python, not to a config
                raise TypeError
            if isinstance(value, hint) or (hint is float and isinstance(value, int)):
                return hint(value)
        else:
            return value  # an annotation this check does not know: left to the class
        raise TypeError

    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = converted(name, value, hints[name])
        except TypeError:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ValueError(f"{what} field {name!r} must be {describe(hints[name])}, got {shown}") from None
    return cls(**checked)


# -- shared pieces ------------------------------------------------------------------------------

def _mlp(in_features: int, width: int, depth: int, out_features: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` with Swish, then a linear output."""
    layers: list[nn.Module] = []
    size = in_features
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.SiLU()]
        size = width
    layers.append(nn.Linear(size, out_features))
    return nn.Sequential(*layers)


def _others(n: int, device: torch.device) -> Tensor:
    """``(N, N - 1)``: row ``i`` lists every ``j != i`` in order. Arithmetic, not a boolean mask, so
    building it never waits on the device."""
    k = torch.arange(n - 1, device=device)
    return k + (k >= torch.arange(n, device=device).unsqueeze(1))


def _off_diagonal(pairwise: Tensor) -> Tensor:
    """The entries ``j != i`` of every row ``i``, in order: ``(B, N, N, C)`` -> ``(B, N, N - 1, C)``."""
    n = pairwise.shape[1]
    return pairwise[:, torch.arange(n, device=pairwise.device).unsqueeze(1), _others(n, pairwise.device)]


def _pairs_of_others(x: Tensor, *edges: Tensor) -> Tensor:
    """The inputs ``[x_i, x_j, edges_ij]`` of every ordered pair of two different particles (self-pairs
    are never computed: a particle sends itself no message, and at ``N = 6`` they would be a sixth of the
    edge network's work); ``x: (B, N, F)`` and each of ``edges: (B, N, N, E)`` ->
    ``(B, N, N - 1, 2 F + sum E)``, ``j`` running over the others of ``i`` in order. Sum over dim 2 for
    ``sum_{j != i}``."""
    n = x.shape[1]
    x_j = x[:, _others(n, x.device)]
    return torch.cat([x.unsqueeze(2).expand(-1, -1, n - 1, -1), x_j, *map(_off_diagonal, edges)], dim=-1)


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


class ParticleModel(nn.Module):
    """Features, kinetic energy and input checks shared by every model; subclass it to add one.

    A subclass takes a :class:`ModelConfig`, implements ``hamiltonian(z, params)`` (or, for a model
    that is not Hamiltonian, ``vector_field(z, params)``; see :mod:`hamnet.dynamics`) and declares:
    ``separable`` (``H = sum |p|^2/2m + V(q)`` with ``forces(q, params)``, so splitting integrators
    apply), ``fixed_particles`` (the network is tied to ``config.n_particles``) and ``uses_group``
    (``config.group`` means something to it). Register it with :func:`register_model`.
    """

    separable = False
    fixed_particles = False
    uses_group = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def n_features(self) -> int:
        return len(self.config.feature_keys)

    def features(self, params: Params, like: Tensor) -> Tensor:
        """Per-particle features ``(B, N, F)``: ``params[key]`` for each feature key, in ``like``'s dtype.

        A per-system parameter ``(B,)`` is repeated over the ``N`` particles of ``like: (B, N, D)``.
        """
        missing = [key for key in self.config.feature_keys if key not in params]
        if missing:
            raise ValueError(f"params lack {missing} (the model's feature_keys are {self.config.feature_keys})")
        n = like.shape[1]
        columns = [params[key] if params[key].dim() == 2 else params[key].unsqueeze(-1).expand(-1, n)
                   for key in self.config.feature_keys]
        return torch.stack(columns, dim=-1).to(like.dtype)

    def kinetic(self, p: Tensor, params: Params) -> Tensor:
        """Known kinetic energy ``sum_i |p_i|^2 / (2 m_i)``; ``p: (B, N, D)`` -> ``(B,)``."""
        return kinetic_energy(p, params["m"])

    def velocity(self, p: Tensor, params: Params) -> Tensor:
        """``dq/dt = p / m``; ``p: (B, N, D)`` -> ``(B, N, D)``."""
        return velocity(p, params["m"])

    @classmethod
    def label(cls, config: Mapping[str, Any]) -> str:
        """A short name for a model config (a dict as stored in checkpoints), e.g. ``hlieconv SO2``."""
        return f"{config['name']} {config['group']}" if cls.uses_group else str(config["name"])

    def _check_state(self, z: Tensor, *, fixed_n: bool) -> None:
        if z.dim() != 4 or z.shape[1] != 2 or z.shape[3] != self.config.dim:
            raise ValueError(f"expected a state z: (B, 2, N, {self.config.dim}), got shape {tuple(z.shape)}")
        if fixed_n and z.shape[2] != self.config.n_particles:
            raise ValueError(
                f"{type(self).__name__} is fully connected over {self.config.n_particles} particles; "
                f"got a state with N = {z.shape[2]}"
            )

    def _flat_inputs(self, z: Tensor, params: Params) -> Tensor:
        """``[q, p, features]`` flattened per system: ``(B, N * (2 D + F))``."""
        self._check_state(z, fixed_n=True)
        q, p = z[:, 0], z[:, 1]
        return torch.cat([q, p, self.features(params, q)], dim=-1).flatten(1)

    def _flat_size(self) -> int:
        return self.config.n_particles * (2 * self.config.dim + self.n_features)


class SeparableModel(ParticleModel):
    """``H = sum_i |p_i|^2 / 2 m_i + V_theta(q)``: the known kinetic energy and a learned potential.

    A subclass implements ``potential(q, params) -> (B,)``; the Hamiltonian, the forces ``-dV/dq`` (by
    autograd, graph kept for training) and ``velocity`` follow, so leapfrog and yoshida4 apply.
    """

    separable = True

    def potential(self, q: Tensor, params: Params) -> Tensor:
        """``V_theta(q)``; ``q: (B, N, D)`` -> ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement potential(q, params)")

    def hamiltonian(self, z: Tensor, params: Params) -> Tensor:
        """``H(z)``; ``z: (B, 2, N, D)`` -> ``(B,)``."""
        self._check_state(z, fixed_n=self.fixed_particles)
        return self.kinetic(z[:, 1], params) + self.potential(z[:, 0], params)

    def forces(self, q: Tensor, params: Params) -> Tensor:
        """``-dV/dq`` by autograd (graph kept for training); ``q: (B, N, D)`` -> ``(B, N, D)``."""
        return potential_force(self.potential, q, params, owner=self)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        return self.hamiltonian(z, params)


# -- the models ---------------------------------------------------------------------------------

class HLieConv(SeparableModel):
    """``H = sum_i |p_i|^2 / 2 m_i + V_theta(q - centroid, features)`` with ``V`` a LieResNet.

    Separable, with the true kinetic energy (as in the paper), so leapfrog and yoshida4 apply.
    ``V`` is invariant to the configured group; with ``centre`` also to translations. By Noether's
    theorem and a symplectic integrator, the rotation groups (SO(2), SO(3), SE(2), SE(3), with the
    default exact lift) with centring conserve linear and angular momentum to round-off; T(D)
    conserves linear momentum only; a Monte Carlo lift conserves them only approximately.
    """

    uses_group = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.group = get_group(config.group, config.dim)
        self.potential_net = LieResNet(
            self.group,
            self.n_features,
            width=config.width,
            depth=config.depth,
            out_features=1,
            neighbours=config.neighbours,
            lift_samples=config.lift_samples,
            lift=config.lift,
            kernel_width=config.kernel_width,
            kernel_channels=config.kernel_channels,
            kernel_bound=config.kernel_bound,
        )

    def potential(self, q: Tensor, params: Params) -> Tensor:
        """``V_theta(q)``; ``q: (B, N, D)`` -> ``(B,)``. NaN for a system whose ``q`` is not finite, and
        only for that one: the network refuses such input, so it sees the finite systems alone, and a
        diverging system in a batch leaves the others' energies and forces as they would be without it
        (its caller reports the divergence)."""
        finite = torch.isfinite(q).flatten(1).all(-1)  # (B,)
        if bool(finite.all()):
            return self._finite_potential(q, params)
        # NaN for the non-finite systems, on q's graph (a force can still be asked for) with a zero
        # derivative, so no NaN flows back into the finite systems' forces
        values = torch.where(finite, q.sum((1, 2)) * 0, math.nan)
        if bool(finite.any()):
            kept = finite.nonzero().squeeze(-1)
            subset = self._finite_potential(q[kept], {k: v[kept] for k, v in params.items()})
            values = values.index_put((kept,), subset)
        return values

    def kernel_input_extent(self, q: Tensor) -> float:
        """The largest ``|kernel input|`` of the potential network over positions ``q: (B, N, D)``
        (centred as :meth:`potential` centres them); what ``hamnet.training`` scales ``kernel_bound`` from."""
        elements = q.shape[1] * self.potential_net.lift_samples
        states = max(1, _EXTENT_PAIRS // (elements * (self.config.neighbours or elements)))
        return max(float(self.potential_net.kernel_input_extent(centre(part) if self.config.centre else part))
                   for part in q.split(states))

    def _finite_potential(self, q: Tensor, params: Params) -> Tensor:
        if self.config.centre:
            q = centre(q)
        return self.potential_net(q, self.features(params, q)).squeeze(-1)


class FCHNN(ParticleModel):
    """Fully connected Hamiltonian network: an MLP maps flattened ``q, p, features`` to ``H``.

    Not separable and not invariant to anything, so it conserves no momentum; tied to ``n_particles``.
    """

    fixed_particles = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.net = _mlp(self._flat_size(), config.width, config.depth, 1)

    def hamiltonian(self, z: Tensor, params: Params) -> Tensor:
        """``H(z)``; ``z: (B, 2, N, D)`` -> ``(B,)``."""
        return self.net(self._flat_inputs(z, params)).squeeze(-1)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        return self.hamiltonian(z, params)


class FCNODE(ParticleModel):
    """Fully connected neural ODE: an MLP maps flattened ``q, p, features`` straight to ``dz/dt``.

    Not Hamiltonian (no ``hamiltonian``; ``vector_field`` instead), so nothing is conserved by
    construction; tied to ``n_particles``.
    """

    fixed_particles = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.net = _mlp(self._flat_size(), config.width, config.depth, 2 * config.n_particles * config.dim)

    def vector_field(self, z: Tensor, params: Params) -> Tensor:
        """``dz/dt``; ``z: (B, 2, N, D)`` -> ``(B, 2, N, D)``."""
        return self.net(self._flat_inputs(z, params)).view_as(z)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        return self.vector_field(z, params)


class HOGN(ParticleModel):
    """Hamiltonian graph network: messages over all ordered pairs of two different particles, summed to a
    scalar ``H``.

    Nodes carry ``x_i = [q_i, p_i, features_i]``; an edge MLP turns ``[x_i, x_j]`` into a message,
    a node MLP turns ``[x_i, sum_{j != i} message_ij]`` into a node embedding, and a global MLP maps
    the sum of node embeddings to ``H``. Permutation invariant and defined for any ``N`` (cost
    ``O(N^2)``); not separable and, on absolute positions, not translation or rotation invariant.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        node_size = 2 * config.dim + self.n_features
        self.edge_net = _mlp(2 * node_size, config.width, config.depth, config.width)
        self.node_net = _mlp(node_size + config.width, config.width, config.depth, config.width)
        self.global_net = _mlp(config.width, config.width, 1, 1)

    def hamiltonian(self, z: Tensor, params: Params) -> Tensor:
        """``H(z)``; ``z: (B, 2, N, D)`` -> ``(B,)``."""
        self._check_state(z, fixed_n=False)
        q, p = z[:, 0], z[:, 1]
        x = torch.cat([q, p, self.features(params, q)], dim=-1)  # (B, N, F')
        messages = self.edge_net(_pairs_of_others(x)).sum(2)  # (B, N, W)
        nodes = self.node_net(torch.cat([x, messages], dim=-1))
        return self.global_net(nodes.sum(1)).squeeze(-1)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        return self.hamiltonian(z, params)


# -- EGNN (Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021) ------

def _squared_distances(q: Tensor) -> tuple[Tensor, Tensor]:
    """``(q_i - q_j, |q_i - q_j|^2)`` of every ordered pair; ``q: (B, N, D)`` -> ``(B, N, N, D)``,
    ``(B, N, N, 1)``. Smooth everywhere (no square root), and ``|q_j - q_i|^2`` equals ``|q_i - q_j|^2``
    bit for bit, so a function of them is symmetric in each pair to round-off."""
    differences = q.unsqueeze(2) - q.unsqueeze(1)
    return differences, differences.square().sum(-1, keepdim=True)


def _edge_net(width: int) -> nn.Sequential:
    """EGNN's ``phi_e``: ``[h_i, h_j, |x_i - x_j|^2] -> m_ij``, two linear layers with Swish after each."""
    return nn.Sequential(_mlp(2 * width + 1, width, 1, width), nn.SiLU())


class EGNNLayer(nn.Module):
    """One E(n)-invariant EGNN layer on node features ``h: (B, N, W)`` (the paper's eqs. 3, 5, 6)::

        m_ij = phi_e(h_i, h_j, |x_i - x_j|^2),   m_i = sum_{j != i} m_ij,   h_i' = h_i + phi_h(h_i, m_i)

    over all pairs (no edge attributes ``a_ij``), with a residual connection on ``h``. The coordinate
    update (eq. 4) is left out: positions enter only through the squared distances, so ``h'`` is
    invariant to rotations, reflections and translations and permutation equivariant.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.edge_net = _edge_net(width)
        self.node_net = _mlp(2 * width, width, 1, width)

    def forward(self, h: Tensor, squared_distances: Tensor) -> Tensor:
        """``h: (B, N, W)``, ``squared_distances: (B, N, N, 1)`` -> ``h': (B, N, W)``."""
        messages = self.edge_net(_pairs_of_others(h, squared_distances)).sum(2)
        return h + self.node_net(torch.cat([h, messages], dim=-1))


class EGNN(nn.Module):
    """A linear embedding of per-particle inputs ``(B, N, F) -> (B, N, W)``, then ``depth``
    :class:`EGNNLayer` s; invariant node features ``h: (B, N, W)``."""

    def __init__(self, in_features: int, width: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, width)
        self.layers = nn.ModuleList(EGNNLayer(width) for _ in range(depth))

    def forward(self, inputs: Tensor, squared_distances: Tensor) -> Tensor:
        """``inputs: (B, N, F)``, ``squared_distances: (B, N, N, 1)`` -> ``(B, N, W)``."""
        h = self.embed(inputs)
        for layer in self.layers:
            h = layer(h, squared_distances)
        return h


class EGNNH(SeparableModel):
    """``H = sum_i |p_i|^2 / 2 m_i + V_theta(q, features)``, ``V = sum_i phi_V(h_i)`` over an invariant EGNN.

    The node features start from the particle features and pass ``depth`` :class:`EGNNLayer` s whose
    edges see squared distances only. An invariant scalar needs no coordinate updates (they would
    carry equivariant information the energy cannot use), so only the ``h`` stream is kept.
    ``V`` is invariant, by construction and to round-off, to rotations, reflections, translations
    and permutations of the particles, for any ``N`` and any weights: rolled out with a symplectic
    integrator, it conserves linear and angular momentum (Noether). Separable; Swish throughout, so
    the force (by autograd) is smooth and can be differentiated again in training. Cost ``O(N^2)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.network = EGNN(self.n_features, config.width, config.depth)
        self.energy_net = _mlp(config.width, config.width, 1, 1)

    def potential(self, q: Tensor, params: Params) -> Tensor:
        """``V_theta(q)``; ``q: (B, N, D)`` -> ``(B,)``."""
        _, squared_distances = _squared_distances(q)
        h = self.network(self.features(params, q), squared_distances)
        return self.energy_net(h).squeeze(-1).sum(-1)


class EGNNNODE(ParticleModel):
    """An E(n)-equivariant neural ODE: ``dq/dt = p / m`` (known) and an EGNN force::

        dp_i/dt = sum_{j != i} (q_i - q_j) phi_x(m_ij) + phi_v(h_i) p_i,   m_ij = phi_e(h_i, h_j, |q_i - q_j|^2)

    ``h`` comes from ``depth`` :class:`EGNNLayer` s on ``[features_i, |p_i|^2]``; the output is the
    velocity variant's update of the paper (its eq. 7) taken as the force, with ``C = 1`` (a force is a
    sum of pair forces, not a mean). Rotating or reflecting ``z`` rotates ``dz/dt``, translating ``q``
    leaves it unchanged, and permuting the particles permutes it, for any ``N``.

    Not Hamiltonian and not separable, so it conserves nothing by construction: ``phi_x(m_ij)`` is not
    symmetric in ``i, j`` (``m_ij != m_ji``), so pair forces are not equal and opposite, and
    ``phi_v(h_i) p_i`` rescales each momentum on its own; total linear momentum would be conserved only
    with symmetric pair weights and without the ``phi_v`` term. Angular momentum would need more still.

    The published EGNN N-body benchmark uses EGNN as a one-shot predictor of positions 1000
    integration steps ahead, not as a vector field; that protocol is separate benchmark work.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.network = EGNN(self.n_features + 1, config.width, config.depth)
        self.edge_net = _edge_net(config.width)
        self.pair_weight_net = _mlp(config.width, config.width, 1, 1)
        self.momentum_gain_net = _mlp(config.width, config.width, 1, 1)

    def vector_field(self, z: Tensor, params: Params) -> Tensor:
        """``dz/dt``; ``z: (B, 2, N, D)`` -> ``(B, 2, N, D)``."""
        self._check_state(z, fixed_n=False)
        q, p = z[:, 0], z[:, 1]
        differences, squared_distances = _squared_distances(q)
        inputs = torch.cat([self.features(params, q), p.square().sum(-1, keepdim=True)], dim=-1)
        h = self.network(inputs, squared_distances)
        messages = self.edge_net(_pairs_of_others(h, squared_distances))
        pulls = (_off_diagonal(differences) * self.pair_weight_net(messages)).sum(2)
        force = pulls + self.momentum_gain_net(h) * p
        return torch.stack([self.velocity(p, params), force], dim=1)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        return self.vector_field(z, params)


#: The model registry: ``ModelConfig.name`` -> model class.
MODELS: Registry[type[ParticleModel]] = Registry(
    "model", hint="add your own with hamnet.models.register_model (on the command line: --plugin file.py)"
)


def register_model(name: str, cls: type[ParticleModel], *, replace: bool = False) -> None:
    """Make ``cls`` (a :class:`ParticleModel` subclass taking a :class:`ModelConfig`) buildable as
    ``ModelConfig(name=name)``: by :func:`build_model`, training, checkpoints and the command line."""
    if not (isinstance(cls, type) and issubclass(cls, ParticleModel)):
        raise TypeError(f"register_model needs a subclass of hamnet.models.ParticleModel, got {cls!r}")
    MODELS.register(name, cls, replace=replace)


for _name, _cls in (("hlieconv", HLieConv), ("fc-node", FCNODE), ("fc-hnn", FCHNN), ("hogn", HOGN),
                   ("egnn-h", EGNNH), ("egnn-node", EGNNNODE)):
    register_model(_name, _cls)


def build_model(config: ModelConfig, generator: torch.Generator | None = None) -> nn.Module:
    """The model named by ``config.name``, with ``model.config = config``, in float32.

    Linear layers are initialised from ``generator`` (a fresh one seeded ``DEFAULT_INIT_SEED``
    when None), so the same config and generator give the same weights. To restore a
    checkpoint: ``build_model(ModelConfig.from_dict(saved_config)).load_state_dict(saved_state)``.
    """
    model = MODELS.get(config.name)(config)
    init_parameters(model, generator if generator is not None else torch.Generator().manual_seed(DEFAULT_INIT_SEED))
    return model


def parameter_count(config: ModelConfig) -> int:
    """How many weights ``build_model(config)`` would have, counted without allocating them (the model is
    built on torch's meta device), so that an impossible width can be refused before it is built."""
    with torch.device("meta"):
        model = MODELS.get(config.name)(config)
    return sum(weight.numel() for weight in model.parameters())


def check_compatible(config: ModelConfig, data: Any, source: str) -> None:
    """Refuse data a model cannot take, in one line: wrong ``D``, wrong ``N`` for a model tied to its
    particle count, or missing feature parameters. ``data`` is a :class:`hamnet.io.Trajectories`."""
    if data.dim != config.dim:
        raise ValueError(f"{source} holds {data.dim}D systems; the model is for {config.dim}D")
    missing = [key for key in config.feature_keys if key not in data.params]
    if missing:
        raise ValueError(f"{source} lacks the parameters {missing} the model uses as features")
    if MODELS.get(config.name).fixed_particles and data.n_particles != config.n_particles:
        flexible = [name for name in MODELS.names() if not MODELS.get(name).fixed_particles]
        raise ValueError(
            f"{config.name} is fully connected over {config.n_particles} particles and cannot run on {source} "
            f"with N = {data.n_particles}; {', '.join(flexible)} run on any N"
        )
