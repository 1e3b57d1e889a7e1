"""``hamnet train``: its flags, their checks, and the configuration they make.

Every flag is checked before the data file is read (:data:`TRAIN_RANGES`, and against ``--dtype`` where
its value is used in that precision), a flag the chosen model does not use is refused
(:data:`GROUP_FLAGS`), and the configuration is complete (model, group, integrator) before the run
folder is created, so a refused command leaves nothing behind.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

from .cli_common import InputError, check_in_dtype, check_model_memory, check_range, check_seed, refuse_given
from .io import load_trajectories
from .models import MODELS, ModelConfig
from .training import TrainConfig, train

__all__ = ["GROUP_FLAGS", "TRAIN_RANGES", "add_commands", "run_train", "train_config_from_args"]


def add_commands(commands) -> None:
    """Add ``hamnet train`` to the subcommands."""
    parser = commands.add_parser(
        "train", help="train a model on a trajectory file",
        description="Train a learned Hamiltonian (or the FC-NODE baseline) on windows of a trajectory file, "
        "integrating it over each window and minimising the squared error. Writes RUN_DIR/config.json, "
        "metrics.jsonl, last.pt and best.pt. Under `torchrun --nproc_per_node=K` the same command trains with "
        "DistributedDataParallel.",
    )
    parser.add_argument("--data", required=True, help="training trajectory file (.npz from hamnet generate)")
    parser.add_argument("--out", required=True, help="run folder to create (or to continue, with --resume)")
    model, m = parser.add_argument_group("model"), ModelConfig
    model.add_argument("--model", default=m.name, help=f"one of {', '.join(MODELS)} or one a --plugin registers "
                       f"(default: {m.name})")
    model.add_argument("--group", default=None,
                       help="hlieconv only: symmetry group, one of Trivial, T2, T3, SO2, SE2, SO3, SE3 or one a "
                       "--plugin registers (default: translations of the data's dimension, T2 or T3)")
    model.add_argument("--width", type=int, default=m.width, help=f"hidden width (default: {m.width})")
    model.add_argument("--depth", type=int, default=m.depth,
                       help=f"hidden layers / residual blocks (default: {m.depth})")
    model.add_argument("--neighbours", type=int, default=m.neighbours,
                       help="hlieconv only: k nearest neighbours in group distance (default: all particles)")
    model.add_argument("--lift", default=m.lift, choices=("exact", "monte-carlo"),
                       help="hlieconv only: 'exact' (one lift per point, kernel inputs invariant under the stabilizer: "
                       "invariant to round-off) or 'monte-carlo' (the paper's sampled lift, invariant in "
                       "distribution) (default: exact)")
    model.add_argument("--lift-samples", type=int, default=m.lift_samples,
                       help="hlieconv only, with --lift monte-carlo: lift samples per point (default: the group's)")
    model.add_argument("--kernel-bound", default=None, metavar="auto|none|C",
                       help="hlieconv only: kernel inputs pass through C tanh(x / C), so the learned potential is "
                       "bounded far from the data and a rollout that leaves the data cannot run away; 'auto' sets C "
                       f"to {TrainConfig.kernel_bound_factor:g} times the largest kernel input in the training windows, "
                       "'none' leaves the kernel unbounded (default: auto)")
    opt, t = parser.add_argument_group("optimisation"), TrainConfig
    opt.add_argument("--epochs", type=int, default=t.epochs, help=f"epochs over the training windows (default: {t.epochs})")
    opt.add_argument("--batch-size", type=int, default=t.batch_size,
                     help=f"windows per global batch (default: {t.batch_size})")
    opt.add_argument("--lr", type=float, default=t.lr,
                     help=f"Adam learning rate, decayed by a cosine (default: {t.lr:g})")
    opt.add_argument("--weight-decay", type=float, default=t.weight_decay,
                     help=f"Adam weight decay (default: {t.weight_decay:g})")
    opt.add_argument("--chunk", type=int, default=t.chunk,
                     help=f"states per training window: the initial one and chunk - 1 targets (default: {t.chunk})")
    opt.add_argument("--method", default=t.method,
                     help="fixed-step integrator over each window (default: auto, the one the model's rollouts use: "
                     "leapfrog for separable Hamiltonians, rk4 otherwise); see docs/integrators.md")
    opt.add_argument("--dtype", default=t.dtype, choices=("float32", "float64"),
                     help=f"training precision (default: {t.dtype})")
    opt.add_argument("--seed", type=int, default=t.seed, help=f"seed of weights, split and shuffling (default: {t.seed})")
    opt.add_argument("--validation", type=float, default=t.validation,
                     help=f"fraction of systems for validation (default: {t.validation:g})")
    opt.add_argument("--test", type=float, default=t.test,
                     help=f"fraction of systems held out for testing (default: {t.test:g})")
    opt.add_argument("--max-windows", type=int, default=t.max_windows,
                     help="train on a seeded subset of this many windows (default: every window of the training systems)")
    opt.add_argument("--substeps", default=str(t.substeps), metavar="K|auto",
                     help="integration steps per interval between stored states, in training and in the model's "
                     "rollouts (recorded in the checkpoint); 'auto' chooses from the data's closest approaches, for "
                     "frames stored far apart (default: 1)")
    opt.add_argument("--warmup", type=float, default=t.warmup,
                     help="fraction of the steps over which the learning rate rises to --lr (default: 0)")
    opt.add_argument("--clip-grad", type=float, default=t.clip_grad, help="largest gradient norm (default: unclipped)")
    opt.add_argument("--select", default=t.select, choices=("window", "rollout"),
                     help="what picks best.pt: the validation window MSE, or the position MSE of the validation "
                     "systems rolled out --select-steps steps (default: window)")
    opt.add_argument("--select-steps", type=int, default=t.select_steps,
                     help="with --select rollout: steps of the selection rollouts (default: the whole trajectory)")
    opt.add_argument("--init-from", default=t.init_from,
                     help="start from this checkpoint's weights (a path or a pretrained name; the same model settings), "
                     "e.g. to finish a run with longer --chunk windows (default: fresh weights)")
    run = parser.add_argument_group("run")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    run.add_argument("--allow-rollout", action="store_true",
                     help="accept a rollout file (a model's output) as training data, without the systems that "
                     "diverged in it (default: refused; a model's output is not ground truth)")
    run.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_train)


def train_config_from_args(args: argparse.Namespace, data) -> TrainConfig:
    factor, kernel_bound = _kernel_bound(args.kernel_bound or "auto", MODELS.get(args.model).uses_group)
    per_particle = sorted(k for k, v in data.params.items() if v.dim() == 2)
    feature_keys = tuple(["m"] + [k for k in per_particle if k != "m"])
    model = ModelConfig(name=args.model, n_particles=data.n_particles, dim=data.dim, feature_keys=feature_keys,
                        width=args.width, depth=args.depth, group=args.group, neighbours=args.neighbours,
                        lift_samples=args.lift_samples, lift=args.lift, kernel_bound=kernel_bound)
    return TrainConfig(model=model, kernel_bound_factor=factor, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, chunk=args.chunk, method=args.method, dtype=args.dtype,
                       seed=args.seed, validation=args.validation, test=args.test, max_windows=args.max_windows,
                       init_from=args.init_from, allow_rollout=args.allow_rollout, substeps=_substeps(args.substeps),
                       warmup=args.warmup, clip_grad=args.clip_grad, select=args.select,
                       select_steps=args.select_steps)


def _substeps(value: str) -> int | str:
    """``--substeps`` as ``TrainConfig.substeps``: a positive integer or ``"auto"``."""
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1 or int(value) > 10**4:
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
                ("--max-windows", 1, None), ("--width", 1, None), ("--depth", 1, 1000), ("--neighbours", 1, None),
                ("--lift-samples", 1, 10**4), ("--warmup", 0, 0.99), ("--clip-grad", 1e-300, 1e300),
                ("--select-steps", 1, None))


#: flags only a model with a group (HLieConv: ``uses_group``) uses; given to another model, refused
GROUP_FLAGS = ("--group", "--neighbours", "--lift", "--lift-samples", "--kernel-bound")


def run_train(args: argparse.Namespace) -> None:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: this machine has no CUDA device; use --device cpu")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise InputError(f"--device must be cpu or cuda, got {args.device!r}")
    check_seed(args.seed)
    for flag, low, high in TRAIN_RANGES:
        check_range(flag, getattr(args, flag[2:].replace("-", "_")), low, high)
    if not MODELS.get(args.model).uses_group:  # an unknown model fails here, before the data is read
        refuse_given(args, GROUP_FLAGS, f"{args.model} uses no group ({', '.join(GROUP_FLAGS)} are for hlieconv)")
    _, bound = _kernel_bound(args.kernel_bound or "auto", True)
    _substeps(args.substeps)
    if args.select != "rollout":
        refuse_given(args, ("--select-steps",), "--select-steps is the length of the rollouts of --select rollout")
    for flag, value, zero in (("--lr", args.lr, False), ("--weight-decay", args.weight_decay, True),
                              ("--kernel-bound", bound, False)):
        check_in_dtype(flag, value, args.dtype, zero=zero)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a file; give a run folder to create (or to continue with --resume)")
    data = load_trajectories(args.data)
    config = train_config_from_args(args, data)  # an unknown group or integrator fails here, before any write
    check_model_memory(config.model, config.dtype)
    metrics = train(config, args.data, args.out, resume=args.resume, device=args.device, progress=not args.quiet)
    if metrics and os.environ.get("RANK", "0") == "0":  # one report, not one per torchrun process
        print(f"trained {config.model.name} to epoch {metrics['epoch']}: train loss {metrics['train_loss']:.4g}, "
              f"validation MSE {metrics['validation_mse']:.4g}; run in {args.out}")
