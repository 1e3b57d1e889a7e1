"""Train HLieConv on the paper's spring system and score it against held-out trajectories.

    python examples/train_springs.py [--group SO2] [--epochs 10] [--out examples-output/train_springs]

Generates springs with hamnet's accurate integrator, trains a learned Hamiltonian on 5-state
windows (as in the paper), then reports window error, rollout error and momentum drift.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hamnet
from hamnet.systems import Springs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", default="SO2", help="symmetry of the learned potential (T2, SO2, Trivial, ...)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="examples-output/train_springs")
    parser.add_argument("--tiny", action="store_true", help="seconds-long settings (used by the tests)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    n_systems, epochs, windows = (30, 1, 100) if args.tiny else (500, args.epochs, 3000)
    system = Springs()  # N = 6 particles in 2D
    hamnet.save_trajectories(out / "train.npz", hamnet.generate(system, n_systems=n_systems, steps=100, dt=0.01, seed=0))
    test = hamnet.generate(system, n_systems=8, steps=60 if args.tiny else 500, dt=0.01, seed=1)

    model_config = hamnet.ModelConfig(name="hlieconv", group=args.group, width=64, depth=2,
                                      n_particles=system.n_particles, dim=system.dim, feature_keys=("m", "k"))
    config = hamnet.TrainConfig(model=model_config, epochs=epochs, batch_size=100, lr=3e-3, max_windows=windows)
    hamnet.train(config, out / "train.npz", out / "run", resume=(out / "run" / "last.pt").exists())

    model, _ = hamnet.model_from_checkpoint(out / "run" / "best.pt")
    scores = hamnet.evaluate(model, test)
    print(f"HLieConv {args.group}: window MSE {scores['window_mse']:.3g}, 500-step rollout error "
          f"(geometric mean) {scores['rollout_error']['geometric_mean_over_time']:.3f}, "
          f"max angular momentum drift {scores['drift']['angular_momentum']['max']:.1e}")
    return scores


if __name__ == "__main__":
    main()
