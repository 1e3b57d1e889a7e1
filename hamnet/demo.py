"""The end-to-end demonstration behind ``make demo`` / ``hamnet demo``.

Generate springs, train HLieConv with SO(2) symmetry and the fully connected neural-ODE baseline
briefly on the same windows, roll both out far past the training windows (HLieConv with leapfrog,
the baseline with rk4, both in float64), and write the conservation plot, the rollout-error plot
and an animation, then a table of the numbers. Settings are chosen to run in a few minutes on two
cores while still telling the story honestly: the learned models are undertrained, so their
trajectories drift from the truth, but the equivariant Hamiltonian keeps both momenta to
round-off whatever its accuracy, while the baseline's momenta wander.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import PRETRAINED_PREFIX, made_from, model_from_checkpoint, pretrained_models
from .data import DEFAULT_CHUNK, Windows
from .diagnostics import bounded_relative_error, conservation_report
from .evaluation import geometric_mean, valid_prediction_time
from .io import Trajectories, load_trajectories, save_trajectories
from .loss import window_mse
from .models import ModelConfig
from .paths import atomic_path, check_output_folder
from .rollouts import predicted_trajectories
from .simulation import generate
from .systems import Springs
from .training import TrainConfig, train

log = logging.getLogger(__name__)

#: the file that marks a folder as the demo's own, so a later demo may replace what is in it
DEMO_MARKER = ".hamnet-demo"
#: the shipped model the demo rolls out beside the ones it trains
PRETRAINED_MODEL = "springs-so2"


@dataclass(frozen=True)
class DemoSettings:
    """How big the demo is. ``quick`` shrinks everything for tests and CI."""

    train_systems: int = 250
    test_systems: int = 16
    train_steps: int = 100
    rollout_steps: int = 2000
    max_windows: int = 3000
    epochs: int = 10
    batch_size: int = 100
    lr: float = 3e-3
    frames: int = 150

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(train_systems=40, test_systems=4, train_steps=20, rollout_steps=200, max_windows=200,
                   epochs=1, frames=10)


def demo_models(n_particles: int, dim: int) -> dict[str, ModelConfig]:
    common = {"n_particles": n_particles, "dim": dim, "feature_keys": ("m", "k")}
    return {
        "hlieconv-SO2": ModelConfig(name="hlieconv", group="SO2", width=64, depth=2, **common),
        "fc-node": ModelConfig(name="fc-node", width=128, depth=3, **common),
    }


def run_demo(out: str | Path, *, seed: int = 0, settings: DemoSettings = DemoSettings(),
             progress: bool = True) -> dict:
    """Run the whole story into folder ``out``; returns the summary table as a dict.

    ``out`` must be new, empty, or an earlier demo's (marked by ``DEMO_MARKER``): the demo replaces its
    own files there and refuses a folder holding anything else, so nothing of the user's is touched.
    """
    out = check_output_folder(out, marker=DEMO_MARKER)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by hamnet demo; the demo may replace the files in this folder\n")
    system, dt = Springs(), 0.01
    train_file, test_file = out / "springs-train.npz", out / "springs-test.npz"
    log.info("generating %d training and %d test systems", settings.train_systems, settings.test_systems)
    save_trajectories(train_file, generate(system, n_systems=settings.train_systems, steps=settings.train_steps,
                                           dt=dt, seed=seed, progress=progress))
    save_trajectories(test_file, generate(system, n_systems=settings.test_systems, steps=settings.rollout_steps,
                                          dt=dt, seed=seed + 1, progress=progress))
    truth = load_trajectories(test_file)

    rollouts, table = {}, {}
    for name, model_config in demo_models(system.n_particles, system.dim).items():
        run = out / "runs" / name
        shutil.rmtree(run, ignore_errors=True)  # the demo's own folder: every demo trains afresh
        config = TrainConfig(model=model_config, epochs=settings.epochs, batch_size=settings.batch_size,
                             lr=settings.lr, seed=seed, max_windows=settings.max_windows, validation_windows=200)
        log.info("training %s", name)
        train(config, train_file, run, progress=progress)
        model, state = model_from_checkpoint(run / "best.pt")
        metrics = {"train_seconds": sum(json.loads(line)["seconds"] for line in (run / "metrics.jsonl").open())}
        # the demo shows how far a baseline runs away, so a diverging rollout is kept, not refused
        predicted = predicted_trajectories(model, truth, model_config=state["model_config"], keep_diverged=True,
                                           sources=made_from(run / "best.pt", test_file), region=state["data"]["region"])
        save_trajectories(out / f"rollout-{name}.npz", predicted)
        rollouts[name] = predicted
        table[name] = _scores(model, truth, predicted, metrics)
    if PRETRAINED_MODEL in pretrained_models():  # what a fully trained hamnet model does on the same systems
        log.info("rolling out the pretrained %s", PRETRAINED_MODEL)
        shipped = PRETRAINED_PREFIX + PRETRAINED_MODEL  # never a file of that name in the working folder
        model, state = model_from_checkpoint(shipped)
        predicted = predicted_trajectories(model, truth, model_config=state["model_config"], keep_diverged=True,
                                           sources=made_from(shipped, test_file))
        save_trajectories(out / f"rollout-{PRETRAINED_MODEL}.npz", predicted)
        rollouts[f"pretrained {PRETRAINED_MODEL}"] = predicted
        table[f"pretrained {PRETRAINED_MODEL}"] = _scores(model, truth, predicted, {"train_seconds": None})
    table["truth (yoshida8)"] = _scores(None, truth, truth, {})

    _figures(out, truth, rollouts, settings)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps({"settings": dataclasses.asdict(settings), "seed": seed, "models": table},
                                  indent=2) + "\n")
    return table


def _scores(model, truth: Trajectories, predicted: Trajectories, metrics: dict) -> dict:
    report = conservation_report(predicted.z, truth.system().hamiltonian, truth.params)
    scores = {name: float(values.max()) for name, values in report.items()}
    scores["method"] = predicted.meta.get("method", truth.meta.get("integrator"))
    if "left_region" in predicted.meta:  # systems whose rollout left the model's training region
        scores["left_region"] = len(predicted.meta["left_region"])
    if model is not None:
        windows = Windows(truth, DEFAULT_CHUNK, max_windows=500, seed=0)
        scores["window_mse"] = window_mse(model, windows, float(truth.meta["dt"]))["mse"]
        per_system = bounded_relative_error(predicted.z, truth.z)
        error = per_system.mean(0)
        scores["rollout_error_geometric_mean"] = geometric_mean(error[1:])
        scores["rollout_error_final"] = float(error[-1])
        scores["valid_prediction_time_median"] = float(valid_prediction_time(per_system, truth.t).median())
        scores["train_seconds"] = metrics["train_seconds"]
    return scores


def _figures(out: Path, truth: Trajectories, rollouts: dict[str, Trajectories], settings: DemoSettings) -> None:
    from .animate import animate
    from .plots import plot_conservation, plot_error

    labels = [f"{name} ({data.meta['method']})" for name, data in rollouts.items()]
    plot_conservation([*rollouts.values(), truth], [*labels, "truth (yoshida8)"], out / "conservation.png")
    plot_error(list(rollouts.values()), truth, labels, out / "error.png")
    # frames spread evenly over the whole rollout (animate's default)
    animate(rollouts["hlieconv-SO2"], truth, out=out / "springs-hlieconv.gif", max_frames=settings.frames, trail=8,
            label="HLieConv SO(2)")
    pretrained = rollouts.get(f"pretrained {PRETRAINED_MODEL}")
    if pretrained is not None:
        animate(pretrained, truth, out=out / "springs-pretrained.gif", max_frames=settings.frames, trail=8,
                label=f"pretrained {PRETRAINED_MODEL}")


def format_table(table: dict) -> str:
    """The demo's summary as an aligned text table."""
    header = (f"{'model':<24} {'method':<9} {'window MSE':>10} {'rollout err':>11} {'final err':>9} {'VPT':>6} "
              f"{'|dP| rel':>9} {'|dL| rel':>9} {'|dE| rel':>9} {'left':>5}")
    lines = [header, "-" * len(header)]
    for name, row in table.items():
        mse = f"{row['window_mse']:.2e}" if "window_mse" in row else "-"
        gm = f"{row['rollout_error_geometric_mean']:.3f}" if "rollout_error_geometric_mean" in row else "-"
        final = f"{row['rollout_error_final']:.3f}" if "rollout_error_final" in row else "-"
        vpt = f"{row['valid_prediction_time_median']:.2f}" if "valid_prediction_time_median" in row else "-"
        left = str(row["left_region"]) if "left_region" in row else "-"
        lines.append(f"{name:<24} {row['method']:<9} {mse:>10} {gm:>11} {final:>9} {vpt:>6} "
                     f"{row['linear_momentum']:>9.1e} {row['angular_momentum']:>9.1e} {row['energy']:>9.1e} {left:>5}")
    return "\n".join(lines)
