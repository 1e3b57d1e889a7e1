"""Every results table of README.md and docs/, generated from benchmarks/results/*.json.

A page marks each table it shows with ``<!-- table: NAME -->`` and ``<!-- /table -->``; this script
rewrites what lies between from the results files, so a figure on a page changes only when its result
does, and withdrawing a figure means deleting or re-running its result. ``--check`` writes nothing and
exits 1 naming every page whose tables differ from their results (the test suite runs it).

Usage: python benchmarks/tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)

TABLES: dict[str, Callable[[], str]] = {}


def table(function: Callable[[], list[str]]) -> Callable[[], list[str]]:
    """Register ``function`` (its name with dashes) as a table: it returns the table's markdown lines."""
    TABLES[function.__name__.replace("_", "-")] = lambda: "\n".join(function()) + "\n"
    return function


@cache
def result(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def sci(value: float | str) -> str:
    """Two significant figures, ``1.3e-5`` rather than ``1.3e-05``; JSON's ``"inf"`` / ``"nan"`` (a run
    that diverged) as ``diverged``."""
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        return "diverged"
    if value == 0:
        return "0"
    if 1e-2 <= abs(value) < 1e3:
        return f"{value:.2g}" if abs(value) < 1 else f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def mean_std(figures: dict) -> str:
    """A results file's ``{"mean": ..., "std": ...}`` as ``mean ± std``."""
    return f"{sci(figures['mean'])} ± {sci(figures['std'])}"


def over_seeds(values: list[float]) -> str:
    """The mean ± standard deviation of the seeds' ``values`` (the mean alone for one seed)."""
    mean = statistics.fmean(values)
    return f"{sci(mean)} ± {sci(statistics.stdev(values))}" if len(values) > 1 else sci(mean)


def percent(value: float) -> str:
    return f"{100 * value:.2g}%"


def rows(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |"
                                                                          for row in body]


# -- springs -----------------------------------------------------------------------------------------

SPRINGS_MODELS = ["HLieConv T(2)", "HLieConv SO(2)", "HLieConv Trivial", "HOGN", "FC-NODE", "FC-HNN"]


def _springs(name: str, key: str, with_spread: bool) -> list[str]:
    summary = result(name)["summary"]
    models = [model for model in SPRINGS_MODELS if model in summary]
    body = []
    for size in sorted(summary[models[0]], key=int, reverse=True):
        cells = []
        for model in models:
            figure = summary[model][size][key]
            mean = f"{figure['mean']:.3g}" if key == "valid_prediction_time_median" else sci(figure["mean"])
            spread = f" ± {sci(figure['std'])}" if with_spread and len(summary[model][size]["seeds"]) > 1 else ""
            cells.append(mean + spread)
        body.append([size] + cells)
    return rows(["windows"] + models, body)


@table
def springs_paper_mse() -> list[str]:
    return _springs("springs_paper.json", "window_mse_with_initial", with_spread=False)


@table
def springs_paper_vpt() -> list[str]:
    return _springs("springs_paper.json", "valid_prediction_time_median", with_spread=False)


@table
def springs_paper_energy() -> list[str]:
    """The true energy's relative change over 10,000 float64 leapfrog steps, median over test systems."""
    return _springs("springs_paper.json", "drift_energy_median", with_spread=False)


@table
def springs_small_mse() -> list[str]:
    return _springs("springs_small.json", "window_mse_with_initial", with_spread=True)


@table
def pretrained() -> list[str]:
    body = []
    for name in ("springs-so2", "springs-t2", "springs-so2-long", "springs-se2-coupled"):
        card = result(f"pretrained_{name}.json")
        scores, long = card["evaluate"], card["long_rollout"]
        body.append([f"`{name}`", sci(scores["window_mse"]), f"{scores['rollout_error']['final']:.2g}",
                     f"{scores['valid_prediction_time']['median']:.3g}",
                     f"{long['diverged']} of {long['systems']}", percent(long["energy_drift"]["median"]),
                     sci(long["linear_momentum_drift"]["max"]), sci(long["angular_momentum_drift"]["max"]),
                     f"{card['train_seconds']:.0f} s"])
    return rows(["model", "window MSE", "500-step error (final)", "valid prediction time, median",
                 "diverged over 10,000 float64 leapfrog steps", "true-energy drift, median",
                 "linear momentum, largest change", "angular momentum, largest change", "training"], body)


# -- the reference implementation, side by side --------------------------------------------------------

def _seeds(side: str, group: str, key: str) -> list[float]:
    runs = result("reference_side_by_side.json")["runs"]
    return [run[key] for name, run in runs.items() if name.startswith(f"{side}_{group}_seed")]


@table
def reference_accuracy() -> list[str]:
    body = []
    sides = [("hamnet-own", "hamnet, its defaults, in the reference's time"),
             ("hamnet", "hamnet at the reference's protocol"), ("reference", "reference at its protocol")]
    for group in result("reference_side_by_side.json")["settings"]["groups"]:
        for side, label in sides:
            body.append([group, label,
                         f"{statistics.mean(_seeds(side, group, 'valid_prediction_time_median')):.2g}",
                         sci(statistics.mean(_seeds(side, group, "window_mse_with_initial"))),
                         f"{statistics.mean(_seeds(side, group, 'rollout_error_final')):.2g}",
                         f"{sum(_seeds(side, group, 'diverged'))} of {sum(_seeds(side, group, 'n_systems'))}",
                         f"{statistics.mean(_seeds(side, group, 'train_seconds')):.0f} s"])
    return rows(["group", "side", "valid prediction time, median", "window MSE", "500-step error (final)",
                 "diverged", "training"], body)


@table
def reference_speed() -> list[str]:
    report = result("reference_side_by_side.json")
    body = []
    for timing in report["timing"]:
        seconds = timing["seconds_per_1000_windows"]
        peaks = {memory["side"]: memory["peak_rss_bytes"] / 2**30 for memory in report["memory"]
                 if memory["width"] == timing["width"]}
        body.append([str(timing["width"]), f"{statistics.mean(seconds['hamnet']):.1f} s",
                     f"{statistics.mean(seconds['reference']):.1f} s", f"{peaks['hamnet']:.2f} GiB",
                     f"{peaks['reference']:.2f} GiB"])
    return rows(["width", "hamnet, per 1000 windows", "reference, per 1000 windows", "hamnet, peak memory",
                 "reference, peak memory"], body)


@table
def train_memory() -> list[str]:
    """Peak memory of whole three-epoch runs in fresh processes (train_memory.py), the lowest of the repeats."""
    report = result("train_memory.json")
    peak = lambda runs: f"{min(run['max_rss_bytes'] for run in runs) / 2**30:.2f} GiB"  # noqa: E731
    body = [[row["network"], peak(row["before"]), peak(row["after"]), peak(row["reference"]) if row.get("reference")
             else "not run"] for row in report["rows"]]
    return rows(["network", f"hamnet train, {report['commits']['before']}", f"hamnet train, {report['commits']['after']}",
                 "reference trainer"], body)


# -- N-body sets of the equivariant graph networks -------------------------------------------------------

def _peers(protocol: str) -> list[str]:
    report = result("nbody_peers_small.json")
    body = [[model] + [mean_std(figures[h]) for h in ("1000", "1500", "2000")]
            for model, figures in report["summary"][protocol].items()]
    body += [[f"{model} (published, 10x the data)"] + [sci(value) for value in values]
             for model, values in report["published"].get(protocol, {}).items()]
    return rows(["model", "1000 steps", "1500 steps", "2000 steps"], body)


@table
def peers_charged() -> list[str]:
    return _peers("egnn-charged5")


@table
def peers_gravity() -> list[str]:
    return _peers("segno-gravity5")


def _peer_code(protocol: str) -> list[str]:
    """The peers' own code on hamnet's files beside hamnet's Hamiltonians trained on the same files, and the
    published figures (all as peers_side_by_side.py records them)."""
    code = result("peers_side_by_side_small.json")
    horizons = ("1000", "1500", "2000")
    cell = lambda figures, h: mean_std(figures[h]) if h in figures else "-"  # noqa: E731
    labels = {"segno": "SEGNO, its code", "egnn": "EGNN, its code"}
    body = [[labels[peer]] + [cell(figures, h) for h in horizons]
            for peer, figures in code["summary"].get(protocol, {}).items()]
    body += [[f"{model} (hamnet)"] + [cell(figures, h) for h in horizons]
             for model, figures in code["hamnet"].get(protocol, {}).items()]
    recipe = recipe_row(protocol)
    if recipe is not None:
        row, entry = recipe
        body.append([f"{RECIPE_CHAIN[row]} (hamnet)"] + spread(entry))
    body += [[f"{model}, published (10x the data)"] + [sci(value) for value in values]
             for model, values in code["published"].get(protocol, {}).items() if model in ("EGNN", "SEGNO")]
    return rows(["model", "1000 steps", "1500 steps", "2000 steps"], body)


@table
def peers_code_charged() -> list[str]:
    return _peer_code("egnn-charged5")


@table
def peers_code_gravity() -> list[str]:
    return _peer_code("segno-gravity5")


#: the recipe's rows, the one to quote first (a table quotes the first measured on three seeds), and their labels
RECIPE_CHAIN = {"coupled recipe": "HLieConv SE(3), frame recipe, coupled by charge, 4 or 10 sub-steps",
                "coupled4 recipe": "HLieConv SE(3), frame recipe, coupled by charge",
                "steady4 recipe": "HLieConv SE(3), frame recipe",
                "coupled10-rollback": "HLieConv SE(3), frame recipe, coupled by charge, 10 sub-steps, --rollback 10",
                "coupled10-rollback-train": "HLieConv SE(3), frame recipe, coupled by charge, 10 sub-steps, "
                                            "--rollback 10 --rollback-train 3",
                "rollback-train+sub20": "HLieConv SE(3), frame recipe, coupled by charge, 10 sub-steps, --rollback 10 "
                                        "--rollback-train 3, then 3 epochs at 20 sub-steps"}


def recipe_row(protocol: str) -> tuple[str, dict] | None:
    """The frame recipe's row of ``frame_recipe.py`` that tables quote for ``protocol``, and its entry."""
    table = result("frame_recipe_small.json")["table"].get(protocol, {})
    for row in RECIPE_CHAIN:
        if len(table.get(row, {}).get("seeds", [])) >= 3:
            return row, table[row]
    return None


def spread(entry: dict) -> list[str]:
    """Mean ± standard deviation over the seeds at each horizon of a ``frame_recipe.py`` entry."""
    return [over_seeds(list(column)) for column in zip(*entry["mse"])]  # per horizon, the seeds' figures


def _frame_recipe(protocol: str, name: str = "frame_recipe_small.json") -> list[str]:
    """The recipe's ablation (frame_recipe.py): each row adds one step to the row above it; at the papers'
    data, the published figures below (from ten times the small scale's data, as this file's)."""
    report = result(name)
    body = []
    applies = report.get("rows_of", {}).get(protocol)  # files from before recipes of some sets only: every row
    for row, label, what in report["rows"]:
        if applies is not None and row not in applies:
            continue
        entry = report["table"].get(protocol, {}).get(row)
        if entry is None and name != "frame_recipe_small.json":  # the papers' data: only the recipes run there
            continue
        if entry is None:
            body.append([label, what, "not run", "not run", "not run", "-", "-"])
            continue
        body.append([label, what] + spread(entry)
                    + [str(len(entry["seeds"])), ", ".join(map(str, sorted(set(entry["substeps"]))))])
    for substeps, figure in report.get("references", {}).get(protocol, {}).items():
        body.append([f"true H, {substeps} steps", "the protocol's Hamiltonian, unclipped, no learning"]
                    + [sci(m) for m in figure["mse"]] + ["-", substeps])
    if name != "frame_recipe_small.json":
        published = result("peers_side_by_side_small.json")["published"].get(protocol, {})
        body += [[f"{model}, published", "its paper, the same data sizes"] + [sci(v) for v in values] + ["-", "-"]
                 for model, values in published.items() if model != "Linear"]
    return rows(["row", "what it adds", "1000 steps", "1500 steps", "2000 steps", "seeds", "sub-steps"], body)


@table
def frame_recipe_charged() -> list[str]:
    return _frame_recipe("egnn-charged5")


@table
def frame_recipe_gravity() -> list[str]:
    return _frame_recipe("segno-gravity5")


@table
def frame_recipe_papers_data_charged() -> list[str]:
    return _frame_recipe("egnn-charged5", "frame_recipe_papers_data.json")


@table
def frame_recipe_papers_data_gravity() -> list[str]:
    return _frame_recipe("segno-gravity5", "frame_recipe_papers_data.json")


def _long_horizon(protocol: str) -> list[str]:
    """10,000 steps from the test states (long_horizon.py): position MSE, the true energy's change (median over
    systems) and the momenta's largest change, mean ± standard deviation over the seeds."""
    report = result("long_horizon_small.json")
    keys = ("mse_2000", "mse_5000", "mse_10000", "energy_median", "linear_momentum_max", "angular_momentum_max")
    body = [[model, str(len(entry["seeds"]))] + [mean_std(entry[key]) for key in keys] + [str(entry["diverged"])]
            for model, entry in report["table"][protocol].items()]
    for name, entry in report["references"][protocol].items():
        conserved = [sci(entry[key]["median" if key == "energy" else "max"]) if key in entry else "-"
                     for key in ("energy", "linear_momentum", "angular_momentum")]
        body.append([name, "-"] + [sci(entry["mse"][h]) for h in ("2000", "5000", "10000")] + conserved
                    + [str(entry.get("diverged", "-"))])
    return rows(["model", "seeds", "MSE at 2,000", "MSE at 5,000", "MSE at 10,000", "true energy change, median",
                 "linear momentum, largest", "angular momentum, largest", "diverged"], body)


@table
def long_horizon_charged() -> list[str]:
    return _long_horizon("egnn-charged5")


@table
def long_horizon_gravity() -> list[str]:
    return _long_horizon("segno-gravity5")


# -- potentials beyond springs -------------------------------------------------------------------------

@table
def lennard_jones() -> list[str]:
    """The learned Lennard-Jones cluster (lennard_jones.py): the true energy's change over 10,000 float64 leapfrog
    steps of 300 held-out systems beside the learned potential's errors, mean ± standard deviation over seeds."""
    report = result("lennard_jones.json")

    def cell(runs: list[dict], key: str, sub: str | None = None) -> str:
        return over_seeds([run[key][sub] if sub else run[key] for run in runs])

    body = [[row, entry["what"], str(len(entry["seeds"])), cell(entry["runs"], "energy", "median"),
             cell(entry["runs"], "energy", "max"), cell(entry["runs"], "force_error_median"),
             cell(entry["runs"], "potential_error_spread_median"), cell(entry["runs"], "window_mse_first"),
             cell(entry["runs"], "window_mse_last"),
             sci(max(max(run["linear_momentum"]["max"], run["angular_momentum"]["max"]) for run in entry["runs"])),
             str(sum(run["diverged"] for run in entry["runs"])), str(sum(run["left_region"] or 0 for run in entry["runs"]))]
            for row, entry in report["table"].items()]
    floor = report["integrator"]
    body.append(["true H", "the same leapfrog on the true Hamiltonian", "-", sci(floor["energy"]["median"]),
                 sci(floor["energy"]["max"]), "0", "0", sci(floor["window_mse_first"]), sci(floor["window_mse_last"]),
                 "-", str(floor["diverged"]), "-"])
    return rows(["model", "what changes", "seeds", "true energy change, median", "largest", "force error, median",
                 "potential error spread, median", "window MSE, first 5 time units", "last 5 time units",
                 "momenta, largest", "diverged", "left the region"], body)


# -- speed, scale and long rollouts ------------------------------------------------------------------

@table
def speed() -> list[str]:
    generate = result("generate_speed.json")["results"][0]
    fits = {fit["group"]: fit for fit in result("lieconv_scale.json")["fits"] if fit["layout"].startswith("k=")}
    largest = max(result("lieconv_scale.json")["rows"], key=lambda row: (row["n"], row["neighbours"] or 0))
    throughput = {row["method"]: row for row in result("rollout_speed.json")["throughput"]}
    long = {(row["hamiltonian"], row["method"]): row for row in result("long_rollout.json")["results"]}
    leapfrog = long[("HLieConv SO(2)", "leapfrog")]
    momenta = result("momenta_3d.json")["largest_relative_change"]
    fit = next(iter(fits.values()))
    return rows(["what", "measured", "results file"], [
        ["ground truth, 10,000 springs x 500 steps, one thread",
         f"{generate['seconds']:.2g} s ({generate['systems_per_second']:,.0f} systems/s), energy error at most "
         f"{sci(generate['max_relative_energy_error'])}", "`generate_speed.json`"],
        [f"LieResNet forward + backward, {largest['neighbours']} neighbours, {largest['n']} points",
         f"{largest['seconds']:.2g} s, {largest['peak_mib']:.0f} MiB; time ~ N^{fit['time_exponent']:.2f}, "
         f"memory ~ N^{fit['memory_exponent']:.2f}", "`lieconv_scale.json`"],
        ["rollout throughput, HLieConv at equal accuracy, simulated time per second",
         f"leapfrog {throughput['leapfrog']['system_time_units_per_second']:.3g}, "
         f"rk4 {throughput['rk4']['system_time_units_per_second']:.3g}", "`rollout_speed.json`"],
        [f"{result('long_rollout.json')['setting']['steps']:,}-step float64 leapfrog rollout, HLieConv SO(2)",
         f"learned-energy error {sci(leapfrog['energy']['first_tenth'])} early, "
         f"{sci(leapfrog['energy']['last_tenth'])} late; momenta {sci(leapfrog['linear_momentum'])}",
         "`long_rollout.json`"],
        [f"{result('momenta_3d.json')['steps']:,}-step float64 leapfrog rollout, HLieConv SE(3), 3D gravity",
         f"linear momentum {sci(momenta['linear_momentum'])}, angular {sci(momenta['angular_momentum'])}",
         "`momenta_3d.json`"],
    ])


@table
def compile_speed() -> list[str]:
    report = result("compile_speed.json")
    body = []
    for row in report["rows"]:
        label = _model_label(row["model"])
        if "eager_seconds_per_step" in row:
            what, per = f"rollout of {row['systems']} springs, float64 leapfrog", "step"
            eager, compiled = row["eager_seconds_per_step"], row["compiled_seconds_per_step"]
        else:
            what = (f"{row['system']}, {row['method']} windows of {row['chunk']} states, {row['substeps']} sub-steps, "
                    f"batch {row['batch']}")
            per, eager, compiled = "1000 windows", row["eager_seconds_per_1000_windows"], \
                row["compiled_seconds_per_1000_windows"]
        body.append([label, what, f"{eager:#.3g} s / {per}", f"{compiled:#.3g} s", f"{row['speedup']:.2f}x",
                     f"{row['compile_cold_seconds']:.0f} s ({row['compile_cached_seconds']:.0f} s cached)"])
    return rows(["model", "what", "eager", "compiled", "speed-up", "first compilation"], body)


def _model_label(model: dict) -> str:
    """``hlieconv SE3 64x3`` from a benchmark row's model settings."""
    return " ".join(str(part) for part in (model["name"], model.get("group"), f"{model['width']}x{model['depth']}") if part)


@table
def ensemble_speed() -> list[str]:
    report = result("ensemble_speed.json")
    body = []
    for row in report["rows"]:
        label = _model_label(row["model"])
        body.append([label, f"{row['system']}, {row['method']}, {row['substeps']} sub-steps, batch {row['batch']}",
                     str(row["members"]), f"{row['alone_seconds_per_1000_windows']:#.3g} s",
                     f"{row['together_seconds_per_1000_windows']:#.3g} s", f"{row['speedup']:.2f}x"])
    return rows(["model", "windows", "K", "one after the other, per 1000 windows each", "together", "speed-up"], body)


@table
def gpu() -> list[str]:
    report = result("gpu/gpu_speed.json")
    body = [[f"{row['group']} {row['width']}x{row['depth']}", row["method"],
             f"{row['gpu_seconds_per_1000_windows']:.2f} s", f"{row['cpu_seconds_per_1000_windows']:.2f} s",
             f"{row['speedup']:.1f}x"] for row in report["training"]]
    return rows(["HLieConv", "windows", f"{report['gpu']}, per 1000 windows",
                 f"its CPU ({report['cpu_threads']} threads)", "speed-up"], body)


@table
def springs_long() -> list[str]:
    report = result("springs_long.json")
    body = []
    limit = report.get("integrator")
    if limit:
        vpt = limit["valid_prediction_time"]
        body.append(["true H, the same leapfrog", "-", f"{vpt['median']:.1f}", str(vpt["never_exceeded"]),
                     f"{_percent3(limit['energy']['median'])} ({_percent3(limit['energy']['max'])})", "-", "-"])
    for row in report["rows"]:
        for seed, run in row["runs"].items():
            if run is None:
                continue
            vpt, drift = run["valid_prediction_time"], run["drift"]
            body.append([row["row"] + (f", seed {seed}" if len(row["runs"]) > 1 or seed != "1" else ""), row["starts_from"] or "-",
                         f"{vpt['median']:.2f} [{vpt['q1']:.2f}, {vpt['q3']:.2f}]", str(vpt["never_exceeded"]),
                         f"{_percent3(drift['energy']['median'])} ({_percent3(drift['energy']['max'])})",
                         str(run.get("systems_over_10_percent", "-")),
                         sci(max(drift["linear_momentum"]["max"], drift["angular_momentum"]["max"]))])
    return rows(["HLieConv (SO(2) unless named), 3000 windows", "starts from", "valid prediction time, median [quartiles]",
                 "valid all 100 units", "true energy change, median (largest)", "systems past 10%",
                 "momenta, largest"], body)


def _percent3(value: float) -> str:
    """A fraction as a percentage with three significant figures (1.01 as 101%, not 1e+02%)."""
    return f"{100 * value:.3g}%"


# -- the front page ---------------------------------------------------------------------------------

@table
def headline() -> list[str]:
    paper = result("springs_paper.json")["summary"]
    at = lambda model, key: paper[model]["3000"][key]["mean"]  # noqa: E731
    card = result("pretrained_springs-so2.json")["long_rollout"]
    code = result("peers_side_by_side_small.json")
    speed = result("reference_side_by_side.json")["timing"][0]
    compiled = [row["speedup"] for row in result("compile_speed.json")["rows"] if "eager_seconds_per_1000_windows" in row]
    return rows(["what", "hamnet", "against"], [
        ["springs, paper scale, 3000 windows: window MSE",
         f"HLieConv T(2) {sci(at('HLieConv T(2)', 'window_mse_with_initial'))}, "
         f"SO(2) {sci(at('HLieConv SO(2)', 'window_mse_with_initial'))}",
         f"HOGN {sci(at('HOGN', 'window_mse_with_initial'))}, FC-HNN {sci(at('FC-HNN', 'window_mse_with_initial'))}"],
        ["the same: valid prediction time (median, time units)",
         f"{at('HLieConv T(2)', 'valid_prediction_time_median'):.1f}, "
         f"{at('HLieConv SO(2)', 'valid_prediction_time_median'):.1f}",
         f"HOGN {at('HOGN', 'valid_prediction_time_median'):.2g}"],
        ["pretrained `springs-so2`, 10,000 float64 leapfrog steps, 300 held-out systems",
         f"{card['diverged']} diverged; true energy {percent(card['energy_drift']['median'])} (median); momenta "
         f"{sci(card['linear_momentum_drift']['max'])}", "-"],
        _springs_long_headline(),
        ["same data as the paper's code, equal training time: valid prediction time, T(2) / SO(2)",
         " / ".join(f"{statistics.mean(_seeds('hamnet-own', g, 'valid_prediction_time_median')):.2g}"
                    for g in ("T2", "SO2")),
         "reference " + " / ".join(f"{statistics.mean(_seeds('reference', g, 'valid_prediction_time_median')):.2g}"
                                   for g in ("T2", "SO2"))],
        [f"training step, width {speed['width']}, one thread, per 1000 windows",
         f"{statistics.mean(speed['seconds_per_1000_windows']['hamnet']):.1f} s",
         f"reference {statistics.mean(speed['seconds_per_1000_windows']['reference']):.1f} s"],
        [f"training step compiled (`--compile on`), one thread, {len(compiled)} models",
         f"{min(compiled):.1f}-{max(compiled):.1f}x as fast", "the eager step"],
        ["N-body, a tenth of the data, 1000 steps: position MSE on SEGNO's gravity / EGNN's charged set",
         _nbody_headline(code),
         "SEGNO's own code " + " / ".join(sci(code["summary"][p]["segno"]["1000"]["mean"])
                                          for p in ("segno-gravity5", "egnn-charged5"))],
        *_papers_data_headlines(code),
    ])


#: the papers' data (frame_recipe.py --scale papers-data): set, its name, the recipe's rows the README may
#: quote (the first measured on three seeds)
PAPERS_DATA_ROWS = (("egnn-charged5", "EGNN's charged set",
                     ("rollback-train+sub20", "coupled10-rollback-train", "coupled10-rollback")),
                    ("segno-gravity5", "SEGNO's gravity set", ("steady4 recipe",)))


def _papers_data_headlines(code: dict) -> list[list[str]]:
    """The frame recipe at the papers' data sizes, a line per set measured on three seeds."""
    table = result("frame_recipe_papers_data.json")["table"]
    lines = []
    for protocol, name, rows in PAPERS_DATA_ROWS:
        measured = [row for row in rows if len(table.get(protocol, {}).get(row, {}).get("seeds", ())) >= 3]
        if not measured:
            continue
        row, entry = measured[0], table[protocol][measured[0]]
        lines.append([f"N-body, the papers' data (3000 training, 2000 test trajectories), {name}: position MSE at "
                      "1000 / 1500 / 2000 steps", f"{' / '.join(spread(entry))} ({RECIPE_CHAIN[row]}, 64x3, "
                      f"{len(entry['seeds'])} seeds)",
                      "SEGNO published " + " / ".join(sci(v) for v in code["published"][protocol]["SEGNO"])])
    return lines


def _springs_long_headline() -> list[str]:
    """Valid prediction time and systems past 10% over 100 time units: the recipe that meets both lines, by
    seed, against the SO(2) 300-epoch recipe, the shipped recipe and the true Hamiltonian through the same
    leapfrog."""
    report = result("springs_long.json")
    runs = {row["row"]: row["runs"] for row in report["rows"]}
    median = lambda run: run["valid_prediction_time"]["median"]  # noqa: E731

    def by_seed(row: str) -> str:
        seeds = runs[row]
        medians = " / ".join("not run" if run is None else f"{median(run):.1f}" for run in seeds.values())
        past = " / ".join("not run" if run is None else str(run["systems_over_10_percent"]) for run in seeds.values())
        return f"seeds {', '.join(seeds)}: {medians}, {past} past 10%"

    return ["springs, 10,000 float64 leapfrog steps (100 time units), 300 held-out systems: valid prediction "
            "time (median) and systems whose true energy changes by more than 10%",
            "HLieConv SE(2) coupled by k, 300 epochs, " + by_seed("SE(2) coupled by k, lr 3e-3, 300 epochs, 3000 systems")
            + " (pretrained `springs-se2-coupled`: seed 1)",
            "SO(2), 300 epochs, " + by_seed("SO(2), lr 3e-3, 300 epochs")
            + f"; `springs-so2`'s recipe {median(runs['SO(2), shipped recipe']['1']):.1f}; the true H through the "
            f"same leapfrog {report['integrator']['valid_prediction_time']['median']:.1f}"]


def _nbody_headline(code: dict) -> str:
    """hamnet's best measured 1000-step figure on each 5-body set, with the model that made it."""
    cells = []
    for protocol in ("segno-gravity5", "egnn-charged5"):
        candidates = [(code["hamnet"][protocol]["EGNN-H"]["1000"]["mean"], "EGNN-H")]
        recipe = recipe_row(protocol)
        if recipe is not None:
            candidates.append((statistics.fmean(mse[0] for mse in recipe[1]["mse"]), RECIPE_CHAIN[recipe[0]]))
        value, model = min(candidates)
        cells.append(f"{sci(value)} ({model})")
    return " / ".join(cells)


# -- pages ------------------------------------------------------------------------------------------------

def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def render(text: str, page: str = "page") -> str:
    """``text`` with every marked table regenerated; an unknown table name is an error."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"{page}: unknown table {name!r}; known: {', '.join(sorted(TABLES))}")
        return match.group(1) + TABLES[name]() + match.group(4)

    return BLOCK.sub(replace, text)


def stale_pages() -> list[Path]:
    """Pages whose tables differ from what their results files give."""
    return [page for page in pages() if render(page.read_text(), page.name) != page.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    args = parser.parse_args(argv)
    stale = stale_pages()
    if args.check:
        for page in stale:
            print(f"{page.relative_to(ROOT)}: a table differs from its results; run python benchmarks/tables.py",
                  file=sys.stderr)
        return 1 if stale else 0
    for page in stale:
        page.write_text(render(page.read_text(), page.name))
        print(f"rewrote the tables of {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
