"""Why learned rollouts leave the data: where diverging rollouts go, and what the learned potential does there.

    python benchmarks/divergence_study.py --checkpoint RUN/best.pt --train TRAIN.npz --test TEST.npz \
        [--steps 500] [--out benchmarks/results/divergence_study]

For every test system, rolls the model out in float64 with leapfrog and with rk4 (same dt as the
data) and records which systems diverge and when (``hamnet.rollouts.rollout_systems``). Along each
leapfrog rollout it measures how far the state is from the training data (largest pair distance and
largest |p| over the training file's maxima) and the stiffness of the learned potential: the local
frequency ``omega = sqrt(lambda_max(M^-1/2 Hess V M^-1/2))`` from the Hessian of the learned V at the
state, so that ``dt * omega`` can be compared with 2, where leapfrog stops being stable. Reported for
diverging and healthy systems, at the last healthy step and at the same step of healthy rollouts.
One thread. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from hamnet.checkpoint import model_from_checkpoint
from hamnet.io import load_trajectories
from hamnet.rollouts import rollout_systems

LEAPFROG_STABILITY = 2.0  # leapfrog is stable for dt * omega < 2 on a harmonic mode of frequency omega


def largest_pair_distance(q: torch.Tensor) -> torch.Tensor:
    """``q: (..., N, D)`` -> ``(...)``: the largest distance between two particles."""
    return (q.unsqueeze(-2) - q.unsqueeze(-3)).norm(dim=-1).flatten(-2).amax(-1)


def stiffness(model, q: torch.Tensor, params: dict, index: int) -> float:
    """``dt``-free local frequency of the learned potential at system ``index``'s positions ``q: (N, D)``:
    the square root of the largest eigenvalue of the mass-weighted Hessian of V."""
    single = {k: v[index: index + 1] for k, v in params.items()}
    x = q.reshape(-1).clone().requires_grad_(True)

    def potential(flat):
        return model.potential(flat.reshape(1, *q.shape), single).sum()

    hessian = torch.autograd.functional.hessian(potential, x)
    inverse_sqrt_mass = params["m"][index].repeat_interleave(q.shape[-1]).rsqrt()
    weighted = inverse_sqrt_mass[:, None] * hessian * inverse_sqrt_mass[None, :]
    largest = float(torch.linalg.eigvalsh(0.5 * (weighted + weighted.T)).max())
    return math.sqrt(max(largest, 0.0))


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = torch.tensor(values, dtype=torch.float64)
    return {"n": len(values), "median": float(ordered.median()), "max": float(ordered.max()),
            "min": float(ordered.min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--train", required=True, help="the training file, for the range of the data")
    parser.add_argument("--test", required=True)
    parser.add_argument("--steps", type=int, default=None, help="rollout steps (default: the test file's)")
    parser.add_argument("--systems", type=int, default=None, help="only the first this many test systems")
    parser.add_argument("--system-ids", type=int, nargs="+", default=None, help="only these test systems")
    parser.add_argument("--dt", type=float, default=None, help="rollout step (default: the test file's dt)")
    parser.add_argument("--methods", nargs="+", default=["leapfrog", "rk4"], help="integrators (leapfrog first)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "divergence_study"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, state = model_from_checkpoint(args.checkpoint)
    model = model.double()
    train, test = load_trajectories(args.train), load_trajectories(args.test)
    if args.systems is not None:
        test = test.select(slice(0, args.systems))
    if args.system_ids is not None:
        test = test.select(torch.tensor(args.system_ids))
    steps = args.steps or test.n_times - 1
    dt = args.dt or float(test.meta["dt"])
    reach = {"pair_distance": float(largest_pair_distance(train.z[:, :, 0]).max()),
             "momentum": float(train.z[:, :, 1].norm(dim=-1).max())}
    runs = {method: rollout_systems(model, test.z[:, 0], test.params, steps, dt, method=method)
            for method in args.methods}
    leapfrog = runs["leapfrog"]
    diverged = leapfrog.diverged
    healthy = [b for b in range(test.n_systems) if b not in diverged]
    probe_steps = [int(leapfrog.diverged_at[b]) - 1 for b in diverged]
    probe = min(probe_steps) if probe_steps else steps  # the healthy systems at an early divergence's step
    rows = {"diverging": [], "healthy": []}
    for kind, systems in (("diverging", diverged), ("healthy", healthy[:len(diverged) or 10])):
        for b in systems:
            step = int(leapfrog.diverged_at[b]) - 1 if kind == "diverging" else probe
            z = leapfrog.z[b, step]
            crossing = (largest_pair_distance(leapfrog.z[b, : step + 1, 0]) > reach["pair_distance"]).nonzero()
            rows[kind].append({
                "system": b, "step": step,
                "pair_distance_over_training": float(largest_pair_distance(z[0])) / reach["pair_distance"],
                "momentum_over_training": float(z[1].norm(dim=-1).max()) / reach["momentum"],
                "first_step_beyond_training_distance": int(crossing[0]) if crossing.numel() else None,
                "dt_omega": dt * stiffness(model, z[0], test.params, b),
                "dt_omega_at_start": dt * stiffness(model, leapfrog.z[b, 0, 0], test.params, b),
            })
    report = {"checkpoint": args.checkpoint, "model": state["model_config"], "steps": steps, "dt": dt,
              "training_reach": reach,
              "diverged": {method: run.diverged for method, run in runs.items()},
              "diverged_steps": {method: [int(run.diverged_at[b]) for b in run.diverged] for method, run in runs.items()},
              "systems": rows,
              "summary": {kind: {key: summary([r[key] for r in rows[kind]]) for key in
                                 ("pair_distance_over_training", "momentum_over_training", "dt_omega",
                                  "dt_omega_at_start")} for kind in rows}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report, test.n_systems))
    print(markdown(report, test.n_systems))


def markdown(report: dict, n_systems: int) -> str:
    lines = [f"# Where diverging rollouts go: {report['checkpoint']}", "",
             f"{report['steps']} float64 steps of dt {report['dt']} from each of {n_systems} test systems. "
             "Diverged: " + "; ".join(f"{method} {len(systems)}" for method, systems in report["diverged"].items())
             + ". The training data reach pair distances up to "
             f"{report['training_reach']['pair_distance']:.2f} and |p| up to {report['training_reach']['momentum']:.2f}.",
             "", "| systems | at step | pair distance / training max | |p| / training max | dt * omega (start) | "
             "dt * omega (there) |", "|---|---|---|---|---|---|"]
    for kind, stats in report["summary"].items():
        if not stats["dt_omega"].get("n"):
            continue
        lines.append(f"| {kind} ({stats['dt_omega']['n']}) | {'last healthy' if kind == 'diverging' else 'same'} | "
                     f"{stats['pair_distance_over_training']['median']:.2f} (max "
                     f"{stats['pair_distance_over_training']['max']:.2f}) | {stats['momentum_over_training']['median']:.2f}"
                     f" | {stats['dt_omega_at_start']['median']:.3f} | {stats['dt_omega']['median']:.3f} (max "
                     f"{stats['dt_omega']['max']:.3f}) |")
    lines += ["", f"Leapfrog is unstable on a mode with dt * omega > {LEAPFROG_STABILITY:g}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
