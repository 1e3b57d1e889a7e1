"""Train SEGNO with its own code on files ``peers_side_by_side.py`` wrote, and save its test predictions.

Run as ``python peers_adapter.py SPEC.json`` by ``peers_side_by_side.py``, in a fresh process whose path
holds SEGNO's ``N-body`` folder (extracted from its own checkout; nothing of it is copied into hamnet).
Nothing of hamnet is imported here: the process sees SEGNO's code and numpy files only.

What is SEGNO's and what is ours:

* SEGNO's: the model (``models.model.SEGNO``, built as its ``main.py`` builds it), the data loaders
  (``nbody/dataset_nbody.py``, ``nbody/dataset_gravity.py``), and every training and evaluation pass
  (``run_epoch`` of ``nbody/train_nbody.py`` or ``nbody/train_gravity.py``), with its optimiser (Adam),
  loss and defaults;
* ours: the epoch loop, which is its ``train`` with one difference: it keeps the weights of the epoch with
  the best validation loss (its ``train`` only prints that epoch's test loss), so that the test positions
  are predicted by the model SEGNO's own selection picks; and the predictions are captured from its
  ``run_epoch`` on the test set through the loss function it is handed, so the forward pass is its own.
* stand-ins: SEGNO's training scripts import ``torch_geometric`` and ``torch_scatter``, which have no
  wheel for this torch. Only ``knn_graph`` is called (gravity, with ``k = N - 1``: every other particle of
  the same system), so a stand-in builds that complete graph; the rest are names that are never used.

The spec (JSON): ``nbody`` (SEGNO's N-body folder), ``dataset`` (``charged`` or ``gravity``),
``dataset_dir``, ``interval`` (start and target frame), ``epochs``, ``batch_size``, ``lr``,
``weight_decay``, ``layers``, ``hidden``, ``max_samples``, ``test_interval``, ``seed``, ``out`` (folder for
``predictions.npy``, ``result.json`` and ``log.txt``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: SEGNO's N-body scripts hard-code five bodies per system
BODIES = 5


def complete_graph(x: torch.Tensor, k: int, batch: torch.Tensor, loop: bool = False,
                   flow: str = "source_to_target") -> torch.Tensor:
    """``torch_geometric.nn.knn_graph`` where ``k`` reaches every other point of the same system:
    ``(2, E)`` indices of all ordered pairs ``(i, j)``, ``i != j``, within each system of ``batch``.
    The graph is symmetric, so the direction of ``flow`` does not change it."""
    counts = torch.bincount(batch)
    if bool((counts - 1 > k).any()) or loop:
        raise NotImplementedError("the stand-in knn_graph builds complete graphs only (k = N - 1, no loops)")
    rows, cols = [], []
    start = 0
    for n in counts.tolist():
        index = torch.arange(start, start + n, device=x.device)
        i, j = index.repeat_interleave(n), index.repeat(n)
        keep = i != j
        rows.append(i[keep])
        cols.append(j[keep])
        start += n
    return torch.stack([torch.cat(rows), torch.cat(cols)])


def install_stand_ins() -> None:
    """Modules SEGNO's N-body scripts import but, apart from ``knn_graph``, never use."""
    def unused(*args, **kwargs):
        raise NotImplementedError("SEGNO's N-body code was not expected to call this")

    geometric, data, geometric_nn, scatter = (types.ModuleType(name) for name in
                                              ("torch_geometric", "torch_geometric.data", "torch_geometric.nn",
                                               "torch_scatter"))
    data.Data, data.DataLoader = unused, unused
    geometric_nn.knn_graph = complete_graph
    geometric.data, geometric.nn = data, geometric_nn
    scatter.scatter = unused
    sys.modules.update({"torch_geometric": geometric, "torch_geometric.data": data, "torch_geometric.nn": geometric_nn,
                        "torch_scatter": scatter})


def seed_everything(seed: int) -> None:
    """What SEGNO's ``main.py`` seeds (its shuffling draws from the global generators)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(spec: dict) -> dict:
    install_stand_ins()
    sys.path.insert(0, spec["nbody"])
    from models.model import SEGNO  # noqa: E402  (SEGNO's own code, from its checkout)

    if spec["dataset"] == "charged":
        from nbody import train_nbody as trainer
        from nbody.dataset_nbody import NBodyDataset
    else:
        from nbody import train_gravity as trainer
        from nbody.dataset_gravity import NBodyDataset
    seed_everything(spec["seed"])
    args = argparse.Namespace(batch_size=spec["batch_size"], dataset_dir=spec["dataset_dir"], time_exp=False,
                              max_samples=spec["max_samples"])
    model = SEGNO(in_node_nf=1, in_edge_nf=2 if spec["dataset"] == "charged" else 1, hidden_nf=spec["hidden"],
                  device="cpu", n_layers=spec["layers"], recurrent=True, norm_diff=False, tanh=False)
    loaders = {partition: torch.utils.data.DataLoader(
        NBodyDataset(partition=partition, dataset_name=spec["dataset_dir"],
                     **({"max_samples": spec["max_samples"]} if partition == "train" else {})),
        batch_size=spec["batch_size"], num_workers=0, shuffle=partition == "train", drop_last=partition == "train")
        for partition in ("train", "val", "test")}
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    loss = nn.MSELoss()
    interval, best = spec["interval"], {"val": float("inf"), "epoch": None, "state": None, "test": None}

    def epoch_of(partition: str, epoch: int, criterion=loss) -> float:
        return trainer.run_epoch(model, optimizer, criterion, epoch, loaders[partition], interval, "cpu", args,
                                 backprop=partition == "train")[0]

    started = time.perf_counter()
    for epoch in range(spec["epochs"]):
        epoch_of("train", epoch)
        if (epoch % spec["test_interval"] == 0 or epoch == spec["epochs"] - 1) and epoch > 0:
            # as SEGNO's train: validation and test at every check (each pass draws from the global generator)
            val, test = epoch_of("val", epoch), epoch_of("test", epoch)
            if val < best["val"]:
                best.update(val=val, epoch=epoch, state=copy.deepcopy(model.state_dict()), test=test)
    seconds = time.perf_counter() - started
    model.load_state_dict(best["state"])
    predictions: list[torch.Tensor] = []

    def capturing(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predictions.append(predicted.detach().reshape(-1, BODIES, predicted.shape[-1]))
        return loss(predicted, target)

    with torch.no_grad():
        epoch_of("test", best["epoch"], capturing)
    np.save(Path(spec["out"]) / "predictions.npy", torch.cat(predictions).double().numpy())
    return {"best_epoch": best["epoch"], "best_validation_mse": best["val"], "own_test_mse": best["test"],
            "train_seconds": round(seconds, 1), "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(spec.get("threads", 1))
    out = Path(spec["out"])
    with open(out / "log.txt", "w") as log, contextlib.redirect_stdout(log):  # SEGNO prints every epoch
        result = train(spec)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
