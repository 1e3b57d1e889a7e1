"""benchmarks/peers_side_by_side.py, the peers' side it shares in pieces.py, and peers_adapter.py without the
peers' code: the checkout checks, the conversion to SEGNO's layout (frames, axes, velocities), the refusal
of a wrong split and of a cached run of other settings, and the stand-in complete graph."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hamnet.protocols import PROTOCOLS, generate_protocol

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


peers = load("peers_side_by_side")
adapter = load("peers_adapter")
import pieces  # noqa: E402  (the peers' side the two benchmarks share)


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def fake_segno(tmp_path_factory) -> tuple[Path, str]:
    """A git repository with an N-body/main.py, at a commit that is not SEGNO's."""
    folder = tmp_path_factory.mktemp("segno")
    git(folder, "init", "-q")
    (folder / "N-body").mkdir()
    (folder / "N-body" / "main.py").write_text("print('not SEGNO')\n")
    git(folder, "add", ".")
    git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fake")
    return folder, git(folder, "rev-parse", "HEAD")


def test_a_checkout_that_is_not_the_peer_at_its_commit_is_refused_in_one_line(tmp_path, fake_segno):
    folder, head = fake_segno
    segno, egnn = pieces.PEERS["segno"], pieces.PEERS["egnn"]
    with pytest.raises(pieces.PeerCheckoutError, match="--segno .*nowhere: no such folder"):
        pieces.peer_commit(segno, tmp_path / "nowhere")
    with pytest.raises(pieces.PeerCheckoutError, match="not a git checkout; clone yliukj/SEGNO there"):
        pieces.peer_commit(segno, tmp_path)
    with pytest.raises(pieces.PeerCheckoutError, match=f"HEAD is {head[:7]}, not yliukj/SEGNO's {segno.commit}"):
        pieces.peer_commit(segno, folder)
    assert pieces.peer_commit(segno, folder, commit=head) == head  # the commit asked for, with its N-body folder
    with pytest.raises(pieces.PeerCheckoutError, match="has no main_nbody.py; is it vgsatorras/egnn"):
        pieces.peer_commit(egnn, folder, commit=head)  # SEGNO's repository given as EGNN's
    (folder / "N-body" / "main.py").unlink()
    git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "gone")
    with pytest.raises(pieces.PeerCheckoutError, match="has no N-body/main.py"):
        pieces.peer_commit(segno, folder, commit=git(folder, "rev-parse", "HEAD"))


@pytest.fixture(scope="module")
def charged():
    return generate_protocol("egnn-charged5", "test", 3, seed=5)


def test_charged_files_drop_hamnets_frame_zero_and_use_egnns_axes(charged):
    protocol = PROTOCOLS["egnn-charged5"]
    arrays = pieces.segno_arrays(charged, protocol)
    start, target = pieces.segno_interval(protocol, 1000)
    assert (start, target) == (30, 40)  # EGNN's frames, as SEGNO's main.py names them
    assert arrays["loc"].shape == (3, charged.n_times - 1, 3, 5)
    # EGNN's frame 30 is the state after 3100 steps: hamnet's frame 31
    torch.testing.assert_close(torch.from_numpy(arrays["loc"][:, start]).transpose(1, 2), charged.z[:, 31, 0])
    torch.testing.assert_close(torch.from_numpy(arrays["vel"][:, target]).transpose(1, 2),
                               charged.z[:, 41, 1] / charged.params["m"][..., None])
    charge = charged.params["charge"]
    assert arrays["charges"].shape == (3, 5, 1)
    torch.testing.assert_close(torch.from_numpy(arrays["edges"][:, 1, 2]), charge[:, 1] * charge[:, 2])


def test_gravity_files_keep_the_initial_state_in_segnns_axes():
    protocol = PROTOCOLS["segno-gravity5"]
    data = generate_protocol("segno-gravity5", "test", 2, seed=5)
    arrays = pieces.segno_arrays(data, protocol)
    assert pieces.segno_interval(protocol, 2000) == [0, 20]
    assert arrays["loc"].shape == (2, data.n_times, 5, 3) and set(arrays) == {"loc", "vel"}
    torch.testing.assert_close(torch.from_numpy(arrays["loc"][:, 20]), data.z[:, 20, 0])


def test_a_protocol_file_of_another_split_is_refused(tmp_path, charged):
    from hamnet.io import save_trajectories

    path = tmp_path / "charged.npz"
    save_trajectories(path, charged)
    with pytest.raises(ValueError, match="holds the 'test' split of egnn-charged5, not 'train'"):
        pieces.load_split(path, PROTOCOLS["egnn-charged5"], "train")
    with pytest.raises(ValueError, match="holds the 'egnn-charged5' set, not 'segno-gravity5'"):
        pieces.load_split(path, PROTOCOLS["segno-gravity5"], "test")


def test_a_cached_run_of_other_settings_is_refused_before_anything_runs(tmp_path, charged):
    scale = pieces.PEER_SCALES["smoke"]
    name = pieces.run_name("segno", "egnn-charged5", 1000, 0)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{name}.json").write_text(json.dumps({"settings": {"epochs": 1}}))
    with pytest.raises(ValueError, match="holds a run of other settings; delete it or give another --work"):
        pieces.run_peer(tmp_path, tmp_path / "no-segno-here", pieces.PEERS["segno"], PROTOCOLS["egnn-charged5"], 1000,
                       0, scale, charged, {"train": "x"})
    assert not (tmp_path / "runs" / name).exists()


def test_the_stand_in_knn_graph_joins_every_pair_of_each_system_only():
    batch = torch.tensor([0, 0, 0, 1, 1])
    edges = adapter.complete_graph(torch.zeros(5, 3), 2, batch)
    pairs = set(map(tuple, edges.T.tolist()))
    assert pairs == {(i, j) for i in range(3) for j in range(3) if i != j} | {(3, 4), (4, 3)}
    with pytest.raises(NotImplementedError, match="complete graphs only"):
        adapter.complete_graph(torch.zeros(5, 3), 1, batch)


def test_hamnets_rows_come_from_the_runs_on_the_same_files(tmp_path):
    """nbody_peers.py's scores beside the data folder the peers read, averaged over the seeds present."""
    (tmp_path / "data").mkdir()
    (tmp_path / "scores").mkdir()
    for seed, mse in ((0, [0.1, 0.2, 0.3]), (1, [0.3, 0.4, 0.5])):
        (tmp_path / "scores" / f"run{seed}.json").write_text(json.dumps(
            {"protocol": "egnn-charged5", "model": "EGNN-H", "seed": seed, "mse": mse}))
    summary, _ = peers.hamnet_side(tmp_path / "data")
    figures = summary["egnn-charged5"]["EGNN-H"]
    assert figures["1000"] == {"mean": pytest.approx(0.2), "std": pytest.approx(0.1), "n": 2}
    assert figures["2000"]["mean"] == pytest.approx(0.4)


def test_nbody_peers_seeds_trained_together_are_the_seeds_trained_alone(tmp_path):
    """nbody_peers.py --ensemble: the seeds of a model trained as one ensemble, each as its lone run, and the
    scoring then finds them trained."""
    from hamnet.checkpoint import load_checkpoint
    from hamnet.training import train

    nbody = load("nbody_peers")
    scale = nbody.SCALES["smoke"]
    protocol = nbody.PROTOCOLS["segno-gravity5"]
    budget = scale.budgets[protocol.name]
    runs = [(protocol.name, "EGNN-H", "egnn-h", None, seed) for seed in (0, 1)]
    nbody.train_together(tmp_path, runs, scale, 1, "cpu")
    data = nbody.data_file(tmp_path, protocol, "train", budget.train)
    for seed in (0, 1):
        config = nbody.hamiltonian_config(protocol, budget, "egnn-h", None, seed)
        together = tmp_path / "runs" / nbody.run_name(protocol.name, "EGNN-H", seed)
        assert nbody.trained(together, config)
        train(config, data, tmp_path / f"alone{seed}", progress=False)
        ours, theirs = (load_checkpoint(folder / "last.pt")["model"] for folder in (together, tmp_path / f"alone{seed}"))
        assert all(torch.allclose(ours[key], theirs[key], rtol=0, atol=1e-6) for key in theirs)
