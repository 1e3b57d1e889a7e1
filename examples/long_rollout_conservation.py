"""Long rollouts and conservation plots: why a symplectic integrator and a symmetric H matter.

    python examples/long_rollout_conservation.py [--steps 20000] [--out examples-output/conservation]

Rolls out the true spring Hamiltonian with leapfrog and with rk4 at the same step, and an
(untrained) HLieConv with SO(2) symmetry with leapfrog, all in float64, and plots the change of
linear momentum, angular momentum and energy. Leapfrog keeps both momenta to round-off and the
energy error bounded; rk4 lets the energy drift and loses angular momentum.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import hamnet
from hamnet.plots import plot_conservation
from hamnet.systems import Springs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--dt", type=float, default=0.01)
    parser.add_argument("--out", default="examples-output/conservation")
    parser.add_argument("--tiny", action="store_true", help="seconds-long settings (used by the tests)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = 200 if args.tiny else args.steps

    system = Springs()
    generator = torch.Generator().manual_seed(0)
    params = system.sample_params(4, generator)
    z0 = system.sample_state(params, generator)
    meta = {"system": "springs", "system_settings": system.settings(), "dt": args.dt}
    model = hamnet.build_model(hamnet.ModelConfig(name="hlieconv", group="SO2", width=32, depth=2))

    runs = {
        "true H, leapfrog": (system, "leapfrog"),
        "true H, rk4": (system, "rk4"),
        "HLieConv SO(2), leapfrog": (model, "leapfrog"),
    }
    rollouts, drifts = [], {}
    for label, (hamiltonian, method) in runs.items():
        z = hamnet.rollout(hamiltonian, z0, params, steps, args.dt, method=method, dtype=torch.float64)
        t = torch.arange(steps + 1, dtype=torch.float64) * args.dt
        rollouts.append(hamnet.Trajectories(t, z, params, {**meta, "method": method}))
        drifts[label] = {k: float(v.max()) for k, v in hamnet.conservation_report(z, system.hamiltonian, params).items()}
        print(f"{label:<26} " + "  ".join(f"{k} {v:.1e}" for k, v in drifts[label].items()))
    plot_conservation(rollouts, list(runs), out / "conservation.png")
    print(f"plot: {out / 'conservation.png'}")
    return drifts


if __name__ == "__main__":
    main()
