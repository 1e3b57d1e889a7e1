"""Ablation: which difference from the reference implementation's network costs hamnet's T(2)
HLieConv its window MSE at the reference's protocol?

    OMP_NUM_THREADS=1 python benchmarks/ablation_reference_protocol.py [--variants ...] [--seeds 0 1 2] \
        [--group T2] [--side-by-side benchmarks/work/reference_side_by_side/protocol]

At the reference's protocol (width 128, 4 layers, 30 epochs, 1000 windows, lr 1e-3, rk4 windows, batch
200) on the very windows and test systems of ``benchmarks/reference_side_by_side.py`` (run that first:
its cached files are the data, and its scores of the reference and of plain hamnet are the rows this
ablation is read against), this trains HLieConv with the reference's network choices put back one at a
time. With both put back and the kernel bound off, hamnet's network computes the reference's function
(``benchmarks/results/reference_differences.md``: the potentials agree to 1.7e-16):

* ``mean-bias``: the convolution's bias divided by the neighbour count along with the kernel sum (the
  reference mixes, then divides; hamnet divides the sum only, so its bias acts, and moves under Adam,
  N times larger);
* ``kernel-swish``: a SiLU after the kernel MLP's last layer (the reference's; hamnet ends linear);
* ``reference-net-unbounded``: both, and no kernel bound (the reference has none; it drops pairs beyond
  its neighbourhood radius, which never acts on this data in training).

Every variant starts from the same weights as plain hamnet for the same seed (the changes add no
parameters), trains with hamnet's trainer and is scored by ``hamnet.evaluation.evaluate`` on the
side-by-side's test file, as the side-by-side scores both sides. Resumable: runs and scores are cached
under ``benchmarks/work/ablation_reference_protocol/``. Writes
``benchmarks/results/ablation_reference_protocol_<group>.{md,json}``. One thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from hamnet.lieconv import LieConv
from hamnet.models import HLieConv, ModelConfig, register_model

sys.path.insert(0, str(Path(__file__).parent))
# the side by side's settings, training and scoring, for identical figures
from pieces import (SCALES, hamnet_config, hamnet_flags, run_script, side_by_side_files,  # noqa: E402
                    train_and_score, write_result_files)

HERE = Path(__file__).resolve().parent


def _mean_bias(layer: LieConv, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the layer's bias divided by each point's neighbour count, as in the reference."""
    nbhd = inputs[1]
    count = (nbhd.weights > 0).sum(-1, keepdim=True).clamp(min=1).to(output.dtype)
    return output - layer.mix.bias * (1 - 1 / count)


def _variant(mean_bias: bool, kernel_swish: bool) -> type[HLieConv]:
    """An HLieConv class with the chosen reference choices; no new parameters, so the same init."""

    class Variant(HLieConv):
        def __init__(self, config: ModelConfig) -> None:
            super().__init__(config)
            for layer in self.modules():
                if isinstance(layer, LieConv):
                    if kernel_swish:
                        layer.kernel.append(nn.SiLU())
                    if mean_bias:
                        layer.register_forward_hook(_mean_bias)

    Variant.__name__ = Variant.__qualname__ = "HLieConv" + "".join(
        part for part, chosen in (("MeanBias", mean_bias), ("KernelSwish", kernel_swish)) if chosen)
    return Variant


#: name -> (mean bias, kernel swish, kernel bound)
VARIANTS = {"mean-bias": (True, False, True), "kernel-swish": (False, True, True),
            "reference-net-unbounded": (True, True, False)}


def register_variants() -> None:
    for name, (mean_bias, kernel_swish, _) in VARIANTS.items():
        register_model(f"hlieconv-{name}", _variant(mean_bias, kernel_swish), replace=True)


def run_variant(name: str, group: str, seed: int, windows: Path, test: Path, work: Path) -> dict:
    """Train (or resume) and score one variant and seed (cached in ``work``): its score and training figures."""
    out = work / "scores" / f"{name}_{group}_seed{seed}.json"
    config = hamnet_config(hamnet_flags(SCALES["protocol"], group, seed), windows)
    bounded = VARIANTS[name][2]
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, name=f"hlieconv-{name}"),
                                 kernel_bound_factor=config.kernel_bound_factor if bounded else None)
    training, score = train_and_score(config, windows, test, work / "runs" / f"{name}_{group}_seed{seed}", out)
    return score | {"training": training}


def row(label: str, scores: list[dict]) -> str:
    """One table row: mean +- sd over seeds of the figures the side-by-side reports (a model whose
    rollout could not be scored gets a row saying so)."""
    failed = [s["rollout_error"] for s in scores if "window_mse_with_initial" not in s]
    if failed:
        return f"| {label} | {len(scores)} | rollout failed: {failed[0]} | | | | |"
    def cell(values: list[float], form: str) -> str:
        if len(values) < 2:
            return form.format(values[0])
        return f"{form.format(statistics.mean(values))} ± {form.format(statistics.stdev(values))}"
    per_seed = ", ".join(f"{s['window_mse_with_initial']:.2e}" for s in scores)
    return (f"| {label} | {len(scores)} | {cell([s['window_mse_with_initial'] for s in scores], '{:.2e}')} | "
            f"{per_seed} | {cell([s['rollout_error_final'] for s in scores], '{:.3f}')} | "
            f"{cell([s['valid_prediction_time']['median'] for s in scores], '{:.2f}')} | "
            f"{sum(s['diverged'] for s in scores)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=tuple(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--group", choices=("T2", "SO2"), default="T2")
    parser.add_argument("--side-by-side", type=Path, default=HERE / "work" / "reference_side_by_side" / "protocol")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "ablation_reference_protocol")
    parser.add_argument("--report", action="store_true", help="write the results from what is cached; train nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamnet.training").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    register_variants()
    windows, test, side_scores = side_by_side_files(args.side_by_side)
    results = {}
    for name in args.variants:
        for seed in args.seeds:
            cached = args.work / "scores" / f"{name}_{args.group}_seed{seed}.json"
            if args.report and not cached.exists():
                continue
            results[f"{name}_seed{seed}"] = run_variant(name, args.group, seed, windows, test, args.work)
    lines = [f"# Ablation at the reference's protocol: the reference's network choices in hamnet's {args.group} HLieConv",
             "", f"Command: `OMP_NUM_THREADS=1 {shlex.join(['python', *(a for a in sys.argv if a != '--report')])}`", "",
             f"Data: the side-by-side's `{windows.name}` (training) and `{test.name}` (held out); protocol: width 128, "
             "4 layers, 30 epochs, lr 1e-3, rk4 windows, batch 200, last weights, one thread. Window MSE in the "
             "reference's convention (initial state averaged in); rollouts 500 steps in float64 with leapfrog over "
             "300 systems (bounded relative error at the end, median valid prediction time, diverged systems summed "
             "over seeds). The reference and plain-hamnet rows are the side-by-side's scores of the same seeds.", "",
             "| model | seeds | window MSE (ref. conv.) | per seed | rollout err. final | VPT median | diverged |",
             "|---|---|---|---|---|---|---|"]
    for key, label in (("reference", "reference, its protocol"), ("hamnet", "hamnet, plain")):
        scores = [json.loads(p.read_text()) for seed in args.seeds
                  if (p := side_scores / f"{key}_{args.group}_seed{seed}.json").exists()]
        if scores:
            lines.append(row(label, scores))
    for name in VARIANTS:
        scores = [results[f"{name}_seed{seed}"] for seed in args.seeds if f"{name}_seed{seed}" in results]
        if scores:
            lines.append(row(f"hamnet, {name}", scores))
    write_result_files(HERE / "results" / f"ablation_reference_protocol_{args.group}", results, lines)


if __name__ == "__main__":
    run_script(main)
