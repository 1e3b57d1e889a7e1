"""Ensembles (hamnet.ensemble): each member trained jointly is the member trained alone, resumes as a
run does, diverges alone, and settings the members cannot share are refused before anything is written."""

import dataclasses
import math

import pytest
import torch

from hamnet.checkpoint import load_checkpoint, model_from_checkpoint
from hamnet.cli import main
from hamnet.ensemble import EnsembleModel, joint_step, train_ensemble
from hamnet.io import save_trajectories
from hamnet.models import ModelConfig, build_model
from hamnet.optimisation import TrainingStep
from hamnet.runs import read_metrics
from hamnet.simulation import generate
from hamnet.systems import Springs
from hamnet.training import TrainConfig, train
from problems import jump_at

MODELS = {
    "hlieconv-so2": ModelConfig(name="hlieconv", group="SO2", width=8, depth=1, kernel_width=8, kernel_channels=4,
                                n_particles=4, feature_keys=("m", "k")),
    "egnn-h": ModelConfig(name="egnn-h", width=16, depth=2, n_particles=4, feature_keys=("m", "k")),
    "fc-hnn": ModelConfig(name="fc-hnn", width=16, depth=2, n_particles=4, feature_keys=("m", "k")),
    "fc-node": ModelConfig(name="fc-node", width=16, depth=2, n_particles=4, feature_keys=("m", "k")),
}


@pytest.fixture(scope="module")
def springs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "springs.npz"
    save_trajectories(path, generate(Springs(n_particles=4), n_systems=24, steps=12, dt=0.01, seed=0))
    return path


def members(model: ModelConfig, **changes) -> list[TrainConfig]:
    """Three members of one shape that differ in seed (weights, split, windows, order) and learning rate."""
    settings = dict(model=model, epochs=2, batch_size=16, max_windows=48, validation_windows=16)
    base = TrainConfig(**{**settings, **changes})
    return [dataclasses.replace(base, seed=seed, lr=lr) for seed, lr in ((0, 1e-2), (1, 3e-3), (2, 3e-2))]


def weights(run) -> dict:
    return load_checkpoint(run / "last.pt")["model"]


def close(a: dict, b: dict, atol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[key], b[key], rtol=0, atol=atol) for key in a)


@pytest.mark.parametrize("name, changes", [*((name, {}) for name in MODELS), ("fc-hnn", {"epoch_windows": 24})])
def test_a_member_trained_together_is_the_member_trained_alone(springs_file, tmp_path, name, changes):
    """Each member as trained alone, also where each epoch draws its own windows (``epoch_windows``)."""
    configs = members(MODELS[name], **changes)
    results = train_ensemble(configs, springs_file, [tmp_path / f"together{k}" for k in range(3)])
    for k, config in enumerate(configs):
        alone = train(config, springs_file, tmp_path / f"alone{k}", progress=False)
        trained = model_from_checkpoint(tmp_path / f"together{k}" / "last.pt")[0]
        initial = build_model(trained.config, torch.Generator().manual_seed(config.seed)).state_dict()
        assert not close(weights(tmp_path / f"together{k}"), initial, atol=1e-6)  # it trained
        assert close(weights(tmp_path / f"together{k}"), weights(tmp_path / f"alone{k}"), atol=1e-6)
        assert math.isclose(results[k]["train_loss"], alone["train_loss"], rel_tol=1e-5)
        assert math.isclose(results[k]["validation_mse"], alone["validation_mse"], rel_tol=1e-5)
        assert [line["epoch"] for line in read_metrics(tmp_path / f"together{k}" / "metrics.jsonl")] == [1, 2]


def test_members_with_other_kernel_bounds_keep_their_own(springs_file, tmp_path):
    """Members' automatic kernel bounds come from their own training windows, so they differ by seed; each
    keeps its own (here set to three different numbers)."""
    configs = [dataclasses.replace(config, model=dataclasses.replace(config.model, kernel_bound=bound),
                                   kernel_bound_factor=None)
               for config, bound in zip(members(MODELS["hlieconv-so2"]), (0.5, 2.0, 8.0))]
    train_ensemble(configs, springs_file, [tmp_path / f"together{k}" for k in range(3)])
    for k, config in enumerate(configs):
        train(config, springs_file, tmp_path / f"alone{k}", progress=False)
        assert load_checkpoint(tmp_path / f"together{k}" / "last.pt")["model_config"]["kernel_bound"] == config.model.kernel_bound
        assert close(weights(tmp_path / f"together{k}"), weights(tmp_path / f"alone{k}"), atol=1e-6)


def test_the_joint_energy_and_forces_are_each_members_own_in_float64():
    """Row block k of the ensemble's potential and forces is member k's, on states of every member at once."""
    model = dataclasses.replace(MODELS["hlieconv-so2"], kernel_bound=None)
    models = [build_model(model, torch.Generator().manual_seed(seed)).double() for seed in range(3)]
    models[1].potential_net.kernel_bound, models[2].potential_net.kernel_bound = 1.5, 4.0
    models[0].potential_net.kernel_bound = 3.0
    ensemble = EnsembleModel(models)
    generator = torch.Generator().manual_seed(5)
    system = Springs(n_particles=4)
    params = system.sample_params(12, generator)
    z = system.sample_state(params, generator)
    params = {key: value.double() for key, value in params.items() if key in ("m", "k")}
    energy, forces = ensemble.potential(z[:, 0], params), ensemble.forces(z[:, 0], params)
    for k, member in enumerate(models):
        rows = slice(4 * k, 4 * (k + 1))
        own = {key: value[rows] for key, value in params.items()}
        torch.testing.assert_close(energy[rows], member.potential(z[rows, 0], own), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(forces[rows], member.forces(z[rows, 0], own), rtol=1e-12, atol=1e-12)


def test_models_of_other_shapes_or_classes_make_no_ensemble():
    small = build_model(MODELS["egnn-h"], torch.Generator().manual_seed(0))
    wide = build_model(dataclasses.replace(MODELS["egnn-h"], width=32), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="differ in the names, shapes or dtypes"):
        EnsembleModel([small, wide])
    with pytest.raises(ValueError, match="all of one class"):
        EnsembleModel([small, build_model(MODELS["fc-hnn"], torch.Generator().manual_seed(0))])


@pytest.mark.parametrize("weight_floor", [None, 0.1])
def test_a_joint_step_gives_each_member_its_own_gradient_in_float64(springs_file, weight_floor):
    from hamnet.data import Windows
    from hamnet.io import load_trajectories

    data = load_trajectories(springs_file)
    windows = Windows(data, 5)
    config = TrainConfig(model=MODELS["egnn-h"].for_data(data), dtype="float64", batch_size=8, chunk=5,
                         weight_floor=weight_floor)
    built = lambda seed: build_model(config.model, torch.Generator().manual_seed(seed)).double()  # noqa: E731
    together = [TrainingStep(config, 0.01, 10, model=built(seed)) for seed in range(3)]
    alone = [TrainingStep(config, 0.01, 10, model=built(seed)) for seed in range(3)]
    batches = [windows[torch.arange(8 * k, 8 * (k + 1))] for k in range(3)]
    values = joint_step(together, batches, scale=0.01)
    for step, other, batch, value in zip(together, alone, batches, values):
        assert math.isclose(value, other(*batch, scale=0.01), rel_tol=1e-12)
        for a, b in zip(step.model.parameters(), other.model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_an_ensemble_resumes_as_if_it_had_not_stopped(springs_file, tmp_path):
    configs = members(MODELS["hlieconv-so2"], epochs=3)
    straight = [tmp_path / f"straight{k}" for k in range(3)]
    cut = [tmp_path / f"cut{k}" for k in range(3)]
    train_ensemble(configs, springs_file, straight)
    train_ensemble(configs, springs_file, cut, stop_after_epochs=1)
    # a kill between two members' checkpoints: member 0 one epoch ahead of the others
    train(configs[0], springs_file, cut[0], resume=True, stop_after_epochs=1, progress=False)
    assert [load_checkpoint(folder / "last.pt")["epoch"] for folder in cut] == [2, 1, 1]
    train_ensemble(configs, springs_file, cut, resume=True)
    for a, b in zip(straight, cut):
        assert load_checkpoint(b / "last.pt")["epoch"] == 3
        assert close(weights(a), weights(b), atol=1e-6)
        assert [line["epoch"] for line in read_metrics(b / "metrics.jsonl")] == [1, 2, 3]


def test_a_member_that_diverges_leaves_and_the_others_go_on(springs_file, tmp_path):
    configs = members(MODELS["fc-hnn"])
    configs[1] = dataclasses.replace(configs[1], lr=1e30)  # weights near 1e30 after one step: the loss overflows
    results = train_ensemble(configs, springs_file, [tmp_path / f"m{k}" for k in range(3)])
    assert "training diverged" in results[1]["diverged"] and "lower --lr" in results[1]["diverged"]
    assert load_checkpoint(tmp_path / "m1" / "last.pt")["epoch"] < 2
    for k in (0, 2):
        train(configs[k], springs_file, tmp_path / f"alone{k}", progress=False)
        assert results[k]["epoch"] == 2
        assert close(weights(tmp_path / f"m{k}"), weights(tmp_path / f"alone{k}"), atol=1e-6)


def test_a_member_whose_epoch_jumps_is_rolled_back_alone(springs_file, tmp_path, monkeypatch):
    """With ``rollback``, the member whose step throws its weights far off gets its last epoch's weights back
    (its own model is what the joint step stacks); the others go on untouched."""
    configs = members(MODELS["fc-hnn"], rollback=10.0)
    folders = [tmp_path / f"m{k}" for k in range(3)]
    train_ensemble(configs, springs_file, folders, stop_after_epochs=1)
    first = weights(folders[1])
    # epoch 2's first joint step: member 1's optimiser is the second called
    monkeypatch.setattr(torch.optim.Adam, "step", jump_at(2))
    train_ensemble(configs, springs_file, folders, resume=True)
    assert [read_metrics(folder / "metrics.jsonl")[1].get("rolled_back", False) for folder in folders] == [
        False, True, False]
    assert close(weights(folders[1]), first, atol=0)
    monkeypatch.undo()
    calm = [tmp_path / f"calm{k}" for k in range(3)]
    train_ensemble(configs, springs_file, calm)
    assert all(close(weights(folders[k]), weights(calm[k]), atol=1e-6) for k in (0, 2))


@pytest.mark.parametrize("change, message", [
    (lambda c: dataclasses.replace(c, model=dataclasses.replace(c.model, width=32)), "differs from member 1 in model.width"),
    (lambda c: dataclasses.replace(c, chunk=3), "differs from member 1 in chunk"),
    (lambda c: dataclasses.replace(c, compile="on"), "not compiled"),
    (lambda c: dataclasses.replace(c, validation=0.3), "windows an epoch"),
    (lambda c: dataclasses.replace(c, epoch_windows=8), "windows an epoch"),
])
def test_members_that_cannot_share_a_step_are_refused_and_nothing_is_left(springs_file, tmp_path, change, message):
    configs = members(MODELS["fc-hnn"], max_windows=None)
    configs[2] = change(configs[2])
    with pytest.raises(ValueError, match=message) as raised:
        train_ensemble(configs, springs_file, [tmp_path / f"m{k}" for k in range(3)])
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []
    for k in range(3):  # folders that were there, empty, stay empty
        (tmp_path / f"m{k}").mkdir()
    with pytest.raises(ValueError, match=message):
        train_ensemble(configs, springs_file, [tmp_path / f"m{k}" for k in range(3)])
    assert all(list((tmp_path / f"m{k}").iterdir()) == [] for k in range(3))


def test_a_monte_carlo_lift_is_refused_before_anything_is_written(springs_file, tmp_path):
    model = dataclasses.replace(MODELS["hlieconv-so2"], group="SE2", lift="monte-carlo", lift_samples=2)
    with pytest.raises(ValueError, match="Monte Carlo lift"):
        train_ensemble(members(model), springs_file, [tmp_path / f"m{k}" for k in range(3)])
    assert list(tmp_path.iterdir()) == []


def test_substeps_auto_resolved_apart_is_refused_before_any_folder_is_touched(tmp_path):
    """--substeps auto is chosen from each member's own training windows: seeds 0 and 1 of this coarse file
    choose different numbers (55 and 61), which one joint pass cannot integrate. Folders that existed stay
    as they were."""
    coarse = tmp_path / "coarse.npz"
    save_trajectories(coarse, generate(Springs(n_particles=4), n_systems=24, steps=12, dt=0.1, seed=0))
    configs = [dataclasses.replace(config, substeps="auto", chunk=3) for config in members(MODELS["fc-hnn"])[:2]]
    (tmp_path / "m0").mkdir()
    with pytest.raises(ValueError, match=r"resolved --substeps auto to \d+, \d+ .* --substeps \d+"):
        train_ensemble(configs, coarse, [tmp_path / "m0", tmp_path / "m1"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["coarse.npz", "m0"]
    assert list((tmp_path / "m0").iterdir()) == []


def test_a_folder_another_process_holds_is_left_to_it_and_ours_are_removed(springs_file, tmp_path):
    from hamnet.runs import RunFiles, RunFolderInUse, locked, make_run_folder

    theirs = RunFiles(tmp_path / "m1")
    make_run_folder(theirs, resume=False)
    with locked(theirs):
        with pytest.raises(RunFolderInUse):
            train_ensemble(members(MODELS["fc-hnn"])[:2], springs_file, [tmp_path / "m0", tmp_path / "m1"])
        assert not (tmp_path / "m0").exists()  # made by the failed call: removed
        assert sorted(path.name for path in (tmp_path / "m1").iterdir()) == [".lock"]  # theirs: untouched


def test_two_members_in_one_folder_are_refused(springs_file, tmp_path):
    configs = members(MODELS["fc-hnn"])
    with pytest.raises(ValueError, match="folders of their own"):
        train_ensemble(configs, springs_file, [tmp_path / "a", tmp_path / "b", tmp_path / "a"])
    with pytest.raises(ValueError, match="one run folder per member"):
        train_ensemble(configs, springs_file, [tmp_path / "a"])
    assert list(tmp_path.iterdir()) == []


def test_the_cli_trains_one_member_per_seed(springs_file, tmp_path, capsys):
    out = tmp_path / "ensemble"
    flags = ["train", "--data", str(springs_file), "--model", "fc-hnn", "--width", "16", "--depth", "2", "--epochs", "1",
             "--batch-size", "16", "--max-windows", "48", "--quiet"]
    assert main([*flags, "--out", str(out), "--ensemble-seeds", "3", "5"]) == 0
    for seed in (3, 5):
        alone = tmp_path / f"alone{seed}"
        assert main([*flags, "--out", str(alone), "--seed", str(seed)]) == 0
        assert load_checkpoint(out / f"seed{seed}" / "last.pt")["train_config"]["seed"] == seed
        assert close(weights(out / f"seed{seed}"), weights(alone), atol=1e-6)
        assert f"seed = {seed}" in (out / f"seed{seed}" / "config.toml").read_text()
    assert capsys.readouterr().out.count("trained fc-hnn to epoch 1") == 4


def test_the_cli_will_not_put_members_inside_a_run(springs_file, tmp_path, capsys):
    flags = ["train", "--data", str(springs_file), "--model", "fc-hnn", "--epochs", "1", "--max-windows", "16", "--quiet"]
    assert main([*flags, "--out", str(tmp_path / "lone")]) == 0
    before = sorted(path.name for path in (tmp_path / "lone").iterdir())
    assert main([*flags, "--out", str(tmp_path / "lone"), "--ensemble-seeds", "0", "1"]) == 1
    assert "holds a run" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "lone").iterdir()) == before


@pytest.mark.parametrize("extra, message", [
    (["--ensemble-seeds", "1", "1"], "each seed once"),
    (["--ensemble-seeds", "1", "2", "--seed", "3"], "drop --seed"),
    (["--ensemble-seeds", "1", "-2"], "--seed must be between"),
    (["--ensemble-seeds", "1", "2", "--compile", "on"], "not compiled"),
])
def test_the_cli_refuses_an_impossible_ensemble_in_one_line(springs_file, tmp_path, capsys, extra, message):
    code = main(["train", "--data", str(springs_file), "--model", "fc-hnn", "--out", str(tmp_path / "e"), *extra])
    error = capsys.readouterr().err
    assert code == 1 and message in error and error.count("\n") == 1
    assert not (tmp_path / "e").exists()
