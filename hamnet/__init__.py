"""hamnet: learned Hamiltonian dynamics with Lie-group-equivariant networks.

The public API is what this module re-exports: the nouns and verbs of the data flow
(generate -> train -> rollout -> evaluate) and the registries that extend it. Everything else lives
in a submodule of its own name, importable as such (``hamnet.groups``, ``hamnet.lieconv``,
``hamnet.training``, ...); ``docs/architecture.md`` maps them. Plotting and animation
(``hamnet.plots``, ``hamnet.animate``) import matplotlib, so they are imported on their own:
``from hamnet.plots import plot_conservation``.
"""

from .checkpoint import CheckpointError, model_from_checkpoint
from .diagnostics import conservation_report
from .dynamics import HamiltonianField
from . import egnn  # noqa: F401  (registers the EGNN models, egnn-h and egnn-node)
from .equivariance import assert_equivariant, assert_invariant, equivariance_error, invariance_error
from .evaluation import evaluate
from .fitting import fit
from .groups import LieGroup, get_group, register_group
from .integrate import ConvergenceError, Integrator, register_integrator
from .io import Trajectories, TrajectoryFileError, load_trajectories, save_trajectories
from .lieconv import LieResNet
from .models import ModelConfig, ParticleModel, build_model, register_model
from .readers import import_trajectories
from .rollouts import RolloutError, rollout
from .simulation import generate
from .training import TrainConfig, train
from .version import __version__

__all__ = [
    "__version__",
    # data and ground truth
    "Trajectories", "load_trajectories", "save_trajectories", "generate", "TrajectoryFileError", "import_trajectories",
    # symmetry
    "LieGroup", "get_group", "register_group", "LieResNet", "invariance_error", "assert_invariant",
    "assert_equivariant", "equivariance_error",
    # models and their dynamics
    "ModelConfig", "ParticleModel", "build_model", "register_model", "HamiltonianField",
    # integration
    "rollout", "Integrator", "register_integrator", "RolloutError", "ConvergenceError",
    # training and evaluation
    "TrainConfig", "train", "fit", "model_from_checkpoint", "CheckpointError", "evaluate", "conservation_report",
]
