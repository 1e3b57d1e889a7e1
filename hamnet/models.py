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

The EGNN models (``egnn-h``, ``egnn-node``) live in :mod:`hamnet.egnn`, which registers them here
when ``hamnet`` is imported. Configuration is one frozen :class:`ModelConfig`; ``build_model(config)`` rebuilds a model, so a
checkpoint stores ``dataclasses.asdict(model.config)`` and the ``state_dict``. Activations are
Swish (SiLU): Hamiltonian training differentiates the network twice.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .systems.base import kinetic_energy, velocity

from .config import check_field_types, config_from_dict
from .dynamics import potential_force
from .groups import get_group
from .io import load_trajectories
from .layers import DEFAULT_INIT_SEED, init_parameters, mlp, pairs_of_others
from .lieconv import LieResNet, centre, check_kernel_bound, checks_inputs, resolve_lift
from .registry import Registry

Params = dict[str, Tensor]

__all__ = ["WITHOUT_DATA", "ModelConfig", "ParticleModel", "SeparableModel", "HLieConv", "FCNODE", "FCHNN", "HOGN",
           "MODELS", "register_model", "build_model", "check_compatible", "parameter_count"]

# kernel-input pairs per forward pass while measuring their extent (a few tens of MiB)
_EXTENT_PAIRS = 1 << 21
#: what a :class:`ModelConfig` leaves to the data is, for a model built with no data to take it from: the
#: paper's springs (six particles in 2D, features masses and spring constants), the defaults of old
WITHOUT_DATA = {"n_particles": 6, "dim": 2, "feature_keys": ("m", "k")}


def _acts_in(group: str, dim: int) -> bool:
    try:
        get_group(group, dim)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (with ``build_model``), JSON- and ``torch.save``-friendly.

    ``name``: a name in :data:`MODELS` (the built-ins or one added with :func:`register_model`). ``n_particles`` and ``dim``: the systems the model is for (the
    fully connected models are tied to ``n_particles``; the others accept any ``N``).
    ``feature_keys``: the parameters stacked into per-particle features. These three default to None,
    "from the data": training (``hamnet.train``, ``hamnet.fit``, ``hamnet train``) takes them from the
    file it trains on (:meth:`for_data`), so ``ModelConfig(group="SE3")`` trains on any 3D data; a value
    given is kept, and checked against the data. A model built with nothing to take them from
    (:func:`build_model` on such a config) is for the paper's springs, :data:`WITHOUT_DATA`. ``width`` and ``depth``:
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
    rollout's momenta stay bounded by its energy; ``hamnet.training`` sets it from the training data) and
    ``coupling`` (None; ``"affine"``: every pair's interaction scaled by a learned affine function of each
    particle's features; or a feature key such as ``"k"``: scaled by that parameter of both particles, as
    when pair strengths are products like springs' ``k_i k_j``; :class:`hamnet.lieconv.LieResNet`.
    ``true`` in a file written before the named kind existed reads as ``"affine"``).
    """

    name: str = "hlieconv"
    n_particles: int | None = None
    dim: int | None = None
    feature_keys: tuple[str, ...] | None = None
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
    coupling: str | bool | None = None  # a bool only as read from files of the switch's time

    def __post_init__(self) -> None:
        if isinstance(self.coupling, bool):  # written when --coupling was a switch (then always affine)
            object.__setattr__(self, "coupling", "affine" if self.coupling else None)
        check_field_types(self, "model config")  # a list of feature keys (read back from JSON) becomes a tuple
        if self.group is None and self.dim is not None:
            object.__setattr__(self, "group", f"T{self.dim}")
        model_class = MODELS.get(self.name)  # unknown names fail here, with the known ones listed
        if self.dim is not None and self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim}")
        if (self.n_particles is not None and self.n_particles < 1) or self.width < 1 or self.depth < 1:
            raise ValueError(
                f"n_particles, width and depth must be positive, got {self.n_particles}, {self.width}, {self.depth}"
            )
        if self.feature_keys is not None and (not self.feature_keys or "m" not in self.feature_keys):
            raise ValueError(f"feature_keys must include the masses 'm', got {self.feature_keys}")
        if self.kernel_bound is not None and not model_class.uses_group:
            raise ValueError(f"kernel_bound applies to hlieconv (a LieConv kernel), not to {self.name}; leave it None")
        if self.coupling is not None and not model_class.uses_group:
            raise ValueError(f"coupling applies to hlieconv (a LieConv network), not to {self.name}; leave it None")
        check_kernel_bound(self.kernel_bound)
        if self.coupling not in (None, "affine") and self.feature_keys is not None \
                and self.coupling not in self.feature_keys:
            raise ValueError(f"coupling {self.coupling!r} is neither 'affine' nor one of the feature keys "
                             f"{', '.join(self.feature_keys)}")
        if model_class.uses_group and self.group is not None:
            # an unknown group, a wrong dimension or an impossible lift fails before any build; with the
            # dimension left to the data, the group must act in one the data can have
            dims = [self.dim] if self.dim is not None else [d for d in (2, 3) if _acts_in(self.group, d)] or [2]
            resolve_lift(get_group(self.group, dims[0]), self.lift, self.lift_samples)

    def for_data(self, data: Any) -> "ModelConfig":
        """This config with what it leaves to the data (None) taken from ``data``, a
        :class:`hamnet.io.Trajectories` or the path of a trajectory file: ``dim`` and ``n_particles`` of its
        systems and, as ``feature_keys``, the masses ``m`` then its other per-particle parameters (those of
        shape ``(B, N)``) in sorted order, as ``hamnet train`` does. What is set is kept as it is; training
        then checks it against the data."""
        if isinstance(data, (str, os.PathLike)):
            data = load_trajectories(data)
        others = sorted(key for key, value in data.params.items() if value.dim() == 2 and key != "m")
        found = {"n_particles": data.n_particles, "dim": data.dim, "feature_keys": ("m", *others)}
        if self.coupling not in (None, "affine", *found["feature_keys"]):
            raise ValueError(f"coupling {self.coupling!r} is neither 'affine' nor a per-particle parameter of the "
                             f"data ({', '.join(found['feature_keys'])})")
        try:
            return dataclasses.replace(self, **{key: value for key, value in found.items()
                                                if getattr(self, key) is None})
        except ValueError as error:
            raise ValueError(f"the data holds {data.dim}D systems: {error}") from None

    def without_data(self) -> "ModelConfig":
        """This config with what it leaves to the data (None) set as :data:`WITHOUT_DATA` says."""
        return dataclasses.replace(self, **{key: value for key, value in WITHOUT_DATA.items()
                                            if getattr(self, key) is None})

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
            coupling=(config.feature_keys.index(config.coupling) if config.coupling not in (None, "affine")
                      else config.coupling),
        )

    def potential(self, q: Tensor, params: Params) -> Tensor:
        """``V_theta(q)``; ``q: (B, N, D)`` -> ``(B,)``. NaN for a system whose ``q`` is not finite, and
        only for that one: the network refuses such input, so it sees the finite systems alone, and a
        diverging system in a batch leaves the others' energies and forces as they would be without it
        (its caller reports the divergence). Inside ``torch.compile`` (no host reads there) the network
        takes every system as it is: a system that is not finite still gets NaN, through its own values
        (so too under :func:`hamnet.lieconv.unchecked_inputs`)."""
        if not checks_inputs():
            return self._finite_potential(q, params)
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
        self.net = mlp(self._flat_size(), config.width, config.depth, 1)

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
        self.net = mlp(self._flat_size(), config.width, config.depth, 2 * config.n_particles * config.dim)

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
        self.edge_net = mlp(2 * node_size, config.width, config.depth, config.width)
        self.node_net = mlp(node_size + config.width, config.width, config.depth, config.width)
        self.global_net = mlp(config.width, config.width, 1, 1)

    def hamiltonian(self, z: Tensor, params: Params) -> Tensor:
        """``H(z)``; ``z: (B, 2, N, D)`` -> ``(B,)``."""
        self._check_state(z, fixed_n=False)
        q, p = z[:, 0], z[:, 1]
        x = torch.cat([q, p, self.features(params, q)], dim=-1)  # (B, N, F')
        messages = self.edge_net(pairs_of_others(x)).sum(2)  # (B, N, W)
        nodes = self.node_net(torch.cat([x, messages], dim=-1))
        return self.global_net(nodes.sum(1)).squeeze(-1)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        return self.hamiltonian(z, params)


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


# the EGNN models (egnn-h, egnn-node) live in hamnet.egnn, which registers them when hamnet is imported
for _name, _cls in (("hlieconv", HLieConv), ("fc-node", FCNODE), ("fc-hnn", FCHNN), ("hogn", HOGN)):
    register_model(_name, _cls)


def build_model(config: ModelConfig, generator: torch.Generator | None = None) -> nn.Module:
    """The model named by ``config.name``, with ``model.config = config``, in float32; what ``config``
    leaves to the data (None) is set first (:meth:`ModelConfig.without_data`; for data, build
    ``config.for_data(data)``).

    Linear layers are initialised from ``generator`` (a fresh one seeded ``DEFAULT_INIT_SEED``
    when None), so the same config and generator give the same weights. To restore a
    checkpoint: ``build_model(ModelConfig.from_dict(saved_config)).load_state_dict(saved_state)``.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a hamnet.ModelConfig (ModelConfig.from_dict reads a dict), got "
                        f"{type(config).__name__}")
    config = config.without_data()
    model = MODELS.get(config.name)(config)
    init_parameters(model, generator if generator is not None else torch.Generator().manual_seed(DEFAULT_INIT_SEED))
    return model


def parameter_count(config: ModelConfig) -> int:
    """How many weights ``build_model(config)`` would have, counted without allocating them (the model is
    built on torch's meta device), so that an impossible width can be refused before it is built."""
    with torch.device("meta"):
        model = MODELS.get(config.name)(config.without_data())
    return sum(weight.numel() for weight in model.parameters())


def check_compatible(config: ModelConfig, data: Any, source: str) -> None:
    """Refuse data a model cannot take, in one line: wrong ``D``, wrong ``N`` for a model tied to its
    particle count, or missing feature parameters. ``data`` is a :class:`hamnet.io.Trajectories`; what
    ``config`` leaves to the data (None) fits any."""
    if config.dim is not None and data.dim != config.dim:
        raise ValueError(f"{source} holds {data.dim}D systems; the model is for {config.dim}D")
    missing = [key for key in config.feature_keys or () if key not in data.params]
    if missing:
        raise ValueError(f"{source} lacks the parameters {missing} the model uses as features")
    fixed = MODELS.get(config.name).fixed_particles and config.n_particles is not None
    if fixed and data.n_particles != config.n_particles:
        flexible = [name for name in MODELS.names() if not MODELS.get(name).fixed_particles]
        raise ValueError(
            f"{config.name} is fully connected over {config.n_particles} particles and cannot run on {source} "
            f"with N = {data.n_particles}; {', '.join(flexible)} run on any N"
        )
