"""Settings files: TOML written and read back exactly, hamnet train --config / --print-config, flags over
the file, and a run repeated from the config.toml its folder keeps."""

import dataclasses
import json
import math
import tomllib

import pytest
import torch

from hamnet.checkpoint import load_checkpoint
from hamnet.cli import build_parser, main
from hamnet.cli_train import FLAG_KEYS, train_config_from_args
from hamnet.io import save_trajectories
from hamnet.settings_file import NONE, dumps, read_settings
from hamnet.simulation import generate
from hamnet.systems import NBody, Springs
from hamnet.training import TrainConfig

from problems import run_cli

TINY = ["--width", "8", "--depth", "1", "--epochs", "2", "--batch-size", "16", "--max-windows", "32", "--quiet"]


@pytest.fixture(scope="module")
def springs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("settings") / "springs.npz"
    save_trajectories(path, generate(Springs(n_particles=4), n_systems=12, steps=10, dt=0.01, seed=0))
    return path


@pytest.fixture(scope="module")
def trained(springs_file, tmp_path_factory):
    """A tiny HLieConv SO2 run trained from the command line, with the settings it resolves from its data
    (kernel bound, sub-steps)."""
    run = tmp_path_factory.mktemp("runs") / "first"
    assert main(["train", "--data", str(springs_file), "--out", str(run), "--group", "SO2", "--substeps", "auto",
                 *TINY]) == 0
    return run


def config_of(argv: list[str]) -> TrainConfig:
    return train_config_from_args(build_parser().parse_args(["train", *argv]))


def test_what_is_written_reads_back_exactly(tmp_path):
    values = {"text": 'a "quoted" \\ back\nslash\ttab \x7f é 漢 😀', "ints": 2**62, "negative": -3, "small": 1e-300,
              "big": 1e300, "third": 1 / 3, "tenth": 0.1, "whole": 2.0, "infinite": math.inf, "yes": True, "no": False,
              "list": ["m", "k"], "numbers": (1, 2.5), "nothing": None, "empty": []}
    text = dumps({"one": values, "two words": {"a-b_c": 1}}, header="a header\nover two lines")
    assert text.startswith("# a header\n# over two lines\n")
    read = tomllib.loads(text)
    assert read["one"] == {**values, "numbers": [1, 2.5], "nothing": NONE, "empty": []}
    assert read["two words"] == {"a-b_c": 1}
    path = tmp_path / "run.toml"
    path.write_text(dumps({"train": {"max_windows": None, "epochs": 3}, "model": {"feature_keys": ["m"]}}))
    train, run = read_settings(path, TrainConfig)
    assert train == {"max_windows": None, "epochs": 3, "model": {"feature_keys": ["m"]}} and run.device == "cpu"


def test_print_config_writes_every_setting_and_reading_it_gives_the_same_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--model", "hlieconv", "--group", "SE3", "--epochs", "7", "--lr", "3e-3", "--kernel-bound", "none",
             "--substeps", "auto", "--clip-grad", "1", "--warmup", "0.05", "--select", "rollout", "--select-steps", "9",
             "--weight-floor", "0.1", "--coupling", "k", "--tensorboard", "--data", "d.npz", "--out", "runs/x"]
    code, out, err = run_cli(["train", *flags, "--print-config"], capsys)
    assert code == 0 and err == "" and not (tmp_path / "runs").exists()
    tables = tomllib.loads(out)
    everything = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    assert set(tables["train"]) == everything and tables["model"]["dim"] == NONE and tables["model"]["group"] == "SE3"
    assert tables["model"]["coupling"] == "k"
    assert tables["run"] == {"data": "d.npz", "out": "runs/x", "device": "cpu", "tensorboard": True}
    path = tmp_path / "run.toml"
    path.write_text(out)
    assert config_of(["--config", str(path)]) == config_of(flags)
    assert config_of(["--config", str(path)]).model.dim is None  # left to the data


def test_a_flag_given_overrides_the_file_even_at_its_default(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = 3\nseed = 5\nlr = 0.5\n\n[model]\nwidth = 8\ngroup = "SO2"\n')
    config = config_of(["--config", str(path), "--seed", "0", "--epochs", "4"])
    assert (config.seed, config.epochs, config.lr, config.model.width, config.model.group) == (0, 4, 0.5, 8, "SO2")
    assert config_of(["--config", str(path)]).seed == 5
    assert config.kernel_bound_factor == TrainConfig.kernel_bound_factor  # neither gives it: --kernel-bound auto


def test_coupling_none_on_the_command_line_turns_off_the_files_coupling(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\ngroup = "SE2"\ncoupling = "k"\n')
    assert config_of(["--config", str(path)]).model.coupling == "k"
    assert config_of(["--config", str(path), "--coupling", "none"]).model.coupling is None
    assert config_of(["--config", str(path), "--coupling", "affine"]).model.coupling == "affine"


def test_every_setting_flag_names_a_key_of_the_file():
    tables = {"train": {f.name for f in dataclasses.fields(TrainConfig)},
              "model": {f.name for f in dataclasses.fields(TrainConfig().model)}, "run": {"data", "out", "device",
                                                                                          "tensorboard"}}
    assert all(key in tables[table] for table, key in FLAG_KEYS.values())
    parser = build_parser()
    train_parser = next(action for action in parser._subparsers._group_actions[0].choices.values()
                        if action.prog.endswith(" train"))
    flags = {option for action in train_parser._actions for option in action.option_strings if option.startswith("--")}
    not_settings = {"--help", "--config", "--print-config", "--kernel-bound", "--resume", "--quiet", "--threads",
                    "--debug", "--plugin", "--ensemble-seeds"}
    assert flags - not_settings == set(FLAG_KEYS)


def test_the_run_folder_keeps_its_resolved_settings(trained, springs_file):
    tables = tomllib.loads((trained / "config.toml").read_text())
    saved = json.loads((trained / "config.json").read_text())["train_config"]
    assert tables["model"]["dim"] == 2 and tables["model"]["n_particles"] == 4
    assert tables["model"]["feature_keys"] == ["m", "k"] and tables["model"]["kernel_bound"] > 0
    assert isinstance(tables["train"]["substeps"], int) and tables["train"]["method"] == "leapfrog"
    assert tables["run"] == {"data": str(springs_file), "out": str(trained), "device": "cpu", "tensorboard": False}
    train, _ = read_settings(trained / "config.toml", TrainConfig)
    assert TrainConfig.from_dict(train) == TrainConfig.from_dict(saved)


def test_a_run_repeated_from_its_config_file_gives_the_same_metrics(trained, tmp_path, capsys):
    again = tmp_path / "again"
    code, _, err = run_cli(["train", "--config", str(trained / "config.toml"), "--out", str(again), "--quiet"], capsys)
    assert code == 0, err
    kept = ("epoch", "train_loss", "validation_mse", "lr")
    first, second = ([{key: line[key] for key in kept} for line in map(json.loads, (run / "metrics.jsonl").open())]
                     for run in (trained, again))
    assert first == second and len(first) == 2  # bitwise: floats compared exactly
    a, b = (load_checkpoint(run / "last.pt")["model"] for run in (trained, again))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_the_saved_config_resumes_its_own_run(trained, tmp_path, capsys):
    code, _, err = run_cli(["train", "--config", str(trained / "config.toml"), "--resume", "--quiet"], capsys)
    assert code == 0, err  # the same settings: the finished run has nothing left to do
    code, _, err = run_cli(["train", "--config", str(trained / "config.toml"), "--quiet"], capsys)
    assert code == 1 and "already holds files of a started run" in err and err.count("\n") == 1


def test_a_config_file_trains_on_data_of_another_dimension(tmp_path, capsys):
    data = tmp_path / "nbody3d.npz"
    save_trajectories(data, generate(NBody(dim=3, n_particles=4), n_systems=4, steps=6, dt=0.01, seed=0))
    path = tmp_path / "run.toml"
    path.write_text(f'[model]\ngroup = "SE3"\nwidth = 8\ndepth = 1\n\n[train]\nepochs = 1\nbatch_size = 8\n\n'
                    f'[run]\ndata = "{data}"\nout = "{tmp_path / "run"}"\n')
    code, _, err = run_cli(["train", "--config", str(path), "--quiet"], capsys)
    assert code == 0, err
    assert tomllib.loads((tmp_path / "run" / "config.toml").read_text())["model"]["feature_keys"] == ["m"]
