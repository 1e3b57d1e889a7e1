"""``hamnet train``: its flags, its settings files, their checks, and the configuration they make.

Every setting is checked before the data file is read (:data:`TRAIN_RANGES`, and against ``--dtype``
where its value is used in that precision), a flag the chosen model does not use is refused
(:data:`GROUP_FLAGS`), and the configuration is complete (model, group, integrator) before the run
folder is created, so a refused command leaves nothing behind.

Settings files (:mod:`hamnet.settings_file`): ``--config FILE`` reads every setting from a TOML file,
``--print-config`` writes the settings the command line and file give, and every run folder keeps
its own as ``config.toml``. The rule: a flag given on the command line overrides the file's value
for that setting; a setting neither gives keeps its default. :data:`FLAG_KEYS` maps each flag to
its key in the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import torch

from .cli_common import InputError, check_in_dtype, check_model_memory, check_range, check_seed, refuse_given
from .config import config_from_dict
from .io import load_trajectories
from .models import MODELS, ModelConfig
from .settings_file import RunSettings, read_settings, settings_text
from .ensemble import train_ensemble
from .training import TrainConfig, TrainingDiverged, train
from .version import __version__

__all__ = ["FLAG_KEYS", "GROUP_FLAGS", "TRAIN_RANGES", "add_commands", "run_train", "train_config_from_args"]

def add_commands(commands) -> None:
    """Add ``hamnet train`` to the subcommands."""
    parser = commands.add_parser(
        "train", help="train a model on a trajectory file",
        description="Train a learned Hamiltonian (or the FC-NODE baseline) on windows of a trajectory file, "
        "integrating it over each window and minimising the squared error. Writes RUN_DIR/config.json, "
        "config.toml (every setting, for --config), metrics.jsonl, last.pt and best.pt. The model's dimension, "
        "particle count and features come from the data. A flag given on the command line overrides the "
        "--config file's value. Under `torchrun --nproc_per_node=K` the same command trains with "
        "DistributedDataParallel.",
    )
    parser.add_argument("--data", default=None,
                        help="training trajectory file (.npz from hamnet generate or hamnet import); required, "
                        "here or in the --config file")
    parser.add_argument("--out", default=None,
                        help="run folder to create (or to continue, with --resume); required, here or in the "
                        "--config file")
    files = parser.add_argument_group("settings files")
    files.add_argument("--config", default=None, metavar="FILE.toml",
                       help="read every setting from this TOML file (one that --print-config wrote, or a run "
                       "folder's config.toml, which repeats that run); a flag given here overrides the file's value")
    files.add_argument("--print-config", action="store_true",
                       help="print the settings that the flags and --config give as a TOML file, and stop (nothing "
                       "is read or written): hamnet train --print-config ... > run.toml")
    model, m = parser.add_argument_group("model"), ModelConfig
    model.add_argument("--model", default=None, help=f"one of {', '.join(MODELS)} or one a --plugin registers "
                       f"(default: {m.name})")
    model.add_argument("--group", default=None,
                       help="hlieconv only: symmetry group, one of Trivial, T2, T3, SO2, SE2, SO3, SE3 or one a "
                       "--plugin registers (default: translations of the data's dimension, T2 or T3)")
    model.add_argument("--width", type=int, default=None, help=f"hidden width (default: {m.width})")
    model.add_argument("--depth", type=int, default=None,
                       help=f"hidden layers / residual blocks (default: {m.depth})")
    model.add_argument("--neighbours", type=int, default=None,
                       help="hlieconv only: k nearest neighbours in group distance (default: all particles)")
    model.add_argument("--lift", default=None, choices=("exact", "monte-carlo"),
                       help="hlieconv only: 'exact' (one lift per point, kernel inputs invariant under the stabilizer: "
                       "invariant to round-off) or 'monte-carlo' (the paper's sampled lift, invariant in "
                       "distribution) (default: exact)")
    model.add_argument("--lift-samples", type=int, default=None,
                       help="hlieconv only, with --lift monte-carlo: lift samples per point (default: the group's)")
    model.add_argument("--coupling", default=None, metavar="affine|KEY|none",
                       help="hlieconv only: scale every pair's interaction by c_i c_j, with c a learned affine "
                       "function of each particle's features ('affine') or one of its parameters itself (KEY, "
                       "e.g. k for springs' k_i k_j), so a particle with c = 0 drops out of every pair; over "
                       "translation-invariant pairs (SE2, SE3, T2, T3) it then feels no force; 'none' turns off "
                       "a --config file's coupling (default: none)")
    model.add_argument("--kernel-bound", default=None, metavar="auto|none|C",
                       help="hlieconv only: kernel inputs pass through C tanh(x / C), so the learned potential is "
                       "bounded far from the data and a rollout that leaves the data cannot run away; 'auto' sets C "
                       f"to {TrainConfig.kernel_bound_factor:g} times the largest kernel input in the training windows, "
                       "'none' leaves the kernel unbounded (default: auto)")
    opt, t = parser.add_argument_group("optimisation"), TrainConfig
    opt.add_argument("--epochs", type=int, default=None, help=f"epochs over the training windows (default: {t.epochs})")
    opt.add_argument("--batch-size", type=int, default=None,
                     help=f"windows per global batch (default: {t.batch_size})")
    opt.add_argument("--lr", type=float, default=None,
                     help=f"Adam learning rate, decayed by a cosine (default: {t.lr:g})")
    opt.add_argument("--weight-decay", type=float, default=None,
                     help=f"Adam weight decay (default: {t.weight_decay:g})")
    opt.add_argument("--chunk", type=int, default=None,
                     help=f"states per training window: the initial one and chunk - 1 targets (default: {t.chunk})")
    opt.add_argument("--method", default=None,
                     help="fixed-step integrator over each window (default: auto, the one the model's rollouts use: "
                     "leapfrog for separable Hamiltonians, rk4 otherwise); see docs/integrators.md")
    opt.add_argument("--dtype", default=None, choices=("float32", "float64"),
                     help=f"training precision (default: {t.dtype})")
    opt.add_argument("--seed", type=int, default=None, help=f"seed of weights, split and shuffling (default: {t.seed})")
    opt.add_argument("--validation", type=float, default=None,
                     help=f"fraction of systems for validation (default: {t.validation:g})")
    opt.add_argument("--test", type=float, default=None,
                     help=f"fraction of systems held out for testing (default: {t.test:g})")
    opt.add_argument("--max-windows", type=int, default=None,
                     help="train on a seeded subset of this many windows (default: every window of the training systems)")
    opt.add_argument("--epoch-windows", type=int, default=None, metavar="N",
                     help="each epoch trains on N of the training windows, drawn afresh every epoch: more of a large "
                     "set seen at one epoch's cost (default: every training window each epoch)")
    opt.add_argument("--substeps", default=None, metavar="K|auto",
                     help="integration steps per interval between stored states, in training and in the model's "
                     "rollouts (recorded in the checkpoint); 'auto' chooses from the data's closest approaches, for "
                     "frames stored far apart (default: 1)")
    opt.add_argument("--warmup", type=float, default=None,
                     help="fraction of the steps over which the learning rate rises to --lr (default: 0)")
    opt.add_argument("--clip-grad", type=float, default=None, help="largest gradient norm (default: unclipped)")
    opt.add_argument("--rollback", type=float, default=None, metavar="R",
                     help="undo an epoch whose validation MSE is more than R times the lowest so far, or that stops "
                     "being finite: back to the last epoch's weights with half the learning rate, instead of a jump "
                     "the run may not recover from or the run ending (default: off)")
    opt.add_argument("--rollback-train", type=float, default=None, metavar="T",
                     help="undo, as --rollback does, an epoch whose mean training loss is more than T times the lowest "
                     "so far: damage the validation MSE may barely show yet (default: off)")
    opt.add_argument("--weight-floor", type=float, default=None, metavar="F",
                     help="weigh each particle's error in a window by the inverse of the force it feels there, "
                     "floored at F^2 times the window's mean, so weakly held particles are fitted as closely as "
                     "the rest, relative to their forces; F in (0, 1] (default: every particle alike)")
    opt.add_argument("--select", default=None, choices=("window", "rollout"),
                     help="what picks best.pt: the validation window MSE, or the position MSE of the validation "
                     "systems rolled out --select-steps steps (default: window)")
    opt.add_argument("--select-steps", type=int, default=None,
                     help="with --select rollout: steps of the selection rollouts (default: the whole trajectory)")
    opt.add_argument("--compile", default=None, choices=("auto", "on", "off"),
                     help="compile the training step with torch.compile: the same numbers to float32 round-off, "
                     "faster after a compilation of minutes; auto compiles where measured faster, CPU runs of at "
                     "least 5,000 steps (default: off)")
    opt.add_argument("--init-from", default=None,
                     help="start from this checkpoint's weights (a path or a pretrained name; the same model settings), "
                     "e.g. to finish a run with longer --chunk windows (default: fresh weights)")
    run = parser.add_argument_group("run")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    run.add_argument("--ensemble-seeds", type=int, nargs="+", default=None, metavar="SEED",
                     help="train one member per seed, all in this process with joint steps (hamnet.ensemble: each "
                     "member as if trained alone, to round-off), into --out/seedSEED (a --config file's seed is "
                     "replaced); pays on a GPU, not on a CPU")
    run.add_argument("--allow-rollout", action="store_true",
                     help="accept a rollout file (a model's output) as training data, without the systems that "
                     "diverged in it (default: refused; a model's output is not ground truth)")
    run.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write each epoch's metrics as TensorBoard scalars into the run folder, beside "
                     "metrics.jsonl (needs pip install 'hamnet[tensorboard]'; watch with tensorboard --logdir "
                     "RUNS_FOLDER); changes nothing the run computes")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_train)


#: each flag that is a setting, and its table and key in a settings file; --kernel-bound sets two keys
#: (:func:`_kernel_bound`), and a flag missing here is no setting (--resume, --quiet, --config, ...)
FLAG_KEYS = {
    "--data": ("run", "data"), "--out": ("run", "out"), "--device": ("run", "device"),
    "--tensorboard": ("run", "tensorboard"), "--model": ("model", "name"), "--group": ("model", "group"),
    "--width": ("model", "width"), "--depth": ("model", "depth"), "--neighbours": ("model", "neighbours"),
    "--lift": ("model", "lift"), "--lift-samples": ("model", "lift_samples"), "--coupling": ("model", "coupling"),
    **{f"--{key.replace('_', '-')}": ("train", key)
       for key in ("epochs", "batch_size", "lr", "weight_decay", "chunk", "method", "dtype", "seed", "validation",
                   "test", "max_windows", "epoch_windows", "substeps", "warmup", "clip_grad", "select",
                   "select_steps", "init_from", "allow_rollout", "compile", "weight_floor", "rollback",
                   "rollback_train")},
}


def train_config_from_args(args: argparse.Namespace, data=None) -> TrainConfig:
    """The TrainConfig the flags and the ``--config`` file give (flags first), with what the model leaves
    to the data taken from ``data`` (a :class:`hamnet.io.Trajectories`; None: left open)."""
    config = config_from_dict(TrainConfig, _Settings.of(args).train, "train config")
    return config if data is None else dataclasses.replace(config, model=config.model.for_data(data))


@dataclasses.dataclass
class _Settings:
    """The ``[train]`` values (``[model]``'s under ``"model"``) and ``[run]`` values that the flags and the
    ``--config`` file give, flags first, and what gave each: ``origin[(table, key)]`` is the flag or
    ``FILE [table] key``, for the error that names it. Settings neither gives are absent (defaults)."""

    train: dict[str, Any]
    run: dict[str, Any]
    origin: dict[tuple[str, str], str]

    @classmethod
    def of(cls, args: argparse.Namespace) -> "_Settings":
        train, run, origin = {"model": {}}, {}, {}
        if args.config is not None:
            train, settings = read_settings(args.config, TrainConfig)
            run = {key: value for key, value in dataclasses.asdict(settings).items() if value is not None}
            for table, values in (("train", train), ("model", train["model"]), ("run", run)):
                origin.update({(table, key): f"{args.config} [{table}] {key}" for key in values if key != "model"})
        settings = cls({**train, "model": dict(train["model"])}, run, origin)
        for flag, (table, key) in FLAG_KEYS.items():
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None and value is not False:  # given (a store_true flag given is True)
                if flag == "--substeps":
                    value = _substeps(value)
                settings.set(table, key, None if (flag, value) == ("--coupling", "none") else value, flag)
        uses_group = MODELS.get(settings.get("model", "name", ModelConfig.name)).uses_group  # unknown: fails here
        bound_keys = {("train", "kernel_bound_factor"), ("model", "kernel_bound")}
        if args.kernel_bound is not None or not bound_keys & set(origin):
            factor, bound = _kernel_bound(args.kernel_bound or "auto", uses_group)
            settings.set("train", "kernel_bound_factor", factor, "--kernel-bound")
            settings.set("model", "kernel_bound", bound, "--kernel-bound")
        return settings

    def set(self, table: str, key: str, value: Any, origin: str) -> None:
        {"train": self.train, "model": self.train["model"], "run": self.run}[table][key] = value
        self.origin[(table, key)] = origin

    def get(self, table: str, key: str, default: Any = None) -> Any:
        return {"train": self.train, "model": self.train["model"], "run": self.run}[table].get(key, default)

    def given(self, flag: str) -> tuple[str, Any] | None:
        """``(what gave it, value)`` for the setting of ``flag``, or None where neither flag nor file gives it."""
        where = self.origin.get(FLAG_KEYS[flag])
        return None if where is None else (where, self.get(*FLAG_KEYS[flag]))


def _substeps(value: str) -> int | str:
    """``--substeps`` as ``TrainConfig.substeps``: a positive integer or ``"auto"``."""
    if value == "auto":
        return value
    if not (value.isascii() and value.isdigit()) or int(value) < 1 or int(value) > 10**4:
        raise InputError(f"--substeps must be auto or an integer from 1 to 10000, got {value!r}")
    return int(value)


def _kernel_bound(value: str, has_kernel: bool) -> tuple[float | None, float | None]:
    """``--kernel-bound`` as ``(TrainConfig.kernel_bound_factor, ModelConfig.kernel_bound)``."""
    if value == "auto":
        return (TrainConfig.kernel_bound_factor if has_kernel else None), None
    if value == "none":
        return None, None
    try:
        bound = float(value)
    except ValueError:
        bound = math.nan
    if not (math.isfinite(bound) and bound > 0):
        raise InputError(f"--kernel-bound must be auto, none or a positive number, got {value!r}")
    return None, bound


#: flags of `hamnet train` and their valid ranges, checked before anything is read (a config's own check
#: would name the field, not the flag); --lr and --weight-decay are also checked against --dtype
TRAIN_RANGES = (("--epochs", 1, None), ("--batch-size", 1, None), ("--lr", 1e-300, 1e300),
                ("--weight-decay", 0, 1e300), ("--chunk", 2, None), ("--validation", 0, 0.99), ("--test", 0, 0.99),
                ("--max-windows", 1, None), ("--epoch-windows", 1, None), ("--width", 1, None), ("--depth", 1, 1000),
                ("--neighbours", 1, None),
                ("--lift-samples", 1, 10**4), ("--warmup", 0, 0.99), ("--clip-grad", 1e-300, 1e300),
                ("--select-steps", 1, None), ("--weight-floor", 1e-300, 1))


#: flags only a model with a group (HLieConv: ``uses_group``) uses; given to another model, refused
GROUP_FLAGS = ("--group", "--neighbours", "--lift", "--lift-samples", "--kernel-bound", "--coupling")


#: the comment at the top of what --print-config writes
PRINT_HEADER = f"""hamnet train settings (hamnet {__version__}), for hamnet train --config FILE; a flag
given on the command line overrides the value here. [train] holds hamnet.TrainConfig's fields,
[model] hamnet.ModelConfig's, [run] the data, the run folder, the device and TensorBoard.
"none" stands for None: for n_particles, dim and feature_keys, taken from the data; for group,
the translations of the data's dimension. Relative paths are from the working directory."""


def run_train(args: argparse.Namespace) -> None:
    settings = _Settings.of(args)  # a bad --config file, an unknown --model or a bad --substeps fails here
    _check(args, settings)
    config = config_from_dict(TrainConfig, settings.train, "train config")  # an unknown group or integrator too
    run = RunSettings(**settings.run)
    if args.print_config:
        print(settings_text(config, run, PRINT_HEADER), end="")
        return
    for flag, value in (("--data", run.data), ("--out", run.out)):
        if value is None:
            raise InputError(f"{flag} is required: give it on the command line or as {flag[2:]} in the [run] table of "
                             "the --config file")
    if Path(run.out).exists() and not Path(run.out).is_dir():
        raise InputError(f"--out {run.out} is a file; give a run folder to create (or to continue with --resume)")
    data = load_trajectories(run.data)
    config = dataclasses.replace(config, model=config.model.for_data(data))  # a group of another dimension fails here
    check_model_memory(config.model, config.dtype)
    del data  # train() reads the file itself: this float64 copy would otherwise be held for the whole run
    if args.ensemble_seeds is not None:
        _train_ensemble(args, config, run)
        return
    metrics = train(config, run.data, run.out, resume=args.resume, device=run.device, progress=not args.quiet,
                    tensorboard=run.tensorboard)
    if metrics and os.environ.get("RANK", "0") == "0":  # one report, not one per torchrun process
        print(f"trained {config.model.name} to epoch {metrics['epoch']}: train loss {metrics['train_loss']:.4g}, "
              f"validation MSE {metrics['validation_mse']:.4g}; run in {run.out}")


def _train_ensemble(args: argparse.Namespace, config: TrainConfig, run: RunSettings) -> None:
    """``--ensemble-seeds``: one member per seed in ``--out/seedSEED``; a member that diverged is its line on
    stderr and exit status 1 once the others are done."""
    if any((Path(run.out) / name).exists() for name in ("config.json", "last.pt")):
        raise InputError(f"--out {run.out} holds a run; --ensemble-seeds writes its members into subfolders of a new "
                         "folder (or of an ensemble's, with --resume): choose another --out")
    folders = [Path(run.out) / f"seed{seed}" for seed in args.ensemble_seeds]
    configs = [dataclasses.replace(config, seed=seed) for seed in args.ensemble_seeds]
    results = train_ensemble(configs, run.data, folders, resume=args.resume, device=run.device)
    for folder, metrics in zip(folders, results):
        if "diverged" not in metrics and metrics:
            print(f"trained {config.model.name} to epoch {metrics['epoch']}: train loss {metrics['train_loss']:.4g}, "
                  f"validation MSE {metrics['validation_mse']:.4g}; run in {folder}")
    failed = [f"{folder}: {metrics['diverged']}" for folder, metrics in zip(folders, results) if "diverged" in metrics]
    if failed:
        raise TrainingDiverged("; ".join(failed))


def _check(args: argparse.Namespace, settings: _Settings) -> None:
    """Check every setting given, by flag or file, before anything is read, naming where it came from."""
    device = settings.get("run", "device", RunSettings.device)
    where = settings.origin.get(FLAG_KEYS["--device"], "--device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"{where} {device}: this machine has no CUDA device; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"{where} must be cpu or cuda, got {device!r}")
    if args.seed is not None:
        check_seed(args.seed)
    if args.ensemble_seeds is not None:
        refuse_given(args, ("--seed", "--tensorboard", "--print-config"), "--ensemble-seeds gives each member its seed "
                     "and writes no TensorBoard files or settings of its own")
        if settings.get("run", "tensorboard"):  # from a --config file (a seed there is each member's to replace)
            raise InputError(f"{settings.origin[('run', 'tensorboard')]}: --ensemble-seeds writes no TensorBoard files; "
                             "set it false")
        for seed in args.ensemble_seeds:
            check_seed(seed)
        if len(set(args.ensemble_seeds)) < len(args.ensemble_seeds):
            raise InputError(f"--ensemble-seeds {' '.join(map(str, args.ensemble_seeds))}: each seed once")
        if settings.get("train", "compile", TrainConfig.compile) == "on":
            raise InputError("--ensemble-seeds trains with joint steps, which are not compiled: leave out --compile on")
    for flag, low, high in (("--seed", 0, 2**63 - 1), *TRAIN_RANGES):
        given = settings.given(flag)
        if given is not None:
            check_range(*given, low, high)
    name = settings.get("model", "name", ModelConfig.name)
    if not MODELS.get(name).uses_group:
        refuse_given(args, GROUP_FLAGS, f"{name} uses no group ({', '.join(GROUP_FLAGS)} are for hlieconv)")
    if settings.get("train", "select", TrainConfig.select) != "rollout":
        refuse_given(args, ("--select-steps",), "--select-steps is the length of the rollouts of --select rollout")
    dtype = settings.get("train", "dtype", TrainConfig.dtype)
    for table, key, zero in (("train", "lr", False), ("train", "weight_decay", True), ("model", "kernel_bound", False)):
        if (table, key) in settings.origin:
            check_in_dtype(settings.origin[(table, key)], settings.get(table, key), dtype, zero=zero)
