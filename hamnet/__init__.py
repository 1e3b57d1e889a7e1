"""hamnet: learned Hamiltonian dynamics with Lie-group-equivariant networks.

The public API is what this module re-exports; everything else may change. Plotting and animation
(``hamnet.plots``, ``hamnet.animate``) import matplotlib, so they are imported on their own:
``from hamnet.plots import plot_conservation``.
"""

from .version import __version__

from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from .data import Split, Windows, split_systems
from .diagnostics import (angular_momentum, bounded_relative_error, conservation_report, drift, energy,
                          linear_momentum)
from .dynamics import HamiltonianField
from .equivariance import equivariance_error
from .evaluation import evaluate, predicted_trajectories
from .groups import GROUPS, SE2, SE3, SO2, SO3, LieGroup, T, Trivial, get_group
from .integrate import ConvergenceError
from .io import Trajectories, TrajectoryFileError, load_trajectories, save_trajectories
from .lieconv import LieConv, LieResNet
from .models import FCHNN, FCNODE, HOGN, MODELS, HLieConv, ModelConfig, build_model
from .rollouts import RolloutError, rollout
from .simulation import generate, simulate
from .training import TrainConfig, train, window_mse

__all__ = [
    "__version__",
    # data and ground truth
    "Trajectories", "TrajectoryFileError", "load_trajectories", "save_trajectories", "generate", "simulate",
    "Windows", "Split", "split_systems",
    # groups and networks
    "LieGroup", "GROUPS", "get_group", "Trivial", "T", "SO2", "SE2", "SO3", "SE3", "LieConv", "LieResNet",
    "equivariance_error",
    # models, dynamics, integration
    "ModelConfig", "MODELS", "build_model", "HLieConv", "FCNODE", "FCHNN", "HOGN", "HamiltonianField",
    "rollout", "RolloutError", "ConvergenceError",
    # training and evaluation
    "TrainConfig", "train", "window_mse", "evaluate", "predicted_trajectories", "CheckpointError",
    "save_checkpoint", "load_checkpoint", "model_from_checkpoint",
    # diagnostics
    "linear_momentum", "angular_momentum", "energy", "drift", "conservation_report", "bounded_relative_error",
]
