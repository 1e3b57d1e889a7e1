"""The Python API refuses what the command line refuses, naming the argument, before any work; loading and
``hamnet info`` flag unphysical parameters and settings that contradict the arrays."""

import json
import logging

import numpy as np
import pytest
import torch

import hamnet
from hamnet.cli import main
from hamnet.data import Windows
from hamnet.evaluation import evaluate
from hamnet.io import TrajectoryFileError, load_trajectories
from hamnet.loss import window_mse
from hamnet.models import ModelConfig
from hamnet.rollouts import rollout, rollout_systems
from hamnet.simulation import generate
from hamnet.systems import Springs
from hamnet.training import TrainConfig

DATA = generate(Springs(n_particles=4), n_systems=4, steps=6, dt=0.01, seed=0)
MODEL = hamnet.build_model(ModelConfig(name="hlieconv", group="T2", width=8, depth=1, n_particles=4,
                                       feature_keys=("m", "k")))
Z0, PARAMS = DATA.z[:, 0], DATA.params


@pytest.mark.parametrize("call, error, names", [
    (lambda: rollout(MODEL, Z0.numpy(), PARAMS, 3, 0.1), TypeError, "z0"),
    (lambda: rollout(MODEL, Z0[:, 0], PARAMS, 3, 0.1), ValueError, "z0"),
    (lambda: rollout(MODEL, Z0, {k: v[:2] for k, v in PARAMS.items()}, 3, 0.1), ValueError, "params"),
    (lambda: rollout(MODEL, Z0, {"m": PARAMS["m"].numpy()}, 3, 0.1), TypeError, "params"),
    (lambda: rollout(MODEL, Z0, PARAMS, 2.5, 0.1), ValueError, "steps"),
    (lambda: rollout(MODEL, Z0, PARAMS, 3, "0.1"), TypeError, "dt"),
    (lambda: rollout(MODEL, Z0, PARAMS, 3, 0.1, dtype="float64"), TypeError, "dtype"),
    (lambda: rollout(MODEL, Z0, PARAMS, 3, 0.1, method=4), TypeError, "method"),
    (lambda: rollout_systems(MODEL, Z0, PARAMS, 3, 0.1, substeps=0), ValueError, "substeps"),
    (lambda: window_mse(MODEL, Windows(DATA, 3), -1.0), ValueError, "dt"),
    (lambda: window_mse(MODEL, Windows(DATA, 3), 0.01, batch_size=0), ValueError, "batch_size"),
    (lambda: evaluate(MODEL, "test.npz"), TypeError, "truth"),
    (lambda: generate(Springs(), n_systems=2, steps=3, dt=0.01, seed=1.5), ValueError, "seed"),
    (lambda: generate(Springs(), n_systems=0, steps=3, dt=0.01, seed=0), ValueError, "n_systems"),
])
def test_a_wrong_argument_is_refused_by_name(call, error, names):
    with pytest.raises(error, match=names) as refused:
        call()
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("build, error, names", [
    (lambda: TrainConfig(epochs=2.5), TypeError, "'epochs' must be int"),
    (lambda: TrainConfig(batch_size="50"), TypeError, "'batch_size' must be int"),
    (lambda: TrainConfig(lr="1e-3"), TypeError, "'lr' must be float"),
    (lambda: TrainConfig(model="hlieconv"), TypeError, "'model' must be a dict of ModelConfig settings"),
    (lambda: TrainConfig(max_windows=0), ValueError, "max_windows"),
    (lambda: TrainConfig(validation_windows=0), ValueError, "validation_windows"),
    (lambda: TrainConfig(seed=-1), ValueError, "seed"),
    (lambda: ModelConfig(width="8"), TypeError, "'width' must be int"),
    (lambda: ModelConfig(feature_keys="m"), TypeError, "'feature_keys' must be a list of str"),
    (lambda: ModelConfig(name=5), TypeError, "'name' must be str"),
    (lambda: hamnet.build_model({"name": "hlieconv"}), TypeError, "ModelConfig"),
])
def test_a_malformed_configuration_is_refused_by_field(build, error, names):
    with pytest.raises(error, match=names):
        build()


def test_numbers_of_numpy_and_lists_are_taken_as_what_they_stand_for():
    config = TrainConfig(epochs=np.int64(3), lr=np.float32(0.5), model={"name": "hlieconv", "feature_keys": ["m"]})
    assert type(config.epochs) is int and config.epochs == 3 and type(config.lr) is float
    assert config.model.feature_keys == ("m",)


def test_numpy_booleans_and_paths_are_taken_as_bool_and_str(tmp_path):
    config = TrainConfig(allow_rollout=np.bool_(True), init_from=tmp_path / "run" / "best.pt")
    assert config.allow_rollout is True and config.init_from == str(tmp_path / "run" / "best.pt")
    with pytest.raises(TypeError, match="'epochs' must be int, got np.True_|'epochs' must be int, got True"):
        TrainConfig(epochs=np.bool_(True))


def test_rollout_checks_arrive_before_any_integration(monkeypatch):
    import hamnet.rollouts as rollouts

    monkeypatch.setattr(rollouts, "HamiltonianField", lambda *args, **kwargs: pytest.fail("integrated before checking"))
    with pytest.raises(ValueError, match="params"):
        rollout(MODEL, Z0, {k: v[:1] for k, v in PARAMS.items()}, 3, 0.1)


def write_raw(path, data, meta_change):
    """A trajectory file written around ``save_trajectories``' own checks (as another program might)."""
    hamnet.save_trajectories(path, data)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta_change(meta)
    np.savez(path, meta=json.dumps(meta), **arrays)
    return path


@pytest.mark.parametrize("key, value", [("n_particles", 6), ("dim", 3)])
def test_settings_that_contradict_the_arrays_are_refused(tmp_path, key, value, capsys):
    path = write_raw(tmp_path / "x.npz", DATA, lambda meta: meta["system_settings"].update({key: value}))
    with pytest.raises(TrajectoryFileError, match=f"system_settings say {key} = {value}"):
        load_trajectories(path)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{key} = {value}" in err


def test_unphysical_spring_constants_are_flagged_by_loading_and_info(tmp_path, caplog, capsys):
    params = {**DATA.params, "k": DATA.params["k"].clone()}
    params["k"][2, 1] = -0.25
    path = tmp_path / "negative-k.npz"
    hamnet.save_trajectories(path, hamnet.Trajectories(DATA.t, DATA.z, params, DATA.meta))
    with caplog.at_level(logging.WARNING, logger="hamnet.io"):
        data = load_trajectories(path)
    assert data.unphysical() == ["spring constants 'k' must be positive; 1 of 4 systems have one that is not "
                                 "(smallest -0.25)"]
    assert any("spring constants 'k' must be positive" in record.message for record in caplog.records)
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "warning     spring constants 'k' must be positive" in out and "k' must" not in err  # said once
    assert DATA.unphysical() == []  # the generated springs are physical
