"""Many models of one shape trained as one: K runs sharing each step's forward and backward pass.

Note to the reader: every member is a whole run, as :func:`hamnet.training.train` makes it: its own
folder, seed (weights, split, windows, data order), optimiser, schedule, checkpoints, metrics and
resume. Only the window loss is computed jointly: the members' batches are concatenated, their weights
stacked (``torch.stack`` of each member's own parameters, so the gradients reach them), the energy
evaluated by ``torch.func.vmap`` over ``torch.func.functional_call``, the forces by autograd of the
summed energies, and each member's squared error summed apart, so each gradient is its member's own.
A member's loss and weights are those of training it alone up to round-off (batched kernels round
differently); the tests hold them to float32 round-off over an epoch.

Members must agree on what the joint pass shares: the model (its kernel bound excepted), the window
(``chunk``, ``method``, ``substeps``), ``dtype``, ``batch_size`` and the number of training windows.
They may differ in everything else (seed, learning rate, weight decay, warm-up, clipping, epochs,
validation, selection, starting weights). A member whose loss or weights stop being finite leaves the
ensemble, its folder as a lone run would leave it; the others go on. Each round trains the members
furthest behind, so an ensemble resumed after a kill between two members' checkpoints catches up first.

Where it pays: where a small model's step waits on kernel launches (a GPU), K members cost the
launches of one. On a CPU the step is compute-bound and the joint pass saves little
(``benchmarks/ensemble_speed.py``). Not compiled, not under ``torchrun``, not for a Monte Carlo lift
(its random samples cannot be drawn inside ``vmap``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .dynamics import potential_force
from .distributed import Context
from .groups import get_group
from .lieconv import LieResNet, resolve_lift, unchecked_inputs
from .loss import WindowLoss, to_device
from .models import MODELS, ModelConfig
from .monitor import MonitorSettings
from .optimisation import DTYPES, TrainingDiverged, TrainingStep, finite_weights
from .runs import RunFiles
from .settings_file import RunSettings
from .training import StartedRun, TrainConfig, end_epoch, open_run, prepare_run

__all__ = ["EnsembleModel", "SHARED_SETTINGS", "joint_step", "train_ensemble"]

log = logging.getLogger(__name__)

#: the TrainConfig fields every member of an ensemble has in common (the model's kernel bound excepted)
SHARED_SETTINGS = ("model", "batch_size", "chunk", "method", "dtype", "substeps")


class EnsembleModel(nn.Module):
    """K models of one configuration as one model over K stacked batches: of an input of ``K b`` systems,
    rows ``[k b, (k + 1) b)`` are member ``k``'s. It follows :mod:`hamnet.dynamics`'s protocol as its
    members do (a separable one's ``potential``, ``forces``, ``velocity``; ``hamiltonian``; or
    ``vector_field``), so the integrators and :class:`hamnet.loss.WindowLoss` take it as one model.
    Members may differ in their LieConv kernel bound. Input values are not checked
    (:func:`hamnet.lieconv.unchecked_inputs`): a non-finite state gives NaN in its member's rows."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members or any(type(member) is not type(members[0]) for member in members):
            raise ValueError("an ensemble needs at least one model, all of one class")
        shapes = [[(name, value.shape, value.dtype) for name, value in member.state_dict().items()] for member in members]
        if any(shape != shapes[0] for shape in shapes):
            raise ValueError("ensemble members differ in the names, shapes or dtypes of their weights; an ensemble "
                             "trains models of one configuration")
        self.members = nn.ModuleList(members)
        self._stacked: tuple | None = None
        first = members[0]
        self.separable = bool(getattr(first, "separable", False))
        self._bounds = _kernel_bounds(members)
        for method in ("potential", "hamiltonian", "vector_field"):
            if callable(getattr(first, method, None)):
                setattr(self, method, functools.partial(self._joint, method))
        if self.separable:
            self.velocity = first.velocity  # the known kinetic term: no weights

    def forces(self, q: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``-dV/dq`` of each row's member, by autograd (graph kept for training)."""
        return potential_force(self.potential, q, params, owner=self)

    @contextlib.contextmanager
    def weights_stacked(self) -> Iterator[None]:
        """Inside, every call shares one stacking of the members' weights (a step's force evaluations then
        copy them once, not once each)."""
        self._stacked = self._stack()
        try:
            yield
        finally:
            self._stacked = None

    def _stack(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The members' weights and buffers, each stacked ``(K, ...)``: differentiable copies."""
        members = list(self.members)
        names = [name for name, _ in members[0].named_parameters()]
        weights = dict(zip(names, map(torch.stack, zip(*(list(m.parameters()) for m in members)))))
        buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in members])
                   for name, _ in members[0].named_buffers()}
        return weights, buffers

    def _joint(self, method: str, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        members = list(self.members)
        k = len(members)
        if x.shape[0] % k:
            raise ValueError(f"an ensemble of {k} takes {k} equal batches stacked, got {x.shape[0]} systems")
        weights, buffers = self._stacked or self._stack()
        call = _Call(members[0], method)

        def one(weights, buffers, bounds, x, params):
            with _bounded(members[0], bounds), unchecked_inputs():
                return torch.func.functional_call(call, {**_prefixed(weights), **_prefixed(buffers)}, (x, params))

        split = lambda value: value.unflatten(0, (k, -1))  # noqa: E731
        out = torch.func.vmap(one)(weights, buffers, self._bounds, split(x), {key: split(v) for key, v in params.items()})
        return out.flatten(0, 1)


class _Call(nn.Module):
    """``module``'s method ``name`` as a module's forward (for ``functional_call``)."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.module, self.name = module, name

    def forward(self, *args: Any) -> Tensor:
        return getattr(self.module, self.name)(*args)


def _prefixed(values: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"module.{name}": value for name, value in values.items()}


def _kernel_bounds(members: Sequence[nn.Module]) -> dict[str, Tensor]:
    """Each LieConv network's kernel bound per member, ``(K,)``, where the members' differ; empty where
    they agree (the bound then stays the plain number a lone model uses)."""
    bounds = [{name: module.kernel_bound for name, module in member.named_modules() if isinstance(module, LieResNet)}
              for member in members]
    if all(b == bounds[0] for b in bounds):
        return {}
    if any(value is None for b in bounds for value in b.values()):
        raise ValueError("ensemble members differ in whether their kernel is bounded; bound all or none")
    weight = next(members[0].parameters())
    return {name: torch.tensor([b[name] for b in bounds], dtype=weight.dtype, device=weight.device) for name in bounds[0]}


@contextlib.contextmanager
def _bounded(model: nn.Module, bounds: dict[str, Tensor]) -> Iterator[None]:
    """``model``'s networks with the kernel bounds ``bounds`` (one member's, inside ``vmap``) for a while."""
    modules = dict(model.named_modules())
    saved = {name: modules[name].kernel_bound for name in bounds}
    try:
        for name, bound in bounds.items():
            modules[name].kernel_bound = bound
        yield
    finally:
        for name, bound in saved.items():
            modules[name].kernel_bound = bound


# -- training ---------------------------------------------------------------------------------------

def train_ensemble(configs: Sequence[TrainConfig], data_path: str | os.PathLike, run_dirs: Sequence[str | os.PathLike],
                   *, resume: bool = False, device: str = "cpu", stop_after_epochs: int | None = None
                   ) -> list[dict[str, Any]]:
    """Train ``configs[k]`` on ``data_path`` into ``run_dirs[k]``, each as :func:`hamnet.training.train`
    would and all in one process, with joint steps (see the module's note). ``resume``,
    ``stop_after_epochs`` and the folders' rules are ``train``'s, per member. Returns each member's last
    epoch's metrics; for a member that diverged, ``{"diverged": "the one-line reason"}``. Settings the
    members cannot share (as given, and as the data resolves them) are refused in one line before any
    folder is touched; if opening a later member's folder fails, the folders this call created are
    removed."""
    _check_members(list(configs), [Path(folder) for folder in run_dirs])
    context = Context(device=torch.device(device))
    started = [prepare_run(dataclasses.replace(config, compile="off"), Path(data_path), RunFiles(Path(folder)), context,
                           resume) for config, folder in zip(configs, run_dirs)]
    _check_resolved(started)
    with contextlib.ExitStack() as held:
        try:
            for member in started:
                watching = (MonitorSettings(False, False),
                            RunSettings(data=str(data_path), out=str(member.files.folder), device=device))
                open_run(member, context, resume, watching, stop_after_epochs, held)
        except BaseException:
            for member in started:  # what this call made, removed while its lock is still held
                if member.created and member.run.epoch == 0:
                    shutil.rmtree(member.files.folder, ignore_errors=True)
            raise
        return _train_members(started, context)


def _check_resolved(started: list[StartedRun]) -> None:
    """What the members' data and checkpoints resolved, which the joint pass must share."""
    def differ(values: list) -> bool:
        return len({repr(value) for value in values}) > 1

    substeps = [member.config.substeps for member in started]
    if differ(substeps):
        raise ValueError(f"ensemble members resolved --substeps auto to {', '.join(map(str, substeps))} (each from its "
                         f"own training systems); give every member --substeps {max(substeps)}")
    bounded = [member.config.model.kernel_bound is not None for member in started]
    if differ(bounded):
        raise ValueError("ensemble members differ in whether their kernel is bounded; give every member a bound "
                         "(--kernel-bound auto or a number) or none")
    counts = [member.config.epoch_size(len(member.train_windows)) for member in started]
    if differ(counts):
        raise ValueError(f"ensemble members train on {', '.join(map(str, counts))} windows an epoch (their seeds, "
                         f"--validation or --test split the systems differently, or --epoch-windows differs); give "
                         f"every member --max-windows or --epoch-windows {min(counts)}")


def _check_members(configs: list[TrainConfig], folders: list[Path]) -> None:
    if not configs or len(configs) != len(folders):
        raise ValueError(f"an ensemble needs one run folder per member: got {len(configs)} configs and {len(folders)} folders")
    resolved = [folder.resolve() for folder in folders]
    if len(set(resolved)) < len(resolved):
        raise ValueError("ensemble members need run folders of their own; two members were given the same one")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("an ensemble trains in one process; run it without torchrun")
    first = configs[0]
    for number, config in enumerate(configs[1:], start=2):
        differing = [key for key in SHARED_SETTINGS if key != "model" and getattr(config, key) != getattr(first, key)]
        ours, theirs = dataclasses.asdict(first.model), dataclasses.asdict(config.model)
        differing += [f"model.{key}" for key in ours if key != "kernel_bound" and ours[key] != theirs[key]]
        if differing:
            raise ValueError(f"an ensemble trains models of one shape on one kind of window: member {number} differs "
                             f"from member 1 in {', '.join(differing)}; train it on its own")
    if _draws_lift_samples(first.model):
        raise ValueError(f"an ensemble cannot draw the Monte Carlo lift's samples of {first.model.group} inside its joint "
                         "pass (torch.func.vmap); train these models with lift='exact' or each on its own")
    if any(config.compile == "on" for config in configs):
        raise ValueError("an ensemble's joint step is not compiled: give its members compile 'off' or 'auto'")


def _draws_lift_samples(model: ModelConfig) -> bool:
    """Whether ``model`` is a LieConv network whose lift draws random stabilizer samples."""
    if not MODELS.get(model.name).uses_group:
        return False
    try:
        group = get_group(model.group or f"T{model.dim or 2}", model.dim)
        return bool(group.stabilizer_dim) and resolve_lift(group, model.lift, model.lift_samples)[0] == "monte-carlo"
    except ValueError:
        return False  # a bad group or lift: prepare_run says what is wrong with it


def _train_members(started: list[StartedRun], context: Context) -> list[dict[str, Any]]:
    """Rounds of one epoch each for the members furthest behind, until every member is done or diverged."""
    results: dict[int, dict[str, Any]] = {}
    active = [member for member in started if member.run.epoch < member.last_epoch]
    while active:
        behind = min(member.run.epoch for member in active)
        group = [member for member in active if member.run.epoch == behind]
        begun = time.perf_counter()
        losses, failed = _joint_epoch(group, context)
        seconds = time.perf_counter() - begun
        for member in group:
            if id(member) not in failed:
                try:
                    results[id(member)] = end_epoch(member, losses[id(member)], seconds, context)
                except TrainingDiverged as error:
                    failed[id(member)] = error
        for member in group:
            if id(member) in failed:
                log.warning("%s: %s", member.files.folder, failed[id(member)])
                results[id(member)] = {"diverged": str(failed[id(member)])}
        active = [member for member in active if "diverged" not in results.get(id(member), {})
                  and member.run.epoch < member.last_epoch]
    return [results.get(id(member), {}) for member in started]


def _joint_epoch(group: list[StartedRun], context: Context) -> tuple[dict[int, float], dict[int, TrainingDiverged]]:
    """One pass of every member of ``group`` over its own windows, in its own order, each batch's loss
    computed jointly. Returns each member's mean loss and the errors of those that stopped being finite."""
    config, windows = group[0].config, group[0].train_windows
    dtype = DTYPES[config.dtype]
    elements_per_window = (windows.chunk - 1) * math.prod(windows.data.z.shape[2:])
    totals = {id(member): [0.0, 0] for member in group}
    failed: dict[int, TrainingDiverged] = {}
    alive = list(group)
    epoch = group[0].run.epoch + 1
    orders = [member.train_windows.batches(config.batch_size, member.run.shuffle,
                                           member.config.epoch_size(len(member.train_windows))) for member in group]
    for number, indices in enumerate(zip(*orders), start=1):
        batches = [to_device(member.train_windows[index], dtype, context.device) for member, index in zip(group, indices)]
        batches = [batch for member, batch in zip(group, batches) if id(member) not in failed]
        elements = len(indices[0]) * elements_per_window
        values = joint_step([member.run.step for member in alive], batches, scale=1 / elements)
        for member, value in zip(alive, values):
            if not math.isfinite(value):
                failed[id(member)] = member.diverged(f"the training loss is {value} in epoch {epoch}, batch {number}")
                continue
            totals[id(member)][0] += value * elements
            totals[id(member)][1] += elements
        alive = [member for member in alive if id(member) not in failed]
        if not alive:
            break
    for member in alive:
        if not finite_weights(member.run.model):
            failed[id(member)] = member.diverged(f"the weights are not finite after epoch {epoch}")
    return {key: total / max(count, 1) for key, (total, count) in totals.items()}, failed


def joint_step(steps: Sequence[TrainingStep], batches: Sequence[tuple[Tensor, dict[str, Tensor]]], *,
               scale: float) -> list[float]:
    """One optimiser step of every member: ``steps[k]`` (a :class:`hamnet.optimisation.TrainingStep`, all of
    one model configuration and window loss) on ``batches[k] = (z, params)``, batches of one size, the
    losses and gradients computed in one joint pass. Returns each member's loss times ``scale``; a member
    whose loss is not finite is left unchanged (its value says so)."""
    window = steps[0].loss_module
    ensemble = EnsembleModel([step.model for step in steps])
    loss = WindowLoss(ensemble, window.dt, window.method, window.substeps, weight_floor=window.weight_floor)
    z = torch.cat([batch[0] for batch in batches])
    params = {key: torch.cat([batch[1][key] for batch in batches]) for key in batches[0][1]}
    for step in steps:
        step.optimizer.zero_grad(set_to_none=True)
    with ensemble.weights_stacked():
        sums = loss(z, params, groups=len(steps)) * scale
    sums.sum().backward()
    values = sums.detach().tolist()  # the step's one host synchronisation
    for step, value in zip(steps, values):
        if math.isfinite(value):
            step.update(value)
    return values
