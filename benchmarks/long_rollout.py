"""Very long rollouts: bounded energy error with leapfrog, drift with rk4, exact momenta.

    python benchmarks/long_rollout.py [--steps 100000] [--systems 4] [--width 128] [--depth 4] [--threads 1]

An HLieConv with SO(2) symmetry (positions centred) of training size, its potential fitted to the
true spring forces (a stand-in for a trained model, as in rollout_speed.py), and the true spring
Hamiltonian are each rolled out for ``--steps`` steps of dt = 0.01 in float64 with leapfrog and
with rk4 at the same step. Reported: the change of each rollout's own Hamiltonian (learned H for the
model, true H for the truth) early and late in the run, so a trend shows, and the largest relative
change of linear and angular momentum. Writes benchmarks/results/long_rollout.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import hamnet
from hamnet.diagnostics import energy
from hamnet.systems import Springs

sys.path.insert(0, str(Path(__file__).parent))
from pieces import fit_to_springs  # noqa: E402  (rollout_speed.py's stand-in for a trained model)

RESULTS = Path(__file__).parent / "results"
ENERGY_EVERY = 100  # steps between energy evaluations (the learned H is a network call)


def energy_changes(hamiltonian, z, params) -> dict[str, float]:
    """Largest relative change of H over the first and the last tenth of the run, and overall."""
    sampled = z[:, ::ENERGY_EVERY]
    with torch.enable_grad():  # HLieConv's H needs no grad, but keep the call identical to training's
        h = energy(hamiltonian, sampled, params).detach()
    change = ((h - h[:, :1]) / h[:, :1].abs()).abs()
    tenth = max(1, change.shape[1] // 10)
    return {"first_tenth": float(change[:, :tenth].max()), "last_tenth": float(change[:, -tenth:].max()),
            "max": float(change.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--systems", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--dt", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    system = Springs()
    model = hamnet.build_model(hamnet.ModelConfig(name="hlieconv", group="SO2", width=args.width, depth=args.depth),
                               generator)
    force_error = fit_to_springs(model, system, generator)
    model = model.double().eval()
    params = system.sample_params(args.systems, generator)
    z0 = system.sample_state(params, generator)

    rows = []
    for label, hamiltonian in (("HLieConv SO(2)", model), ("true springs", system)):
        for method in ("leapfrog", "rk4"):
            start = time.perf_counter()
            z = hamnet.rollout(hamiltonian, z0, params, args.steps, args.dt, method=method)
            seconds = time.perf_counter() - start
            report = hamnet.conservation_report(z)
            rows.append({"hamiltonian": label, "method": method, "seconds": round(seconds, 1),
                         "energy": energy_changes(hamiltonian.hamiltonian, z, params),
                         "linear_momentum": float(report["linear_momentum"].max()),
                         "angular_momentum": float(report["angular_momentum"].max())})
            print(rows[-1], flush=True)

    setting = {"steps": args.steps, "dt": args.dt, "systems": args.systems, "width": args.width, "depth": args.depth,
               "threads": args.threads, "fitted_force_relative_error": round(force_error, 3), "torch": torch.__version__}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "long_rollout.json").write_text(json.dumps({"setting": setting, "results": rows}, indent=2) + "\n")
    lines = [
        "# Long rollouts: energy error and momenta over {:,} steps".format(args.steps),
        "",
        f"Command: `python benchmarks/long_rollout.py --steps {args.steps} --systems {args.systems} --width {args.width} "
        f"--depth {args.depth} --threads {args.threads}`. float64, dt = {args.dt}, {args.systems} spring systems "
        f"(N = 6, D = 2), {args.threads} thread(s). HLieConv SO(2) (centred), width {args.width}, depth {args.depth}, "
        f"potential fitted to the true spring forces (relative force error {force_error:.2f}). Energy is each "
        "rollout's own Hamiltonian (learned H for the model), relative change from t = 0, largest over systems, "
        f"sampled every {ENERGY_EVERY} steps; momenta relative to their initial scale.",
        "",
        "| Hamiltonian | method | seconds | dH/H first tenth | dH/H last tenth | dH/H max | linear momentum | angular momentum |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        e = row["energy"]
        lines.append(f"| {row['hamiltonian']} | {row['method']} | {row['seconds']} | {e['first_tenth']:.1e} | "
                     f"{e['last_tenth']:.1e} | {e['max']:.1e} | {row['linear_momentum']:.1e} | {row['angular_momentum']:.1e} |")
    (RESULTS / "long_rollout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
