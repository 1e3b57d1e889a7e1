"""Train a peer with its own code on files ``pieces.write_peer_files`` wrote, or chain a trained one.

Run as ``python peers_adapter.py PEER SPEC.json`` (``PEER``: ``segno`` or ``egnn``) by ``pieces.run_peer``
(for ``peers_side_by_side.py`` and ``long_horizon.py``) and by ``long_horizon.py``, in a fresh process whose
working folder is the peer's code, extracted from its own checkout (nothing of it is copied into hamnet).
Nothing of hamnet is imported here: the process sees the peer's code and numpy files only.

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

Two jobs, chosen by the spec's ``job``:

* ``train`` (the default): the spec (JSON) holds the peer's settings (``pieces.PEER_SCALES``), ``seed`` and
  ``out``, the folder for ``predictions.npy`` (``(B, 5, 3)``, test systems in file order), ``weights.pt``
  (the model's ``state_dict`` at its best validation epoch), ``result.json`` and ``log.txt``;
* ``chain``: the training spec plus ``weights``, ``start`` (an ``.npz`` of ``x``, ``v`` ``(B, 5, 3)`` and, for
  the charged set, ``charges`` ``(B, 5)``), ``links``, ``velocity`` (``model`` or ``difference``, see
  :func:`chain`), ``link_time``, the loader's folder and file suffix (``files_folder``, ``files_suffix``) and
  ``name``: writes ``out/<name>.npz`` (``x``, ``v``: ``(links + 1, B, 5, 3)``) and ``out/<name>.json``.
  The peer's model is applied to each state through its own dataset class and test pass, as in training.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import resource
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class PeerCode:
    """A peer's code as its scripts use it: ``build()`` makes the model, ``dataset(partition, **kw)`` its
    dataset of a partition, and ``run(model, optimizer, loader, epoch, backprop, into)`` its pass over a
    loader, returning the mean loss; with ``into``, every prediction the pass hands its loss is kept there."""

    build: Callable[[], nn.Module]
    dataset: Callable[..., object]
    run: Callable[..., float]


def segno_code(spec: dict) -> PeerCode:
    install_stand_ins()
    sys.path.insert(0, str(Path.cwd()))
    from models.model import SEGNO  # noqa: E402  (SEGNO's own code, from its checkout)

    if spec["dataset"] == "charged":
        from nbody import train_nbody as trainer
        from nbody.dataset_nbody import NBodyDataset
    else:
        from nbody import train_gravity as trainer
        from nbody.dataset_gravity import NBodyDataset
    args = argparse.Namespace(batch_size=spec["batch_size"], dataset_dir=spec["dataset_dir"], time_exp=False)

    def build() -> nn.Module:
        return SEGNO(in_node_nf=1, in_edge_nf=2 if spec["dataset"] == "charged" else 1, hidden_nf=spec["hidden"],
                     device="cpu", n_layers=spec["layers"], recurrent=True, norm_diff=False, tanh=False)

    def run(model, optimizer, loader, epoch: int, backprop: bool, into: list | None = None) -> float:
        criterion = nn.MSELoss() if into is None else capturing(nn.MSELoss(), into)
        return trainer.run_epoch(model, optimizer, criterion, epoch, loader, spec["interval"], "cpu", args,
                                 backprop=backprop)[0]

    return PeerCode(build, lambda partition, **kw: NBodyDataset(partition=partition, dataset_name=spec["dataset_dir"],
                                                                **kw), run)


def egnn_code(spec: dict) -> PeerCode:
    # main_nbody.py parses its flags and makes its log folders when imported: give it the spec's
    sys.argv = ["main_nbody.py", "--no-cuda", "--model", "egnn_vel", "--dataset", "nbody_small",
                "--epochs", str(spec["epochs"]), "--lr", str(spec["lr"]), "--nf", str(spec["hidden"]),
                "--n_layers", str(spec["layers"]), "--batch_size", str(spec["batch_size"]),
                "--max_training_samples", str(spec["max_samples"]), "--test_interval", str(spec["test_interval"]),
                "--weight_decay", str(spec["weight_decay"]), "--seed", str(spec["seed"]),
                "--outf", str(Path(spec["out"]) / "egnn-logs")]
    sys.path.insert(0, str(Path.cwd()))
    import main_nbody as egnn  # noqa: E402  (EGNN's own script, from its checkout)

    def build() -> nn.Module:
        return egnn.EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=spec["hidden"], device="cpu",
                             n_layers=spec["layers"], recurrent=True, norm_diff=False, tanh=False)

    def run(model, optimizer, loader, epoch: int, backprop: bool, into: list | None = None) -> float:
        loss = egnn.loss_mse
        if into is not None:
            egnn.loss_mse = capturing(loss, into)  # the loss its train pass calls
        try:
            return egnn.train(model, optimizer, epoch, loader, backprop=backprop)
        finally:
            egnn.loss_mse = loss

    return PeerCode(build, lambda partition, **kw: egnn.NBodyDataset(partition=partition, dataset_name="nbody_small",
                                                                     **kw), run)


def train(code: PeerCode, spec: dict, checked: Callable[[int], bool]) -> tuple[nn.Module, dict, list[torch.Tensor]]:
    """The peer's model trained by its own passes, seeded as its scripts seed (before the model is made);
    returns the model at its best validation epoch, the loop's figures and its test predictions."""
    seed_everything(spec["seed"])
    model = code.build()
    data = loaders(code.dataset, spec["batch_size"], spec["max_samples"])
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    best = fit(model, lambda partition, epoch: code.run(model, optimizer, data[partition], epoch, partition == "train"),
               spec["epochs"], checked)
    predictions: list[torch.Tensor] = []
    with torch.no_grad():
        code.run(model, optimizer, data["test"], best["epoch"], False, predictions)
    return model, best, predictions


#: when each peer's script validates: SEGNO's train every test_interval epochs after the first, and at the last;
#: EGNN's main every test_interval epochs from the first
CHECKED = {"segno": lambda spec: lambda epoch: (epoch % spec["test_interval"] == 0 or epoch == spec["epochs"] - 1)
           and epoch > 0,
           "egnn": lambda spec: lambda epoch: epoch % spec["test_interval"] == 0}
PEERS = {"segno": segno_code, "egnn": egnn_code}


# -- chaining a trained model ---------------------------------------------------------------------------------

def state_arrays(spec: dict, x: np.ndarray, v: np.ndarray, charges: np.ndarray | None) -> dict[str, np.ndarray]:
    """One state ``x, v: (B, BODIES, 3)`` in the layout of the peer's files, at the start frame of its
    ``interval`` (the frames before and after it are zeros: the loader reads the start frame and the target,
    and the target reaches only the loss, whose value the chain does not use). Charged (EGNN's layout):
    ``loc``, ``vel`` ``(B, T, 3, N)``, ``charges`` ``(B, N, 1)``, ``edges`` ``(B, N, N)``, products of charges;
    gravity (SEGNN's): ``loc``, ``vel`` ``(B, T, N, 3)``."""
    start, target = spec["interval"]
    charged = spec["dataset"] == "charged"
    arrays = {}
    for key, value in (("loc", x), ("vel", v)):
        frames = np.zeros((value.shape[0], target + 1, *value.shape[1:]))
        frames[:, start] = value
        arrays[key] = frames.transpose(0, 1, 3, 2) if charged else frames
    if charged:
        arrays |= {"charges": charges[..., None], "edges": charges[:, :, None] * charges[:, None, :]}
    return arrays


def chain(peer: str, code: PeerCode, spec: dict) -> dict[str, np.ndarray]:
    """The trained model (``spec["weights"]``) applied ``spec["links"]`` times, each link from the state the
    last one reached, through the peer's own loader and test pass: every state is written as a partition of
    its own (``chain<pid>``) in the peer's file layout and read back by its dataset class. The position comes
    from the model; the velocity handed to the next link (``spec["velocity"]``) is

    * ``model`` (SEGNO only): the velocity of SEGNO's last layer, ``v`` in its ``SEGNO_GCL.forward``, which
      its ``SEGNO.forward`` computes and drops (``x`` moves by ``v / n_layers`` in each layer, so after the
      last layer ``v`` is the model's velocity at the target time, in the units of the data);
    * ``difference``: the position change over the link divided by its duration, ``spec["link_time"]`` (the
      mean velocity over the link, not the velocity at its end).

    Returns ``x``, ``v``: ``(links + 1, B, BODIES, 3)``, the start state first."""
    if spec["velocity"] == "model" and peer != "segno":
        raise SystemExit(f"{peer}: its model carries no velocity state (EGNN_vel's layers read the input velocity "
                         "unchanged); chain it with velocity 'difference'")
    start = np.load(spec["start"])
    x, v = start["x"], start["v"]
    charges = start["charges"] if "charges" in start.files else None
    model = code.build()
    model.load_state_dict(torch.load(spec["weights"], weights_only=True))
    optimizer = torch.optim.Adam(model.parameters())  # the peers' passes zero its gradients; it never steps
    last_layer: list[torch.Tensor] = []
    if peer == "segno":  # SEGNO's forward applies one SEGNO_GCL n_layers times: keep the velocity of every call
        model.module.register_forward_hook(lambda module, inputs, output: last_layer.append(output[2].detach()))
    folder, partition = Path(spec["files_folder"]), f"chain{os.getpid()}"
    xs, vs = [x], [v]
    try:
        for link in range(spec["links"]):
            for key, array in state_arrays(spec, x, v, charges).items():
                np.save(folder / f"{key}_{partition}_{spec['files_suffix']}.npy", array)
            loader = torch.utils.data.DataLoader(code.dataset(partition), batch_size=spec["batch_size"],
                                                 shuffle=False, drop_last=False)
            positions: list[torch.Tensor] = []
            last_layer.clear()
            with torch.no_grad():
                code.run(model, optimizer, loader, link, False, positions)
            following = torch.cat(positions).double().numpy()
            if spec["velocity"] == "model":
                velocity = torch.cat(last_layer[spec["layers"] - 1::spec["layers"]])
                v = velocity.reshape(following.shape).double().numpy()
            else:
                v = (following - x) / spec["link_time"]
            x = following
            xs.append(x)
            vs.append(v)
    finally:
        for file in folder.glob(f"*_{partition}_*.npy"):
            file.unlink()
    return {"x": np.stack(xs), "v": np.stack(vs)}


def main() -> None:
    peer, spec = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    torch.set_num_threads(spec.get("threads", 1))
    # the peers' loaders build their edge attributes from a list of arrays, which torch warns is slow
    warnings.filterwarnings("ignore", "Creating a tensor from a list of numpy.ndarrays", UserWarning)
    out = Path(spec["out"])
    if spec.get("job", "train") == "chain":
        started = time.perf_counter()
        with open(out / f"log-{spec['name']}.txt", "w") as log, contextlib.redirect_stdout(log):
            states = chain(peer, PEERS[peer](spec), spec)
        np.savez(out / f"{spec['name']}.npz", **states)
        (out / f"{spec['name']}.json").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1),
                                                               "threads": torch.get_num_threads()}) + "\n")
        return
    with open(out / "log.txt", "w") as log, contextlib.redirect_stdout(log):  # the peers print every epoch
        model, best, predictions = train(PEERS[peer](spec), spec, CHECKED[peer](spec))
    torch.save(model.state_dict(), out / "weights.pt")
    np.save(out / "predictions.npy", torch.cat(predictions).double().numpy())
    result = {"best_epoch": best["epoch"], "best_validation_mse": best["val"], "own_test_mse": best["test"],
              "train_seconds": round(best["seconds"], 1),
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
