"""hamnet.fit and an API that reads the data: the model's dimension, particle count and features come
from the file, as on the command line; three lines train on a file; progress where someone watches."""

from pathlib import Path

import pytest
import torch
from torch import nn

import hamnet
from hamnet.checkpoint import load_checkpoint
from hamnet.cli import build_parser
from hamnet.cli_train import train_config_from_args
from hamnet.io import Trajectories, load_trajectories, save_trajectories
from hamnet.models import ModelConfig, build_model
from hamnet.monitor import watched
from hamnet.simulation import generate
from hamnet.systems import Charged, NBody, Springs
from hamnet.training import TrainConfig, train

#: the smallest settings that train: a tiny network, one or two epochs of a few windows
SMALL = dict(width=8, depth=1, kernel_width=8, kernel_channels=4, epochs=2, batch_size=8, max_windows=16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    paths = {"nbody3d": folder / "nbody3d.npz", "charged": folder / "charged.npz", "springs": folder / "springs.npz"}
    save_trajectories(paths["nbody3d"], generate(NBody(dim=3, n_particles=4), n_systems=6, steps=8, dt=0.01, seed=0))
    save_trajectories(paths["charged"], generate(Charged(n_particles=3), n_systems=6, steps=8, dt=0.01, seed=0))
    save_trajectories(paths["springs"], generate(Springs(n_particles=4), n_systems=6, steps=8, dt=0.01, seed=0))
    return paths


def test_three_lines_train_on_a_file(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = hamnet.fit(files["nbody3d"], model="hlieconv", group="SE3", **SMALL)
    assert run.run_dir == Path("runs/hlieconv-SE3-1") and (run.run_dir / "best.pt").exists()
    assert isinstance(run.model, nn.Module) and not run.model.training
    assert (run.config.model.dim, run.config.model.n_particles, run.config.model.feature_keys) == (3, 4, ("m",))
    assert [line["epoch"] for line in run.metrics] == [1, 2]
    data = load_trajectories(files["nbody3d"])
    params = {key: value[:2].float() for key, value in data.params.items()}
    assert run.model.hamiltonian(data.z[:2, 0].float(), params).shape == (2,)
    assert hamnet.fit(files["nbody3d"], model="hlieconv", group="SE3", **SMALL).run_dir == Path("runs/hlieconv-SE3-2")


def test_train_takes_dimension_particles_and_features_from_the_data(files, tmp_path):
    config = TrainConfig(model=ModelConfig(name="hlieconv", group="SO2", width=8, depth=1), epochs=1, batch_size=8,
                         max_windows=16)
    train(config, files["charged"], tmp_path / "run")
    saved = load_checkpoint(tmp_path / "run" / "best.pt")["model_config"]
    assert (saved["dim"], saved["n_particles"], tuple(saved["feature_keys"])) == (2, 3, ("m", "charge"))


def test_a_model_config_built_from_a_file_is_the_one_the_command_line_makes(files):
    for path in files.values():
        args = build_parser().parse_args(["train", "--data", str(path), "--out", "run", "--model", "hogn"])
        assert ModelConfig(name="hogn").for_data(path) == train_config_from_args(args, load_trajectories(path)).model
    kept = ModelConfig(n_particles=9, feature_keys=("m",)).for_data(files["springs"])
    assert (kept.n_particles, kept.feature_keys, kept.dim, kept.group) == (9, ("m",), 2, "T2")
    with pytest.raises(ValueError, match="the data holds 3D systems: group 'SO2' acts in 2 dimensions"):
        ModelConfig(group="SO2").for_data(files["nbody3d"])


def test_a_config_without_data_builds_the_springs_model_it_always_did():
    model = build_model(ModelConfig(name="hlieconv", group="SO2", width=8, depth=1))
    assert (model.config.n_particles, model.config.dim, model.config.feature_keys) == (6, 2, ("m", "k"))
    assert ModelConfig(group="SE3").dim is None  # no longer refused for want of a dimension


def test_fit_on_trajectories_in_memory_writes_them_into_the_run(files, tmp_path):
    data = load_trajectories(files["springs"])
    run = hamnet.fit(data, model="fc-hnn", run_dir=tmp_path / "run", **{**SMALL, "epochs": 1})
    assert torch.equal(load_trajectories(run.run_dir / "data.npz").z, data.z)
    assert str(run.run_dir / "data.npz") in (run.run_dir / "config.toml").read_text()
    with pytest.raises(ValueError, match="exists and is not empty"):
        hamnet.fit(data, model="fc-hnn", run_dir=tmp_path / "run", **SMALL)


@pytest.mark.parametrize("data, settings, error, match", [
    ("springs", {"widht": 8}, TypeError, "unexpected settings \\['widht'\\]"),
    ("springs", {"group": "SO3"}, ValueError, "group 'SO3' acts in 3 dimensions"),
    ("memory", {"group": "SO3"}, ValueError, "group 'SO3' acts in 3 dimensions"),
    ("springs", {"epochs": 0}, ValueError, "epochs must be at least 1"),
])
def test_fit_refuses_bad_settings_and_leaves_nothing(files, tmp_path, monkeypatch, data, settings, error, match):
    monkeypatch.chdir(tmp_path)
    given = load_trajectories(files["springs"]) if data == "memory" else files["springs"]
    with pytest.raises(error, match=match):
        hamnet.fit(given, **{**SMALL, **settings})
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "runs"])


def test_progress_shows_where_asked_and_by_default_only_where_someone_watches(files, tmp_path, capsys):
    config = TrainConfig(model=ModelConfig(name="fc-hnn", width=8, depth=1), epochs=1, batch_size=8, max_windows=16)
    assert not watched()  # pytest captures stderr: nobody watches
    train(config, files["springs"], tmp_path / "default")
    assert capsys.readouterr().err == ""
    train(config, files["springs"], tmp_path / "shown", progress=True)
    assert "training" in capsys.readouterr().err


def test_trajectories_in_memory_of_another_kind_train_through_the_same_call(tmp_path):
    data = generate(NBody(dim=3, n_particles=3), n_systems=6, steps=8, dt=0.01, seed=1)
    assert isinstance(data, Trajectories)
    run = hamnet.fit(data, model="egnn-h", run_dir=tmp_path / "three", **SMALL)
    assert run.config.model.n_particles == 3 and run.config.model.dim == 3
