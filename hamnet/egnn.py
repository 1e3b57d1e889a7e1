"""EGNN (Satorras, Hoogeboom and Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021) in hamnet.

Note to the reader: the state is hamnet's ``z: (B, 2, N, D)`` (``z[:, 0]`` positions ``q``, ``z[:, 1]``
momenta ``p``) with ``params``, a dict of ``(B, N)`` tensors; velocities are ``v = p / m``. Three uses
of one network family live here:

- ``egnn-h`` (:class:`EGNNH`): a Hamiltonian ``H = sum |p|^2 / 2m + V(q)`` whose potential is an
  E(n)-invariant EGNN, so it conserves both momenta when rolled out symplectically;
- ``egnn-node`` (:class:`EGNNNODE`): an E(n)-equivariant vector field (a neural ODE, not Hamiltonian);
- :class:`EGNNPredictor`: the one-shot position predictor of EGNN's own N-body benchmark.

The two models register themselves in :data:`hamnet.models.MODELS` when this module is imported
(``import hamnet`` does it).

The predictor. EGNN's paper benchmarks on a charged 5-body set by predicting the positions 1000
integration steps ahead from one frame, with the velocity variant of EGNN (its eqs. 3-7).
:class:`EGNNPredictor` is that model, over all pairs::
    m_ij  = phi_e(h_i, h_j, |x_i - x_j|^2, a_ij)
    v_i'  = phi_v(h_i) v_i + 1/(N - 1) sum_{j != i} (x_i - x_j) phi_x(m_ij)
    x_i'  = x_i + v_i'
    h_i'  = h_i + phi_h(h_i, sum_{j != i} m_ij)

repeated ``depth`` times from ``x = q`` and ``h``, a linear embedding of the speed ``|v_i|``, with the
input velocity ``v`` (not ``v'``) in every layer and edge attributes ``a_ij = [c_i c_j, |q_i - q_j|^2]``
from the input (``c`` the charges ``params["charge"]``, or the masses for data without charges). The
prediction is the last ``x``. ``phi_e``: two linear layers, each followed by Swish; ``phi_h`` and
``phi_v``: linear, Swish, linear; ``phi_x``: linear, Swish, linear to one weight without bias,
initialised small (xavier-uniform, gain :data:`PAIR_WEIGHT_INIT_GAIN`), so a fresh model is nearly
``x + g v`` with a scalar gain ``g`` per particle. The map is equivariant by construction, for any
``N``, ``D`` and weights: rotating or reflecting the state rotates the prediction, translating the
positions translates it, and permuting the particles permutes it. Cost ``O(N^2)`` per layer.

It is not a dynamics model: there is no vector field and no integrator, nothing is conserved by
construction, and a trained model knows one horizon only (the one its targets were made at).
:func:`fit_predictor` trains one as the paper does (Adam, MSE on positions, the best validation
epoch kept); :func:`position_mse` scores one.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional

from .layers import DEFAULT_INIT_SEED, init_parameters, mlp, off_diagonal, pairs_of_others, pairwise_differences
from .models import ModelConfig, ParticleModel, SeparableModel, register_model

__all__ = ["EGNN", "EGNNH", "EGNNLayer", "EGNNNODE", "EGNNPredictor", "fit_predictor", "position_mse"]

Params = dict[str, Tensor]


# -- the models: an invariant potential and an equivariant vector field -------------------------

def _edge_net(width: int) -> nn.Sequential:
    """EGNN's ``phi_e``: ``[h_i, h_j, |x_i - x_j|^2] -> m_ij``, two linear layers with Swish after each."""
    return nn.Sequential(mlp(2 * width + 1, width, 1, width), nn.SiLU())


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
        self.node_net = mlp(2 * width, width, 1, width)

    def forward(self, h: Tensor, squared_distances: Tensor) -> Tensor:
        """``h: (B, N, W)``, ``squared_distances: (B, N, N, 1)`` -> ``h': (B, N, W)``."""
        messages = self.edge_net(pairs_of_others(h, squared_distances)).sum(2)
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
        self.energy_net = mlp(config.width, config.width, 1, 1)

    def potential(self, q: Tensor, params: Params) -> Tensor:
        """``V_theta(q)``; ``q: (B, N, D)`` -> ``(B,)``."""
        _, squared_distances = pairwise_differences(q)
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
        self.pair_weight_net = mlp(config.width, config.width, 1, 1)
        self.momentum_gain_net = mlp(config.width, config.width, 1, 1)

    def vector_field(self, z: Tensor, params: Params) -> Tensor:
        """``dz/dt``; ``z: (B, 2, N, D)`` -> ``(B, 2, N, D)``."""
        self._check_state(z, fixed_n=False)
        q, p = z[:, 0], z[:, 1]
        differences, squared_distances = pairwise_differences(q)
        inputs = torch.cat([self.features(params, q), p.square().sum(-1, keepdim=True)], dim=-1)
        h = self.network(inputs, squared_distances)
        messages = self.edge_net(pairs_of_others(h, squared_distances))
        pulls = (off_diagonal(differences) * self.pair_weight_net(messages)).sum(2)
        force = pulls + self.momentum_gain_net(h) * p
        return torch.stack([self.velocity(p, params), force], dim=1)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        return self.vector_field(z, params)


register_model("egnn-h", EGNNH)
register_model("egnn-node", EGNNNODE)


# -- the one-shot predictor ------------------------------------------------------------------------

#: ``(z0: (B, 2, N, D), params, target positions: (B, N, D))``
Dataset = tuple[Tensor, Params, Tensor]

#: xavier-uniform gain of ``phi_x``'s last layer: the paper's, small so a fresh model starts near ``x + g v``
PAIR_WEIGHT_INIT_GAIN = 1e-3
#: the edge attributes ``a_ij``: the product of charges and the squared distance at the input
EDGE_ATTRIBUTES = 2


def _pair_linear(layer: nn.Linear, h: Tensor, edges: Tensor) -> Tensor:
    """``layer([h_i, h_j, edges_ij])`` for every ordered pair without building that input: the weight
    splits into the columns that see ``h_i``, ``h_j`` and the edge, so only the output is stored (at
    ``N = 100`` the concatenated input would be twice its size). ``h: (B, N, W)``,
    ``edges: (B, N, N, E)`` -> ``(B, N, N, out)``."""
    width = h.shape[-1]
    to_i, to_j, to_edge = layer.weight.split([width, width, edges.shape[-1]], dim=1)
    return (h @ to_i.T).unsqueeze(2) + (h @ to_j.T).unsqueeze(1) + functional.linear(edges, to_edge, layer.bias)


class VelocityEGNNLayer(nn.Module):
    """One layer of the velocity variant of EGNN (the paper's eqs. 3, 5-7; see the module docstring)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.edge_in = nn.Linear(2 * width + 1 + EDGE_ATTRIBUTES, width)
        self.edge_out = nn.Linear(width, width)
        self.node_net = mlp(2 * width, width, 1, width)
        self.pair_weight_net = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1, bias=False))
        self.velocity_gain_net = mlp(width, width, 1, 1)

    def forward(self, h: Tensor, x: Tensor, v: Tensor, attributes: Tensor) -> tuple[Tensor, Tensor]:
        """``h: (B, N, W)``, positions ``x: (B, N, D)``, input velocities ``v: (B, N, D)`` and
        ``attributes: (B, N, N, 2)`` -> ``(h', x')``, shaped as ``h`` and ``x``."""
        differences, squared_distances = pairwise_differences(x)
        edges = torch.cat([squared_distances, attributes], dim=-1)
        # the pairs of two different particles only, from the first layer on: self-pairs send nothing
        first = off_diagonal(_pair_linear(self.edge_in, h, edges))  # (B, N, N - 1, W)
        messages = functional.silu(self.edge_out(functional.silu(first)))
        pulls = (off_diagonal(differences) * self.pair_weight_net(messages)).sum(2) / (x.shape[1] - 1)
        velocity = self.velocity_gain_net(h) * v + pulls
        return h + self.node_net(torch.cat([h, messages.sum(2)], dim=-1)), x + velocity


class EGNNPredictor(nn.Module):
    """EGNN predicting positions at one fixed later time from a state (see the module docstring).

    ``width`` and ``depth`` are the paper's 64 and 4 by default; ``charge_key`` names the parameter
    used as charges ``c`` (the masses when ``params`` lack it). Weights are created in float32 and
    initialised from ``generator`` (a fresh one seeded ``DEFAULT_INIT_SEED`` when None), so the same
    seed gives the same weights; ``.double()`` makes a float64 model.
    """

    def __init__(self, width: int = 64, depth: int = 4, charge_key: str = "charge", *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.charge_key = charge_key
        self.embed = nn.Linear(1, width)
        self.layers = nn.ModuleList(VelocityEGNNLayer(width) for _ in range(depth))
        generator = generator if generator is not None else torch.Generator().manual_seed(DEFAULT_INIT_SEED)
        init_parameters(self, generator)
        for layer in self.layers:
            _xavier_uniform(layer.pair_weight_net[-1].weight, PAIR_WEIGHT_INIT_GAIN, generator)

    def forward(self, z: Tensor, params: Params) -> Tensor:
        """Predicted positions ``(B, N, D)`` from ``z: (B, 2, N, D)`` and ``params`` (``"m": (B, N)``
        and, if present, ``params[charge_key]: (B, N)``), in ``z``'s dtype."""
        q, v, charges = self._inputs(z, params)
        _, squared_distances = pairwise_differences(q)
        attributes = torch.cat([(charges.unsqueeze(2) * charges.unsqueeze(1)).unsqueeze(-1), squared_distances], -1)
        h = self.embed(torch.linalg.vector_norm(v, dim=-1, keepdim=True))  # its gradient at v = 0 is 0
        x = q
        for layer in self.layers:
            h, x = layer(h, x, v, attributes)
        return x

    def _inputs(self, z: Tensor, params: Params) -> tuple[Tensor, Tensor, Tensor]:
        """Positions ``(B, N, D)``, velocities ``(B, N, D)`` and charges ``(B, N)``, after the checks."""
        if z.dim() != 4 or z.shape[1] != 2 or z.shape[2] < 2:
            raise ValueError(f"expected a state z: (B, 2, N, D) with N >= 2, got shape {tuple(z.shape)}")
        if z.dtype != self.embed.weight.dtype:
            raise ValueError(f"z is {z.dtype} but the model's weights are {self.embed.weight.dtype}; "
                             "convert one of them (model.double() / model.float())")
        if "m" not in params:
            raise ValueError(f"params lack the masses 'm' (B, N) that give v = p / m; they hold {sorted(params)}")
        key = self.charge_key if self.charge_key in params else "m"
        for name in dict.fromkeys(("m", key)):
            if tuple(params[name].shape) != tuple(z.shape[:1] + z.shape[2:3]):
                raise ValueError(f"params[{name!r}] must be (B, N) = {tuple(z.shape[:1] + z.shape[2:3])} "
                                 f"for z of shape {tuple(z.shape)}, got {tuple(params[name].shape)}")
        q, p = z[:, 0], z[:, 1]
        return q, p / params["m"].to(z.dtype).unsqueeze(-1), params[key].to(z.dtype)


def _xavier_uniform(weight: Tensor, gain: float, generator: torch.Generator) -> None:
    """Xavier-uniform ``U(-a, a)``, ``a = gain sqrt(6 / (fan_in + fan_out))``, drawn from ``generator``."""
    fan_out, fan_in = weight.shape
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        noise = torch.rand(weight.shape, generator=generator, dtype=torch.float64)
        weight.copy_((2.0 * noise - 1.0) * bound)


# -- training and scoring -----------------------------------------------------------------------

def position_mse(model: nn.Module, z0: Tensor, params: Params, target: Tensor, batch_size: int = 500) -> float:
    """Mean over systems, particles and coordinates of ``(model(z0, params) - target)^2``, without
    gradients, ``batch_size`` systems at a time; ``z0: (B, 2, N, D)``, ``target: (B, N, D)``."""
    _check_batch_size(batch_size)
    if tuple(target.shape) != tuple(z0[:, 0].shape):
        raise ValueError(f"target must be (B, N, D) = {tuple(z0[:, 0].shape)}, got {tuple(target.shape)}")
    total = 0.0
    with torch.no_grad():
        for start in range(0, z0.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            errors = model(z0[rows], {key: value[rows] for key, value in params.items()}) - target[rows]
            total += errors.double().square().sum().item()
    return total / target.numel()


def fit_predictor(model: nn.Module, train: Dataset, valid: Dataset, *, epochs: int, batch_size: int = 100,
                  lr: float = 5e-4, weight_decay: float = 1e-12, evaluate_every: int = 5, seed: int = 0,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``train`` as the EGNN paper does, keep its best validation epoch, and load it.

    ``train`` and ``valid`` are ``(z0: (B, 2, N, D), params, target: (B, N, D))``. Adam (``lr``,
    ``weight_decay``) on the position MSE, in batches of ``batch_size`` shuffled by a generator seeded
    ``seed``. The validation MSE (:func:`position_mse`) is taken before training (epoch 0), every
    ``evaluate_every`` epochs and after the last; the weights of the lowest one are loaded into
    ``model`` at the end. A loss that is not finite stops the run with a ``FloatingPointError``.

    Returns ``{"best_epoch": int, "best_valid_mse": float, "history": [(epoch, train_mse, valid_mse)],
    "seconds": float}``, one history entry per validation; ``train_mse`` is the mean batch loss of
    that epoch (of the initial weights, over the whole training set, at epoch 0).
    """
    _check_settings(epochs, lr, weight_decay, evaluate_every)
    _check_batch_size(batch_size)
    for name, data in (("train", train), ("valid", valid)):
        _check_dataset(name, data)
    started = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    history = [(0, _finite(position_mse(model, *train), "initial training MSE"),
                _finite(position_mse(model, *valid), "initial validation MSE"))]
    best_epoch, best_valid_mse, best_state = 0, history[0][2], _copy_state(model)
    for epoch in range(1, epochs + 1):
        train_mse = _train_epoch(model, optimizer, train, batch_size, shuffle, epoch)
        if epoch % evaluate_every and epoch != epochs:
            continue
        valid_mse = _finite(position_mse(model, *valid), f"validation MSE at epoch {epoch}")
        history.append((epoch, train_mse, valid_mse))
        if valid_mse < best_valid_mse:
            best_epoch, best_valid_mse, best_state = epoch, valid_mse, _copy_state(model)
        if log is not None:
            log(f"epoch {epoch}/{epochs}: train MSE {train_mse:.4e}, validation MSE {valid_mse:.4e} "
                f"(best {best_valid_mse:.4e} at epoch {best_epoch})")
    model.load_state_dict(best_state)
    return {"best_epoch": best_epoch, "best_valid_mse": best_valid_mse, "history": history,
            "seconds": time.perf_counter() - started}


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train: Dataset, batch_size: int,
                 shuffle: torch.Generator, epoch: int) -> float:
    """One pass over ``train`` in shuffled batches; returns the mean loss over its systems."""
    z0, params, target = train
    order = torch.randperm(z0.shape[0], generator=shuffle)
    total = 0.0
    for number, rows in enumerate(order.split(batch_size), start=1):
        rows = rows.to(z0.device)
        loss = functional.mse_loss(model(z0[rows], {key: value[rows] for key, value in params.items()}), target[rows])
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the training loss became {value} at epoch {epoch}, batch {number}; "
                                     f"lower the learning rate ({optimizer.param_groups[0]['lr']}) or rescale the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += value * len(rows)
    return total / z0.shape[0]


def _copy_state(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"the {what} is {value}; lower the learning rate or rescale the data")
    return value


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _check_settings(epochs: int, lr: float, weight_decay: float, evaluate_every: int) -> None:
    for name, value in (("epochs", epochs), ("evaluate_every", evaluate_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite positive number, got {lr}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ValueError(f"weight_decay must be a finite non-negative number, got {weight_decay}")


def _check_dataset(name: str, data: Dataset) -> None:
    """``data`` is ``(z0: (B, 2, N, D), params, target: (B, N, D))`` with finite values throughout."""
    if not (isinstance(data, tuple) and len(data) == 3):
        raise ValueError(f"{name} must be a tuple (z0, params, target), got {type(data).__name__}")
    z0, params, target = data
    if z0.dim() != 4 or z0.shape[1] != 2 or tuple(target.shape) != tuple(z0[:, 0].shape):
        raise ValueError(f"{name}: expected z0 (B, 2, N, D) and target (B, N, D), got {tuple(z0.shape)} "
                         f"and {tuple(target.shape)}")
    named = [("z0", z0), ("target", target), *((f"params[{key!r}]", value) for key, value in params.items())]
    for what, tensor in named:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} {what} holds values that are not finite")
