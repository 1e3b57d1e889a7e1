"""Pretrained models shipped in hamnet/pretrained: loadable by name from the API and the CLI, each with a card."""

import pytest
import torch

from hamnet.checkpoint import CheckpointError, model_from_checkpoint, pretrained_models, resolve_checkpoint
from hamnet.diagnostics import angular_momentum, drift, linear_momentum
from hamnet.io import load_trajectories, save_trajectories
from hamnet.provenance import file_sha256
from hamnet.simulation import generate
from hamnet.systems import Springs

from problems import run_cli

SHIPPED = sorted(pretrained_models())


def test_the_springs_models_are_shipped():
    assert {"springs-so2", "springs-t2"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_loads_by_name_and_has_a_card_with_its_commands_and_metrics(name):
    model, state = model_from_checkpoint(name)
    same, _ = model_from_checkpoint(f"pretrained:{name}")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    assert "optimizer" not in state  # weights, configs and data description only
    card = resolve_checkpoint(name).with_suffix(".md").read_text()
    for needed in ("hamnet generate", "hamnet train", "pretrained_card.py", "valid prediction time",
                   "diverged over", "true-energy drift"):
        assert needed in card, needed


def test_a_pretrained_so2_model_rolls_out_from_the_cli_keeping_both_momenta(tmp_path, capsys):
    data = tmp_path / "springs.npz"
    save_trajectories(data, generate(Springs(), n_systems=3, steps=5, dt=0.01, seed=3))
    out = tmp_path / "rollout.npz"
    code, stdout, _ = run_cli(["rollout", "--checkpoint", "springs-so2", "--data", data, "--steps", "300",
                               "--out", out], capsys)
    assert code == 0 and "hlieconv SO2" in stdout
    rolled = load_trajectories(out)
    # round-off is relative to the terms summed: a particle that wanders far from the data (bounded speed, but
    # far) makes sum_i |q_i x p_i| many times the total, and the total is kept to round-off of that sum
    q, p = rolled.z[:, :, 0], rolled.z[:, :, 1]
    linear_scale = p.norm(dim=-1).sum(-1).amax(1)
    angular_scale = (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).abs().sum(-1).amax(1)
    assert float(drift(linear_momentum(rolled.z), linear_scale).max()) < 1e-13
    assert float(drift(angular_momentum(rolled.z), angular_scale).max()) < 1e-13
    assert rolled.meta["checkpoint"] == "pretrained:springs-so2"  # recorded unambiguously
    assert rolled.meta["pretrained"]["name"] == "springs-so2"
    assert rolled.meta["checkpoint_sha256"] == file_sha256(pretrained_models()["springs-so2"])


def test_unknown_names_and_listing(tmp_path, capsys, monkeypatch):
    with pytest.raises(CheckpointError, match="no pretrained model 'springs-xyz'; shipped: .*springs-so2"):
        model_from_checkpoint("pretrained:springs-xyz")
    code, stdout, _ = run_cli(["pretrained"], capsys)
    assert code == 0 and all(name in stdout for name in SHIPPED)
    code, _, err = run_cli(["rollout", "--checkpoint", "springs-xyz", "--data", tmp_path / "x.npz", "--out",
                            tmp_path / "y.npz"], capsys)
    assert code == 1 and err.count("\n") == 1 and "springs-so2" in err
    # a file of that name in the working folder is a path, and wins over the shipped model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "springs-so2").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        model_from_checkpoint("springs-so2")
