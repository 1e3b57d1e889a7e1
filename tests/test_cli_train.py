"""train / rollout / evaluate from the command line: happy path and one clear line per bad input."""

import json

import pytest
import torch

from hamnet.cli import main
from hamnet.io import load_trajectories, save_trajectories
from hamnet.simulation import generate
from hamnet.systems import NBody, Springs

from problems import run_cli

TINY = ["--width", "8", "--depth", "1", "--epochs", "1", "--batch-size", "16", "--max-windows", "32", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    paths = {
        "springs": folder / "springs.npz",
        "springs5": folder / "springs5.npz",
        "short": folder / "short.npz",
        "nbody3d": folder / "nbody3d.npz",
        "springs_other": folder / "springs_other.npz",
    }
    save_trajectories(paths["springs_other"], generate(Springs(n_particles=4), n_systems=12, steps=10, dt=0.01, seed=9))
    save_trajectories(paths["springs"], generate(Springs(n_particles=4), n_systems=12, steps=10, dt=0.01, seed=0))
    save_trajectories(paths["springs5"], generate(Springs(n_particles=5), n_systems=3, steps=10, dt=0.01, seed=1))
    save_trajectories(paths["short"], generate(Springs(n_particles=4), n_systems=12, steps=2, dt=0.01, seed=0))
    save_trajectories(paths["nbody3d"], generate(NBody(dim=3, n_particles=4), n_systems=3, steps=5, dt=0.01, seed=0))
    return paths


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for model, flags in (("hlieconv", ["--group", "SO2"]), ("fc-hnn", [])):  # a group only where it is used
        assert main(["train", "--data", str(files["springs"]), "--model", model, *flags,
                     "--out", str(runs / model), *TINY]) == 0
    return runs


def test_train_rollout_evaluate(files, trained, tmp_path, capsys):
    out = tmp_path / "rollout.npz"
    code, stdout, _ = run_cli(["rollout", "--checkpoint", str(trained / "hlieconv" / "best.pt"), "--data",
                           str(files["springs"]), "--steps", "30", "--out", str(out)], capsys)
    assert code == 0 and "hlieconv SO2 with leapfrog" in stdout
    rolled = load_trajectories(out)
    assert rolled.z.shape == (12, 31, 2, 4, 2) and rolled.meta["model"] == "hlieconv SO2"
    metrics_file = tmp_path / "metrics.json"
    code, _, _ = run_cli(["evaluate", "--checkpoint", str(trained / "hlieconv" / "best.pt"), "--data",
                      str(files["springs"]), "--out", str(metrics_file)], capsys)
    metrics = json.loads(metrics_file.read_text())
    assert code == 0 and metrics["drift"]["angular_momentum"]["max"] < 1e-12
    assert 0 <= metrics["rollout_error"]["final"] <= 1
    valid = metrics["valid_prediction_time"]
    assert len(valid["per_system"]) == 12 and valid["min"] <= valid["median"] <= valid["max"] <= 0.11 + 1e-12
    assert metrics["divergence"] == {"rate": 0.0, "systems": [], "steps": []}
    assert "energy" in metrics["drift"]


def test_valid_prediction_time_is_the_first_time_the_error_passes_the_threshold():
    from hamnet.evaluation import valid_prediction_time

    t = torch.arange(5, dtype=torch.float64) * 0.5
    error = torch.tensor([[0.0, 0.05, 0.2, 0.05, 0.3],   # passes 0.1 at t = 1.0 (later recovery ignored)
                          [0.0, 0.01, 0.02, 0.03, 0.04],  # never: the horizon, a lower bound
                          [0.0, 0.1, 0.1, 0.11, 0.5]], dtype=torch.float64)  # 0.1 itself is still valid
    assert valid_prediction_time(error, t).tolist() == [1.0, 2.0, 1.5]


def test_hlieconv_runs_on_another_n_as_a_study_of_transfer(files, trained, tmp_path, capsys):
    out = tmp_path / "n5.npz"
    argv = ["rollout", "--checkpoint", str(trained / "hlieconv" / "best.pt"), "--data", str(files["springs5"]),
            "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "n_particles 5 (trained on 4)" in err and "--transfer" in err and not out.exists()
    code, _, _ = run_cli([*argv, "--transfer"], capsys)
    assert code == 0 and load_trajectories(out).n_particles == 5
    assert load_trajectories(out).meta["transfer"]["differences"] == ["n_particles 5 (trained on 4)"]


def test_fully_connected_model_refuses_another_n(files, trained, tmp_path, capsys):
    out = tmp_path / "n5.npz"
    code, _, err = run_cli(["rollout", "--checkpoint", str(trained / "fc-hnn" / "best.pt"), "--data",
                        str(files["springs5"]), "--out", str(out)], capsys)
    assert code == 1 and "fully connected over 4 particles" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--model", "transformer"], "unknown model 'transformer'"),
    (["--group", "SU3"], "unknown group"),
    (["--lr", "0"], "--lr must be between"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--chunk", "1"], "--chunk must be at least 2"),
    (["--model", "fc-node", "--method", "leapfrog"], "separable"),
    (["--neighbours", "10"], "neighbours"),
    (["--threads", "0"], "--threads must be between 1 and"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
])
def test_train_bad_settings_leave_no_run_folder(files, tmp_path, capsys, flags, message):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(files["springs"]), "--out", str(run_dir), *TINY, *flags], capsys)
    assert code == 1 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run_dir.exists()


@pytest.mark.parametrize("data, flags, message", [
    ("short", ["--chunk", "5"], "fewer than the window length"),
    ("nbody3d", ["--group", "SO2"], "group 'SO2' acts in 2 dimensions"),
])
def test_train_bad_data_leaves_no_run_folder(files, tmp_path, capsys, data, flags, message):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(files[data]), "--out", str(run_dir), *TINY, *flags], capsys)
    assert code == 1 and message in err and err.count("\n") == 1
    assert not run_dir.exists()


def test_rollout_refuses_infinite_dt(files, trained, tmp_path, capsys):
    out = tmp_path / "r.npz"
    code, _, err = run_cli(["rollout", "--checkpoint", str(trained / "hlieconv" / "best.pt"), "--data",
                        str(files["springs"]), "--dt", "inf", "--out", str(out)], capsys)
    assert code == 1 and "--dt must be a positive finite number" in err and not out.exists()


def test_resume_on_other_data_is_refused(files, trained, capsys):
    code, _, err = run_cli(["train", "--data", str(files["springs_other"]), "--out", str(trained / "hlieconv"), *TINY,
                        "--group", "SO2", "--resume"], capsys)
    assert code == 1 and "trained on other data" in err and err.count("\n") == 1


def test_model_refuses_data_of_another_dimension(files, trained, tmp_path, capsys):
    out = tmp_path / "r.npz"
    code, _, err = run_cli(["rollout", "--checkpoint", str(trained / "hlieconv" / "best.pt"), "--data",
                        str(files["nbody3d"]), "--out", str(out)], capsys)
    assert code == 1 and "holds 3D systems; the model is for 2D" in err and not out.exists()


def test_default_group_follows_the_data(files, tmp_path, capsys):
    assert main(["train", "--data", str(files["nbody3d"]), "--out", str(tmp_path / "run"), *TINY]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]["model"]
    assert config["group"] == "T3" and config["dim"] == 3


def test_resume_with_a_different_model_is_refused(files, trained, capsys):
    before = (trained / "hlieconv" / "last.pt").read_bytes()
    code, _, err = run_cli(["train", "--data", str(files["springs"]), "--out", str(trained / "hlieconv"), *TINY,
                        "--model", "hogn", "--resume"], capsys)
    assert code == 1 and "different settings" in err and err.count("\n") == 1
    assert (trained / "hlieconv" / "last.pt").read_bytes() == before


def test_existing_run_folder_is_not_overwritten(files, trained, capsys):
    code, _, err = run_cli(["train", "--data", str(files["springs"]), "--out", str(trained / "fc-hnn"), *TINY], capsys)
    assert code == 1 and "already holds files" in err


def test_foreign_checkpoint_for_rollout(files, tmp_path, capsys):
    foreign = tmp_path / "model.pt"
    foreign.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "r.npz"
    code, _, err = run_cli(["rollout", "--checkpoint", str(foreign), "--data", str(files["springs"]), "--out", str(out)],
                       capsys)
    assert code == 1 and "checkpoint" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("start, message", [
    ("missing.pt", "missing.pt: no such checkpoint file"),
    ("springs-t2", "--init-from springs-t2: its model differs from this run's in"),
])
def test_init_from_a_checkpoint_that_cannot_start_this_run(files, tmp_path, capsys, start, message):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(files["springs"]), "--out", str(out), *TINY, "--init-from", start],
                           capsys)
    assert code == 1 and message in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("flag, expected", [(None, "auto"), ("none", None), ("2.5", 2.5)])
def test_kernel_bound_flag(files, tmp_path, capsys, flag, expected):
    """``--kernel-bound``: auto (the default, a bound read from the training data), none, or a number."""
    extra = [] if flag is None else ["--kernel-bound", flag]
    code, _, err = run_cli(["train", "--data", str(files["springs"]), "--group", "SO2", "--out", str(tmp_path / "run"),
                            *TINY, *extra], capsys)
    assert code == 0, err
    bound = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model_config"]["kernel_bound"]
    if expected == "auto":
        assert bound is not None and bound > 0
    else:
        assert bound == expected


def test_train_runs_on_the_threads_asked_and_gives_the_callers_count_back(files, tmp_path, capsys, monkeypatch):
    import hamnet.cli_train

    seen = []

    def failing_load(path):
        seen.append(torch.get_num_threads())
        raise ValueError("stopped here by the test")

    monkeypatch.setattr(hamnet.cli_train, "load_trajectories", failing_load)
    before = torch.get_num_threads()
    asked = before + 1
    code, _, err = run_cli(["train", "--data", files["springs"], "--model", "fc-node", "--threads", str(asked),
                            "--out", tmp_path / "run", *TINY], capsys)
    assert code == 1 and "stopped here by the test" in err
    assert seen == [asked] and torch.get_num_threads() == before


def test_train_keeps_no_copy_of_the_data_while_training(files, tmp_path, capsys, monkeypatch):
    # training reads the file itself; a float64 copy kept by the command line would be held for the whole run
    import gc
    import weakref

    import hamnet.cli_train

    loaded, alive = [], []

    def load(path):
        data = load_trajectories(path)
        loaded.append(weakref.ref(data))
        return data

    def train(*args, **kwargs):
        gc.collect()
        alive.extend(ref() is not None for ref in loaded)
        return {}

    monkeypatch.setattr(hamnet.cli_train, "load_trajectories", load)
    monkeypatch.setattr(hamnet.cli_train, "train", train)
    code, _, _ = run_cli(["train", "--data", files["springs"], "--model", "fc-node", "--out", tmp_path / "run", *TINY],
                         capsys)
    assert code == 0 and alive == [False]
