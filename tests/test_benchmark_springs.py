"""Where ``benchmarks/springs.py`` says a run was trained: a run may start on a GPU (``--device cuda``) and be
finished on a CPU, and its report must say which epochs ran where and keep a GPU's training seconds out of
the CPU's column; a device it cannot train on is refused in one line. A run whose training diverges is
reported and skipped, not the end of the benchmark, and a CPU run's fastest epoch is read from its metrics."""

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import springs  # noqa: E402  (benchmarks are scripts, not a package)
from hamnet.io import save_trajectories  # noqa: E402
from hamnet.simulation import generate  # noqa: E402
from hamnet.training import train  # noqa: E402
from hamnet.systems import Springs  # noqa: E402


def write(record: Path, starts: list[tuple[str, int]]) -> None:
    record.write_text("".join(json.dumps({"device": d, "first_epoch": e}) + "\n" for d, e in starts))


def test_each_start_says_where_the_epochs_from_it_ran(tmp_path):
    record = tmp_path / "run.jsonl"
    assert springs.device_spans(record, 100) == [("cpu", 1, 100)]  # no record: from before records were kept
    # a cuda start at 52 that failed at once, the cpu start that replaced it, a later resume on the cpu
    write(record, [("cuda (H200)", 1), ("cuda (H200)", 52), ("cpu", 52), ("cpu", 80)])
    spans = springs.device_spans(record, 100)
    assert spans == [("cuda (H200)", 1, 51), ("cpu", 52, 100)]
    assert springs.training_devices(spans) == "cuda (H200) for epochs 1-51, cpu for epochs 52-100"
    # a resume on the CPU of a run that began on the CPU before records were kept is one span
    write(record, [("cpu", 30)])
    assert springs.training_devices(springs.device_spans(record, 100)) == "cpu"
    # a later start at epoch 1 (a restart) forgets every span after it; a start past the schedule is ignored
    write(record, [("cpu", 1), ("cuda (H200)", 40), ("cuda (H200)", 1), ("cpu", 140)])
    assert springs.device_spans(record, 100) == [("cuda (H200)", 1, 100)]


def test_a_run_resumed_on_another_device_is_recorded_from_the_epoch_it_resumes(tmp_path):
    data = tmp_path / "springs.npz"
    save_trajectories(data, generate(Springs(), n_systems=12, steps=12, dt=0.01, seed=0))
    config = springs.train_config(springs.SCALES["smoke"], "fc-node", "T2", 24, seed=0)
    config = dataclasses.replace(config, epochs=3, batch_size=8, validation_windows=8)
    folder, record = tmp_path / "runs" / "fc-node_w24_seed0", tmp_path / "devices" / "fc-node_w24_seed0.jsonl"
    train(config, data, folder, stop_after_epochs=2)  # as if a GPU had trained two epochs and stopped
    record.parent.mkdir()
    write(record, [("cuda (H200)", 1)])
    springs.train_run(config, data, folder, "cpu", record)
    assert springs.device_spans(record, 3) == [("cuda (H200)", 1, 2), ("cpu", 3, 3)]
    run = {"model": "FC-NODE", "windows": 24, "seed": 0, "epochs": 3, "train_seconds_per_1000_windows": 1.0}
    reported = springs.where_trained(run, tmp_path)
    assert reported["train_seconds_per_1000_windows"] is None  # no figure mixing two devices
    assert "train_seconds_per_1000_windows_fastest_epoch" not in reported
    assert [span["epochs"] for span in reported["train_seconds_by_device"]] == [[1, 2], [3, 3]]
    assert all(span["seconds_per_1000_windows"] > 0 for span in reported["train_seconds_by_device"])
    # a fresh start in the same place (its last.pt gone) forgets the old record
    (folder / "last.pt").unlink()
    springs.train_run(config, data, folder, "cpu", record)
    assert springs.device_spans(record, 3) == [("cpu", 1, 3)]
    assert springs.where_trained(run, tmp_path)["train_device"] == "cpu"


def test_a_cpu_run_reports_its_fastest_epoch_when_its_folder_is_here(tmp_path):
    run = {"model": "FC-NODE", "windows": 250, "seed": 0, "epochs": 3, "train_seconds_per_1000_windows": 8.0}
    assert springs.where_trained(run, tmp_path) == run | {"train_device": "cpu"}  # scores merged from elsewhere
    folder = tmp_path / "runs" / "fc-node_w250_seed0"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": t}) + "\n"
                                                  for e, t in ((1, 3.0), (2, 1.0), (3, 2.0))))
    assert springs.where_trained(run, tmp_path) == run | {
        "train_device": "cpu", "train_seconds_per_1000_windows_fastest_epoch": 4.0}  # 1 s for 250 windows
    assert springs.epoch_seconds(folder, 2) == [1.0, 2.0] and springs.epoch_seconds(folder, 1, 1) == [3.0]


def test_a_gpu_runs_seconds_stay_out_of_the_cpu_column():
    runs = [{"model": "FC-NODE", "windows": 100, "seed": seed, "epochs": 1,
             **{key: 1.0 for key, _ in springs.METRICS}} for seed in (0, 1)]
    runs[1]["train_seconds_per_1000_windows"] = None
    seconds = springs.summarise(runs)["FC-NODE"]["100"]["train_seconds_per_1000_windows"]
    assert (seconds["mean"], seconds["diverged"], seconds["left_out"]) == (1.0, 0, 1)
    runs[0]["train_seconds_per_1000_windows"] = None
    seconds = springs.summarise(runs)["FC-NODE"]["100"]["train_seconds_per_1000_windows"]
    assert math.isnan(seconds["mean"]) and springs.cell(seconds, "train_seconds_per_1000_windows") == "GPU (below)"
    runs[0]["drift_energy"] = runs[1]["drift_energy"] = math.inf  # a diverged rollout still reads as one
    assert springs.cell(springs.summarise(runs)["FC-NODE"]["100"]["drift_energy"], "drift_energy") == \
        "diverged (every seed)"


def test_the_reference_figures_are_the_side_by_sides_means(tmp_path):
    figures = springs.reference_figures()  # the committed results of benchmarks/reference_side_by_side.py
    results = json.loads(springs.SIDE_BY_SIDE.read_text())
    t2 = [run["window_mse_with_initial"] for name, run in results["runs"].items() if name.startswith("reference_T2_")]
    assert len(t2) == figures["seeds"]["HLieConv T(2)"] >= 1
    assert math.isclose(figures["mse"]["HLieConv T(2)"], sum(t2) / len(t2))
    assert set(figures["mse"]) == {"HLieConv T(2)", "HLieConv SO(2)"}
    assert figures["seconds"][384]["reference"] > figures["seconds"][384]["hamnet"] > 0
    assert springs.reference_figures(tmp_path / "absent.json") is None


def test_a_device_it_cannot_train_on_is_one_line_before_any_work(tmp_path):
    devices = ["tpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        done = subprocess.run([sys.executable, str(BENCHMARKS / "springs.py"), "--scale", "smoke", "--device", device,
                               "--work", str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "--device" in done.stderr.splitlines()[-1] and device in done.stderr.splitlines()[-1]
        assert not any(tmp_path.iterdir())  # nothing generated or trained


def test_a_run_whose_training_diverges_is_reported_skipped_and_retried_on_request(tmp_path, monkeypatch):
    data, test = tmp_path / "springs.npz", tmp_path / "test.npz"
    save_trajectories(data, generate(Springs(), n_systems=12, steps=12, dt=0.01, seed=0))
    save_trajectories(test, generate(Springs(), n_systems=2, steps=12, dt=0.01, seed=1))
    scale = dataclasses.replace(springs.SCALES["smoke"], sizes=(24,), seeds=(0, 1), drift_steps=20)
    make_config = springs.train_config

    def small_config(lr: float):
        return lambda *args, **kwargs: dataclasses.replace(make_config(*args, **kwargs), epochs=1, batch_size=8,
                                                           validation_windows=8, lr=lr)

    monkeypatch.setattr(springs, "RESULTS", tmp_path / "results")
    paths, held_out = {"train": data, "test": test}, springs.load_trajectories(test)
    run_hogn = lambda seed, **kwargs: springs.run_one(  # noqa: E731
        scale, tmp_path, paths, held_out, "HOGN", "hogn", "T2", 24, seed, **kwargs)
    monkeypatch.setattr(springs, "train_config", small_config(1e-2))
    scored = run_hogn(0)
    monkeypatch.setattr(springs, "train_config", small_config(1e6))
    assert run_hogn(1) is None
    failure = tmp_path / "failed" / "hogn_w24_seed1.txt"
    message = failure.read_text().strip()
    assert message.startswith("training diverged: the training loss is") and str(tmp_path) not in message
    assert "kept runs/hogn_w24_seed1/last.pt" in message  # relative to the work folder
    monkeypatch.setattr(springs, "train_config", small_config(1e-2))
    assert run_hogn(1) is None  # skipped: the same settings would diverge again

    args = argparse.Namespace(report=True, threads=1, seeds=None)
    springs.write_results("springs_smoke", "smoke", scale, [scored], paths, args, 0.0, {"hogn_w24_seed1": message})
    report = (tmp_path / "results" / "springs_smoke.md").read_text()
    assert "| HOGN | 24 | 1 (seed 1: training diverged, below) |" in report
    assert "| FC-NODE | 24 | - | not run yet |" in report
    assert "**Training diverged in 1 run(s)**" in report and f"- hogn_w24_seed1: {message}" in report
    results = json.loads((tmp_path / "results" / "springs_smoke.json").read_text())
    assert results["failed"] == {"hogn_w24_seed1": message} and results["report_only"]
    assert results["seconds_in_runs"] == round(scored["train_wall_seconds"] + scored["score_seconds"], 1)

    shutil.rmtree(tmp_path / "runs" / "hogn_w24_seed1")  # started over, at a learning rate that works
    assert run_hogn(1, retry_failed=True)["seed"] == 1 and not failure.exists()


def test_seeds_trained_together_are_the_seeds_trained_alone_and_a_divergence_is_recorded(tmp_path, monkeypatch):
    """springs.py --ensemble: the seeds of a model and size trained as one ensemble, each as its lone run;
    a seed that diverges is recorded as run_one records it, and the others are trained."""
    data = tmp_path / "springs.npz"
    save_trajectories(data, generate(Springs(), n_systems=12, steps=12, dt=0.01, seed=0))
    scale = dataclasses.replace(springs.SCALES["smoke"], sizes=(24,), seeds=(0, 1, 2))
    make_config = springs.train_config

    def small_config(*args, **kwargs):
        config = dataclasses.replace(make_config(*args, **kwargs), epochs=2, batch_size=8, validation_windows=8)
        return dataclasses.replace(config, lr=1e6) if config.seed == 2 else config

    monkeypatch.setattr(springs, "train_config", small_config)
    entries = [("HLieConv SO(2)", "hlieconv", "SO2", 24, seed) for seed in (0, 1, 2)]
    springs.train_together(scale, tmp_path, {"train": data}, entries, "cpu")
    assert (tmp_path / "failed" / "hlieconv-so2_w24_seed2.txt").read_text().startswith("training diverged")
    for seed in (0, 1):
        run = springs.run_name("HLieConv SO(2)", 24, seed)
        train(small_config(scale, "hlieconv", "SO2", 24, seed), data, tmp_path / f"alone{seed}", progress=False)
        ours, theirs = (springs.load_checkpoint(folder / "last.pt")["model"]
                        for folder in (tmp_path / "runs" / run, tmp_path / f"alone{seed}"))
        assert all(torch.allclose(ours[key], theirs[key], rtol=0, atol=1e-6) for key in theirs)
        assert springs.device_spans(tmp_path / "devices" / f"{run}.jsonl", 2) == [("cpu", 1, 2)]
