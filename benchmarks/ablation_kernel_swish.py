"""Ablation: does a final Swish in the LieConv kernel (as the reference implementation has) keep
learned springs rollouts from diverging?

    python benchmarks/ablation_kernel_swish.py --train springs-train.npz --test springs-test.npz \
        [--variant swish|plain] [--group T2] [--out benchmarks/results/ablation_kernel_swish]

Trains HLieConv with the settings of the shipped springs models (width 128, depth 4, 3000 windows, 30
epochs, leapfrog windows, lr 1e-2, seed 0) with or without a SiLU after the kernel MLP's last layer,
then measures it as ``benchmarks/pretrained_card.py`` does: ``hamnet.evaluate`` on the test file and a
10,000-step float64 leapfrog rollout of every test system (divergence, drifts). The variant is a model
registered from this script (``register_model``), so training, checkpoints and rollouts are hamnet's
own. ``plain`` retrains the baseline under the same script. One thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from hamnet.checkpoint import model_from_checkpoint
from hamnet.evaluation import evaluate
from hamnet.io import load_trajectories
from hamnet.lieconv import LieConv
from hamnet.models import HLieConv, ModelConfig, register_model
from hamnet.training import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from pieces import long_rollout  # noqa: E402  (the pretrained cards' long rollout)


class SwishKernelHLieConv(HLieConv):
    """HLieConv whose LieConv kernels end with a SiLU, so each kernel channel is bounded below."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        for layer in self.modules():
            if isinstance(layer, LieConv):
                layer.kernel.append(nn.SiLU())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--variant", choices=("swish", "plain"), default="swish")
    parser.add_argument("--group", default="T2")
    parser.add_argument("--long-steps", type=int, default=10_000)
    parser.add_argument("--work", default="benchmarks/work/ablation_kernel_swish")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation_kernel_swish"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_model("hlieconv-swish", SwishKernelHLieConv)
    name = "hlieconv-swish" if args.variant == "swish" else "hlieconv"
    model_config = ModelConfig(name=name, group=args.group, width=128, depth=4, feature_keys=("m", "k"))
    config = TrainConfig(model=model_config, epochs=30, batch_size=200, lr=1e-2, method="leapfrog",
                         max_windows=3000, seed=0)
    run = Path(args.work) / f"{args.variant}-{args.group}"
    started = time.perf_counter()
    train(config, args.train, run, resume=(run / "last.pt").exists())
    seconds = time.perf_counter() - started
    model, _ = model_from_checkpoint(run / "best.pt")
    test = load_trajectories(args.test)
    scores = evaluate(model, test, window_method="leapfrog")
    long = long_rollout(model, test, args.long_steps)
    result = {"variant": args.variant, "group": args.group, "train_seconds": seconds,
              "window_mse": scores["window_mse"], "rollout_error_final": scores["rollout_error"]["final"],
              "valid_prediction_time_median": scores["valid_prediction_time"]["median"],
              "diverged_500": len(scores["divergence"]["systems"]), "long_rollout": long}
    out = Path(f"{args.out}_{args.variant}_{args.group}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
