"""Learn the Hamiltonian of a gravitational N-body system, in 2D and in 3D.

    python examples/nbody.py [--dim 3] [--family cluster] [--epochs 10] [--out examples-output/nbody]

Generates softened-gravity trajectories (a heavy central body with light orbiting ones, or a bound
cluster), trains HLieConv with rotation symmetry (SO(2) in 2D, SO(3) in 3D, positions centred so
the potential is also translation invariant), and rolls it out with leapfrog.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hamnet
from hamnet.systems import NBody


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=2, choices=(2, 3))
    parser.add_argument("--family", default="central", choices=("central", "cluster"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="examples-output/nbody")
    parser.add_argument("--tiny", action="store_true", help="seconds-long settings (used by the tests)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    n_systems, epochs, windows = (8, 1, 20) if args.tiny else (300, args.epochs, 3000)
    system = NBody(dim=args.dim, family=args.family, n_particles=4)
    hamnet.save_trajectories(out / "train.npz", hamnet.generate(system, n_systems=n_systems, steps=50, dt=0.01, seed=0))
    test = hamnet.generate(system, n_systems=2 if args.tiny else 4, steps=30 if args.tiny else 1000, dt=0.01, seed=1)

    group = "SO2" if args.dim == 2 else "SO3"
    model_config = hamnet.ModelConfig(name="hlieconv", group=group, width=32 if args.tiny else 64, depth=2,
                                      n_particles=system.n_particles, dim=args.dim, feature_keys=("m",))
    config = hamnet.TrainConfig(model=model_config, epochs=epochs, batch_size=50, lr=3e-3, max_windows=windows)
    hamnet.train(config, out / "train.npz", out / "run", resume=(out / "run" / "last.pt").exists())
    model, _ = hamnet.model_from_checkpoint(out / "run" / "best.pt")
    scores = hamnet.evaluate(model, test)
    print(f"nbody {args.family} {args.dim}D, HLieConv {group}: window MSE {scores['window_mse']:.3g}, rollout error "
          f"{scores['rollout_error']['geometric_mean_over_time']:.3f}, momentum drift "
          f"{scores['drift']['linear_momentum']['max']:.1e} (linear) {scores['drift']['angular_momentum']['max']:.1e} (angular)")
    return scores


if __name__ == "__main__":
    main()
