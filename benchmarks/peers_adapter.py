"""Train a peer with its own code on files ``peers_side_by_side.py`` wrote, and save its test predictions.

Run as ``python peers_adapter.py PEER SPEC.json`` (``PEER``: ``segno`` or ``egnn``) by
``peers_side_by_side.py``, in a fresh process whose working folder is the peer's code, extracted from its
own checkout (nothing of it is copied into hamnet). Nothing of hamnet is imported here: the process sees
the peer's code and numpy files only.

What is the peer's and what is ours:

* the peer's: the model (SEGNO's ``models.model.SEGNO``, EGNN's ``EGNN_vel``, built as their scripts build
  them), the data loaders (SEGNO's ``nbody/dataset_nbody.py`` and ``nbody/dataset_gravity.py``, EGNN's
  ``n_body_system/dataset_nbody.py``), and every training and evaluation pass (SEGNO's ``run_epoch``,
  EGNN's ``train`` in ``main_nbody.py``) with its optimiser (Adam), loss and defaults;
* ours: the epoch loop, which is the peer's own with one difference: it keeps the weights of the epoch
  with the best validation loss (the peers only print that epoch's test loss), so that the test
  positions come from the model the peer's own selection picks; and those predictions are captured
  from the peer's test pass through the loss function it calls, so the forward pass is its own;
* stand-ins: SEGNO's training scripts import ``torch_geometric`` and ``torch_scatter``, which have no
  wheel for this torch. Only ``knn_graph`` is called (gravity, with ``k = N - 1``: every other particle of
  the same system), so a stand-in builds that complete graph; the rest are names that are never used.

The spec (JSON) holds the peer's settings (see ``peers_side_by_side.py``), ``seed`` and ``out``, the
folder for ``predictions.npy`` (``(B, 5, 3)``, test systems in file order), ``result.json`` and ``log.txt``.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: both peers' N-body scripts hard-code five bodies per system
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
    """What the peers' scripts seed (their shuffling draws from the global generators)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loaders(dataset: Callable[..., object], batch_size: int, max_samples: int) -> dict:
    """The peers' three loaders, as their scripts make them (only training shuffles and drops the last batch)."""
    return {partition: torch.utils.data.DataLoader(
        dataset(partition, **({"max_samples": max_samples} if partition == "train" else {})),
        batch_size=batch_size, num_workers=0, shuffle=partition == "train", drop_last=partition == "train")
        for partition in ("train", "val", "test")}


def fit(model: nn.Module, run: Callable[[str, int], float], epochs: int, checked: Callable[[int], bool]) -> dict:
    """The peer's loop: a training pass per epoch and, at the epochs ``checked`` says, a validation and a
    test pass (each draws from the global generator, so both are run as the peer runs them); the weights of
    the best validation epoch are kept and loaded back at the end."""
    best = {"val": float("inf"), "epoch": None, "state": None, "test": None}
    started = time.perf_counter()
    for epoch in range(epochs):
        run("train", epoch)
        if checked(epoch):
            val, test = run("val", epoch), run("test", epoch)
            if val < best["val"]:
                best.update(val=val, epoch=epoch, state=copy.deepcopy(model.state_dict()), test=test)
    seconds = time.perf_counter() - started
    model.load_state_dict(best.pop("state"))
    return best | {"seconds": seconds}


def capturing(loss: Callable, into: list[torch.Tensor]) -> Callable:
    """``loss`` that also keeps every prediction it is handed, as ``(systems, BODIES, 3)``."""
    def criterion(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        into.append(predicted.detach().reshape(-1, BODIES, predicted.shape[-1]))
        return loss(predicted, target)
    return criterion


def train_segno(spec: dict) -> tuple[dict, list[torch.Tensor]]:
    install_stand_ins()
    sys.path.insert(0, str(Path.cwd()))
    from models.model import SEGNO  # noqa: E402  (SEGNO's own code, from its checkout)

    if spec["dataset"] == "charged":
        from nbody import train_nbody as trainer
        from nbody.dataset_nbody import NBodyDataset
    else:
        from nbody import train_gravity as trainer
        from nbody.dataset_gravity import NBodyDataset
    seed_everything(spec["seed"])
    args = argparse.Namespace(batch_size=spec["batch_size"], dataset_dir=spec["dataset_dir"], time_exp=False)
    model = SEGNO(in_node_nf=1, in_edge_nf=2 if spec["dataset"] == "charged" else 1, hidden_nf=spec["hidden"],
                  device="cpu", n_layers=spec["layers"], recurrent=True, norm_diff=False, tanh=False)
    data = loaders(lambda partition, **kw: NBodyDataset(partition=partition, dataset_name=spec["dataset_dir"], **kw),
                   spec["batch_size"], spec["max_samples"])
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])

    def run(partition: str, epoch: int, criterion: Callable = nn.MSELoss()) -> float:
        return trainer.run_epoch(model, optimizer, criterion, epoch, data[partition], spec["interval"], "cpu", args,
                                 backprop=partition == "train")[0]

    # SEGNO's train: validation and test every test_interval epochs after the first, and at the last
    best = fit(model, run, spec["epochs"],
               lambda epoch: (epoch % spec["test_interval"] == 0 or epoch == spec["epochs"] - 1) and epoch > 0)
    predictions: list[torch.Tensor] = []
    with torch.no_grad():
        run("test", best["epoch"], capturing(nn.MSELoss(), predictions))
    return best, predictions


def train_egnn(spec: dict) -> tuple[dict, list[torch.Tensor]]:
    # main_nbody.py parses its flags and makes its log folders when imported: give it the spec's
    sys.argv = ["main_nbody.py", "--no-cuda", "--model", "egnn_vel", "--dataset", "nbody_small",
                "--epochs", str(spec["epochs"]), "--lr", str(spec["lr"]), "--nf", str(spec["hidden"]),
                "--n_layers", str(spec["layers"]), "--batch_size", str(spec["batch_size"]),
                "--max_training_samples", str(spec["max_samples"]), "--test_interval", str(spec["test_interval"]),
                "--weight_decay", str(spec["weight_decay"]), "--seed", str(spec["seed"]),
                "--outf", str(Path(spec["out"]) / "egnn-logs")]
    sys.path.insert(0, str(Path.cwd()))
    seed_everything(spec["seed"])
    import main_nbody as egnn  # noqa: E402  (EGNN's own script, from its checkout)

    model = egnn.EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=spec["hidden"], device="cpu",
                          n_layers=spec["layers"], recurrent=True, norm_diff=False, tanh=False)
    data = loaders(lambda partition, **kw: egnn.NBodyDataset(partition=partition, dataset_name="nbody_small", **kw),
                   spec["batch_size"], spec["max_samples"])
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])

    def run(partition: str, epoch: int) -> float:
        return egnn.train(model, optimizer, epoch, data[partition], backprop=partition == "train")

    best = fit(model, run, spec["epochs"], lambda epoch: epoch % spec["test_interval"] == 0)  # EGNN's main
    predictions: list[torch.Tensor] = []
    egnn.loss_mse = capturing(egnn.loss_mse, predictions)  # the loss its train pass calls
    with torch.no_grad():
        run("test", best["epoch"])
    return best, predictions


PEERS = {"segno": train_segno, "egnn": train_egnn}


def main() -> None:
    peer, spec = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    torch.set_num_threads(spec.get("threads", 1))
    out = Path(spec["out"])
    with open(out / "log.txt", "w") as log, contextlib.redirect_stdout(log):  # the peers print every epoch
        best, predictions = PEERS[peer](spec)
    np.save(out / "predictions.npy", torch.cat(predictions).double().numpy())
    result = {"best_epoch": best["epoch"], "best_validation_mse": best["val"], "own_test_mse": best["test"],
              "train_seconds": round(best["seconds"], 1),
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
