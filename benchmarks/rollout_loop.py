"""Long fixed-step rollouts: hamnet.stepping's loop against the odeint path it replaced, in one process.

    OMP_NUM_THREADS=1 python benchmarks/rollout_loop.py [--steps 60] [--repeats 5] [--no-compile]

The rollout is the issue's: HLieConv SO(2), width 128, depth 4 (a fresh network; its cost does not
depend on what it learned), float64 leapfrog on springs (N = 6, 2D), through ``hamnet.rollout``.
The old path is the same call with ``options={"interp": "linear"}``: odeint's default made explicit,
which sends the rollout through ``odeint`` as before this change; both paths' trajectories are
checked to be bitwise equal. Each case alternates the two paths ``--repeats`` times after a warm-up,
so that a shared CPU slows both alike; the ratio of the medians is the figure. Cases: 300 systems
(the issue's 300 x 10,000, scaled to ``--steps`` steps), 10 systems and 1 system (where the loop's
share is largest), 10 systems with 5 sub-steps per output step, and one system of the true springs,
whose cheap analytic forces leave the loop's own cost in view.

Also measured: the host reads (``aten::_local_scalar_dense``, a round trip per read on a GPU) per
step of each path, from the profiler over two rollout lengths; the seconds of one force evaluation
at 300 systems against a step's (what a faster loop can save at most); and, unless ``--no-compile``,
the rollout with forces from ``torch.compile`` of the potential of a frozen copy of the model
(benchmark-only, not in hamnet: its compile time, rate and largest difference from the eager
rollout). Writes results/rollout_loop.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hamnet import systems
from hamnet.dynamics import HamiltonianField
from hamnet.models import ModelConfig, build_model
from hamnet.rollouts import rollout
from hamnet.systems import autograd_gradient

sys.path.insert(0, str(Path(__file__).parent))
from pieces import write_result_files  # noqa: E402  (benchmarks are scripts, not a package)

DT = 0.01
OLD_PATH = {"interp": "linear"}  # odeint's default, named: the rollout goes through odeint
#: (dynamics, systems, steps as a multiple of --steps, sub-steps); "springs": the true system, whose
#: analytic forces cost little, so that the loop's own share shows
CASES = (("HLieConv", 300, 1, 1), ("HLieConv", 10, 10, 1), ("HLieConv", 1, 20, 1), ("HLieConv", 10, 2, 5),
         ("springs", 1, 50, 1))


class CompiledForces:
    """The model's dynamics with forces from ``torch.compile`` of a frozen copy's potential (weights that
    need no gradient, so the compiled backward computes the force alone). For this measurement only."""

    separable = True

    def __init__(self, model) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.potential = torch.compile(self.model.potential, dynamic=False)

    def hamiltonian(self, z, params):
        return self.model.hamiltonian(z, params)

    def velocity(self, p, params):
        return self.model.velocity(p, params)

    def forces(self, q, params):
        return -autograd_gradient(self.potential, q, params, False)


def springs_batch(n_systems: int, seed: int = 0):
    system = systems.Springs()
    generator = torch.Generator().manual_seed(seed)
    params = system.sample_params(n_systems, generator)
    return system.sample_state(params, generator), params


def timed(function) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def compare(model, label: str, n_systems: int, steps: int, substeps: int, repeats: int) -> dict:
    """The two paths alternated: seconds of each run, the ratio, and whether the states are equal."""
    z0, params = springs_batch(n_systems)
    run = {"new": lambda: rollout(model, z0, params, steps, DT, substeps=substeps),
           "old": lambda: rollout(model, z0, params, steps, DT, substeps=substeps, options=OLD_PATH)}
    equal = torch.equal(run["new"](), run["old"]())  # also the warm-up
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(repeats):
        for path in ("old", "new"):
            seconds[path].append(timed(run[path])[0])
    old, new = statistics.median(seconds["old"]), statistics.median(seconds["new"])
    row = {"dynamics": label, "systems": n_systems, "steps": steps, "substeps": substeps, "bitwise_equal": equal,
           "old_seconds": seconds["old"], "new_seconds": seconds["new"],
           "old_ms_per_step": 1000 * old / steps, "new_ms_per_step": 1000 * new / steps, "speedup": old / new,
           "speedup_of_fastest": min(seconds["old"]) / min(seconds["new"]),
           "chunk_states_kept": {"old": min(steps, 1000) * substeps + 1, "new": min(steps, 1000) + 1}}
    print(f"{label}, {n_systems} systems x {steps} steps (substeps {substeps}): old {row['old_ms_per_step']:.2f}, new "
          f"{row['new_ms_per_step']:.2f} ms/step ({row['speedup']:.3f}x), bitwise equal {equal}", flush=True)
    return row


def host_reads_per_step(model) -> dict:
    """Host reads per step of each path, from the difference between two rollout lengths."""
    z0, params = springs_batch(4)

    def reads(steps: int, options) -> int:
        with profile(activities=[ProfilerActivity.CPU]) as trace:
            rollout(model, z0, params, steps, DT, options=options)
        return sum(e.count for e in trace.key_averages() if e.key == "aten::_local_scalar_dense")

    short, long = 10, 30
    return {path: (reads(long, options) - reads(short, options)) / (long - short)
            for path, options in (("old", OLD_PATH), ("new", None))}


def force_share(model, steps: int, ms_per_step: float) -> dict:
    """Milliseconds of one force evaluation at 300 systems, and its share of a leapfrog step's."""
    z0, params = springs_batch(300)
    field = HamiltonianField(model, params)
    with torch.no_grad():
        field.force(z0[:, 0])
        times = [timed(lambda: field.force(z0[:, 0]))[0] for _ in range(max(3, steps // 10))]
    force_ms = 1000 * statistics.median(times)
    return {"force_ms": force_ms, "step_ms": ms_per_step, "share": force_ms / ms_per_step}


def compiled_rollout(model, steps: int, repeats: int) -> dict:
    """The eager rollout against the compiled forces' at 300 systems, alternated; compiled from a cold cache."""
    z0, params = springs_batch(300)
    compiled = CompiledForces(model)
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read when compiling: a cold compile, as a user's first
        compile_seconds, _ = timed(lambda: rollout(compiled, z0, params, 1, DT))
    if before is None:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    eager_states = rollout(model, z0, params, steps, DT)
    seconds: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(repeats):
        seconds["eager"].append(timed(lambda: rollout(model, z0, params, steps, DT))[0])
        elapsed, states = timed(lambda: rollout(compiled, z0, params, steps, DT))
        seconds["compiled"].append(elapsed)
    difference = float((states - eager_states).abs().max() / eager_states.abs().max())
    eager, fast = statistics.median(seconds["eager"]), statistics.median(seconds["compiled"])
    row = {"systems": 300, "steps": steps, "compile_seconds": compile_seconds, "eager_seconds": seconds["eager"],
           "compiled_seconds": seconds["compiled"], "speedup": eager / fast, "bitwise_equal": torch.equal(states,
                                                                                                          eager_states),
           "largest_relative_difference": difference}
    print(f"compiled forces: {row['speedup']:.2f}x after {compile_seconds:.0f} s of compiling, largest relative "
          f"difference {difference:.1e}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="steps of the 300-system case (others: multiples)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rollout_loop"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model(ModelConfig(name="hlieconv", group="SO2", width=128, depth=4, n_particles=6, dim=2,
                                    feature_keys=("m", "k")), torch.Generator().manual_seed(0)).double()
    started = time.perf_counter()
    dynamics = {"HLieConv": model, "springs": systems.Springs()}
    rows = [compare(dynamics[label], label, systems_, args.steps * factor, substeps, args.repeats)
            for label, systems_, factor, substeps in CASES]
    results = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/rollout_loop.py --steps {args.steps} --repeats "
                   f"{args.repeats}" + (" --no-compile" if args.no_compile else ""),
        "machine": f"{platform.machine()} {platform.processor() or 'CPU'}, {os.cpu_count()} cores, shared with "
                   "two training processes (ratios are of runs alternated in one process)",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": "HLieConv SO(2) 128x4, float64, leapfrog, springs N = 6 in 2D, dt = 0.01",
        "cases": rows,
        "host_reads_per_step": host_reads_per_step(model),
        "force_share": force_share(model, args.steps, rows[0]["new_ms_per_step"]),
        "compiled": None if args.no_compile else compiled_rollout(model, args.steps, args.repeats),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_result_files(Path(args.out), results, markdown(results))


def markdown(results: dict) -> list[str]:
    reads, share = results["host_reads_per_step"], results["force_share"]
    lines = ["# Long rollouts: hamnet.stepping's loop against the odeint path", "",
             f"Command: `{results['command']}` ({results['seconds']:.0f} s). {results['machine']}; torch "
             f"{results['torch']}, {results['threads']} thread. {results['model']}. Old: the rollout through "
             "`odeint` (as before, chosen with `options={'interp': 'linear'}`, odeint's default); new: "
             "`hamnet.stepping.integrate_fixed_grid`. Median of the runs, the paths alternated.", "",
             "| dynamics | systems | steps | sub-steps | old ms / step | new ms / step | speed-up (medians) | "
             "speed-up (fastest runs) | bitwise equal | states kept per chunk (old / new) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        kept = r["chunk_states_kept"]
        lines.append(f"| {r['dynamics']} | {r['systems']} | {r['steps']} | {r['substeps']} | {r['old_ms_per_step']:.3f} | "
                     f"{r['new_ms_per_step']:.3f} | {r['speedup']:.3f}x | {r['speedup_of_fastest']:.3f}x | {'yes' if r['bitwise_equal'] else 'NO'} | "
                     f"{kept['old']} / {kept['new']} |")
    springs = next(r for r in results["cases"] if r["dynamics"] == "springs")
    issue = results["cases"][0]
    lines += ["", f"The loop's own cost shows with the true springs, whose forces are cheap: "
              f"{1000 * (springs['old_ms_per_step'] - springs['new_ms_per_step']):.0f} us a step less. With the "
              "network it is lost in the run-to-run spread of this shared CPU (the fastest runs and the medians "
              "disagree by several per cent). At the new path's rate, the issue's 300 systems x 10,000 steps take "
              f"{issue['new_ms_per_step'] * 10:.0f} s on one thread."]
    lines += ["", f"Host reads per step (`aten::_local_scalar_dense`, 4 systems): old {reads['old']:.0f}, new "
              f"{reads['new']:.0f}; the new path's are the network's own (HLieConv's finiteness test of its "
              "input and LieResNet's two input checks, one force a step), the odeint loop's were its tests of "
              "the output time.", "",
              f"At 300 systems one force evaluation takes {share['force_ms']:.1f} ms of a step's "
              f"{share['step_ms']:.1f} ms ({100 * share['share']:.0f}%): on the CPU the step is the network, so the "
              "loop can save little there; its savings are the per-step round trips, which matter on a GPU."]
    compiled = results["compiled"]
    if compiled:
        lines += ["", f"`torch.compile` of the potential of a frozen copy of the model (benchmark only), 300 systems "
                  f"x {compiled['steps']} steps: {compiled['speedup']:.2f}x the eager rollout after "
                  f"{compiled['compile_seconds']:.0f} s of compiling (per batch size); states equal to round-off, "
                  f"not bitwise (largest difference {compiled['largest_relative_difference']:.1e} of the largest "
                  "|state|). Not in hamnet: a rollout's default must stay bitwise the same; the batch shrinks "
                  "whenever a system diverges (`rollout_systems`), and each new size compiles again; the compiled "
                  "potential needs weights that require no gradient (a trial compiling the model as it is gained nothing); "
                  "and torch.compile falls back to eager after 8 recompilations of one function (its "
                  "recompile_limit), which new batch sizes and model instances use up. A GPU "
                  "session's capture (CUDA graphs) is where this belongs (issue 21, item 2)."]
    return lines + [""]


if __name__ == "__main__":
    main()
