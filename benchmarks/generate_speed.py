"""Ground-truth generation speed and accuracy: hamnet vs the reference's method.

Generates 10,000 spring systems (N = 6, D = 2) x 500 steps at dt = 0.01 with hamnet's integrator
(eighth-order symplectic composition, per-system sub-steps) and, in the same process on the same
systems, with a plain RK4 at dt without sub-steps (the reference generator's method). Reports
systems per second and the largest energy and momentum errors of each, against the reference's
speed as measured on a 2-core CPU (1000 systems in 4.5 s; quoted, not re-run here).

    python benchmarks/generate_speed.py [--n-systems 10000] [--threads 1]

Writes benchmarks/results/generate_speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hamnet.diagnostics import conservation_report
from hamnet.simulation import simulate
from hamnet.systems import Springs

REFERENCE_SYSTEMS_PER_SECOND = 1000 / 4.5
RESULTS = Path(__file__).parent / "results"


def plain_rk4(system, z0, params, steps, dt):
    """RK4 at the output step, no sub-steps: what the reference generator does."""
    def field(z):
        return torch.stack([system.velocity(z[:, 1], params), system.forces(z[:, 0], params)], 1)

    out = torch.empty((z0.shape[0], steps + 1, *z0.shape[1:]), dtype=z0.dtype)
    out[:, 0] = z = z0
    for step in range(1, steps + 1):
        k1 = field(z)
        k2 = field(z + 0.5 * dt * k1)
        k3 = field(z + 0.5 * dt * k2)
        k4 = field(z + dt * k3)
        z = z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[:, step] = z
    return out


def summarise(name, seconds, n_systems, report):
    return {
        "method": name,
        "seconds": round(seconds, 3),
        "systems_per_second": round(n_systems / seconds, 1),
        "speedup_vs_reference": round(n_systems / seconds / REFERENCE_SYSTEMS_PER_SECOND, 2),
        "max_relative_energy_error": float(report["energy"].max()),
        "median_relative_energy_error": float(report["energy"].median()),
        "max_relative_linear_momentum_change": float(report["linear_momentum"].max()),
        "max_relative_angular_momentum_change": float(report["angular_momentum"].max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-systems", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    system, dt = Springs(), 0.01

    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    params = system.sample_params(args.n_systems, generator)
    z0 = system.sample_state(params, generator)
    _, z, settings = simulate(system, z0, params, steps=args.steps, dt=dt)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    ours_report = conservation_report(z, system.hamiltonian, params)
    verification = time.perf_counter() - start
    meta = settings.as_meta()

    start = time.perf_counter()
    baseline = plain_rk4(system, z0, params, args.steps, dt)
    theirs = time.perf_counter() - start
    baseline_report = conservation_report(baseline, system.hamiltonian, params)

    rows = [
        summarise(f"hamnet {meta['integrator']}, substeps {meta['substeps_min']}-{meta['substeps_max']}",
                  ours, args.n_systems, ours_report),
        summarise("plain RK4 at dt (reference method)", theirs, args.n_systems, baseline_report),
    ]
    setting = {
        "n_systems": args.n_systems, "steps": args.steps, "dt": dt, "system": "springs N=6 D=2",
        "threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "reference_systems_per_second": round(REFERENCE_SYSTEMS_PER_SECOND, 1),
        "verification_seconds": round(verification, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generate_speed.json").write_text(json.dumps({"setting": setting, "results": rows}, indent=2) + "\n")
    lines = [
        "# Ground-truth generation: speed and accuracy",
        "",
        f"{args.n_systems} spring systems (N = 6, D = 2) x {args.steps} steps at dt = {dt}, float64, "
        f"{args.threads} thread(s), torch {torch.__version__}. Reference generator: "
        f"{REFERENCE_SYSTEMS_PER_SECOND:.0f} systems/s (1000 in 4.5 s) with energy drift up to 9e-4.",
        "Command: `python benchmarks/generate_speed.py --threads 1`. Times are sampling plus integration; "
        f"measuring the energy and momentum errors of all {args.n_systems} trajectories (which `hamnet generate` "
        f"also does, to record them in the file) took another {verification:.1f} s.",
        "",
        "| method | seconds | systems/s | x reference | max rel. energy error | median | max rel. linear momentum change | max rel. angular momentum change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['seconds']:.2f} | {row['systems_per_second']:,.0f} | {row['speedup_vs_reference']:.1f} "
            f"| {row['max_relative_energy_error']:.1e} | {row['median_relative_energy_error']:.1e} "
            f"| {row['max_relative_linear_momentum_change']:.1e} | {row['max_relative_angular_momentum_change']:.1e} |"
        )
    (RESULTS / "generate_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
