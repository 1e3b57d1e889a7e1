"""The long benchmarks' sharing of runs between processes (``benchmarks/pieces.py``): a run is held by one
claim at a time, a claim ends with its block, processes started alike divide a plan without overlap, and a
run passed over is taken up once its holder lets go (or dies)."""

import subprocess
import sys
import textwrap
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from pieces import best_rollout_error, claimed, my_runs  # noqa: E402  (benchmarks are scripts, not a package)
from problems import watchdog  # noqa: E402

#: seconds a test may take: a claim that blocks where it should not hangs instead of failing
WATCHDOG = 20


def test_a_claim_is_held_once_and_released_with_its_block(tmp_path):
    with watchdog(WATCHDOG):
        with claimed(tmp_path, "run-a") as first:
            with claimed(tmp_path, "run-a") as second, claimed(tmp_path, "run-b") as other:
                assert first and not second and other
        with claimed(tmp_path, "run-a") as again:
            assert again


def test_two_walkers_of_one_plan_take_each_run_once(tmp_path):
    with watchdog(WATCHDOG):
        plan = [f"run-{i}" for i in range(6)]
        first, second = my_runs(plan, 1, 1, tmp_path), my_runs(plan, 1, 1, tmp_path)
        taken = [next(first), next(second)]  # each holds its run while the other looks for one
        assert taken == ["run-0", "run-1"]
        # moving on releases the run left (a walker reaching it later takes it, and finds its cached result)
        assert next(first) == "run-2"
        assert next(second) == "run-3"
        # part 2 of 2 walks runs 1, 3 and 5: run 1 is free again, run 3 is held by the second walker
        third = my_runs(plan, 2, 2, tmp_path)
        assert [next(third), next(third)] == ["run-1", "run-5"]
        for walker in (first, second, third):
            walker.close()


def test_a_run_passed_over_is_given_at_the_end_once_its_holder_lets_go(tmp_path):
    with watchdog(WATCHDOG):
        walker = my_runs(["run-0", "run-1"], 1, 1, tmp_path)
        with claimed(tmp_path, "run-0") as held:
            assert held and next(walker) == "run-1"
        assert next(walker) == "run-0"
        assert list(walker) == []


def test_a_claim_held_by_another_process_is_passed_over_then_taken_when_it_dies(tmp_path):
    with watchdog(WATCHDOG):
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(BENCHMARKS)!r})
            from pieces import claimed
            with claimed(__import__("pathlib").Path({str(tmp_path)!r}), "run-0") as mine:
                print(mine, flush=True)
                time.sleep(60)
            """)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "True"
            walker = my_runs(["run-0", "run-1"], 1, 1, tmp_path)
            assert next(walker) == "run-1"
        finally:
            holder.kill()
            holder.wait()
        assert next(walker) == "run-0"  # a killed holder's claim is free: the run resumes here
        assert list(walker) == []


def test_a_foreseen_failure_ends_a_benchmark_with_one_line_naming_it(monkeypatch):
    from pieces import run_script

    def failing_main():
        raise ValueError("runs/x holds a run with other settings")

    monkeypatch.setattr(sys, "argv", ["ablation.py"])
    try:
        run_script(failing_main)
    except SystemExit as end:
        assert str(end.code) == "ablation.py: error: runs/x holds a run with other settings"
        assert end.__cause__ is None and end.__suppress_context__
    else:
        raise AssertionError("run_script let a failing main pass")


def test_no_benchmark_script_imports_another_and_the_index_lists_every_one():
    """What scripts share lives in pieces.py; benchmarks/README.md names every script."""
    import ast

    scripts = {path.stem for path in BENCHMARKS.glob("*.py")}
    for path in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
        assert imported & scripts <= {"pieces"}, f"{path.name} imports {sorted(imported & scripts - {'pieces'})}"
    index = (BENCHMARKS / "README.md").read_text()
    missing = [path.name for path in sorted(BENCHMARKS.glob("*")) if path.suffix in (".py", ".sh")
               and f"`{path.name}`" not in index]
    assert not missing, f"benchmarks/README.md does not list {missing}"


def test_a_windows_file_holds_one_window_of_each_chosen_system(tmp_path):
    """The windows a window-reading trainer (the reference's) gets: distinct systems, the source's own
    states, the choice in the meta; more windows than systems refused."""
    import pytest
    import torch

    from hamnet.io import load_trajectories, save_trajectories
    from hamnet.simulation import generate
    from hamnet.systems import Springs
    from pieces import windows_file

    source = tmp_path / "springs.npz"
    save_trajectories(source, generate(Springs(n_particles=3), n_systems=8, steps=9, dt=0.01, seed=0))
    path = windows_file(tmp_path / "w", source, 5, seed=2, chunk=4)
    windows, data = load_trajectories(path), load_trajectories(source)
    systems, starts = windows.meta["window_systems"], windows.meta["window_starts"]
    assert windows.z.shape[:2] == (5, 4) and len(set(systems)) == 5
    for i, (system, start) in enumerate(zip(systems, starts)):
        assert torch.equal(windows.z[i], data.z[system, start:start + 4])
        assert torch.equal(windows.params["k"][i], data.params["k"][system])
    assert windows_file(tmp_path / "w", source, 5, seed=2, chunk=4) == path  # made once
    with pytest.raises(ValueError, match="9 windows need as many training systems"):
        windows_file(tmp_path / "w", source, 9, seed=2, chunk=4)


def test_the_best_rollout_error_skips_epochs_without_a_finite_figure():
    """NaN (a rollout that left the data, an undone epoch) and no figure at all (an epoch undone before hamnet
    logged NaN there) are passed over; no finite figure is inf."""
    epochs = [{"validation_rollout_mse": 0.5}, {"validation_rollout_mse": float("nan")}, {"rolled_back": True},
              {"validation_rollout_mse": 0.25}]
    assert best_rollout_error(epochs) == 0.25
    assert best_rollout_error(epochs[1:3]) == float("inf")


def test_a_cached_run_resumes_across_a_setting_added_since_and_is_refused_for_a_changed_one(tmp_path):
    """A run saved before a TrainConfig setting existed had that setting's default: it resumes; a run whose
    saved settings differ from the ones asked for is refused in one line naming them."""
    import json

    import pytest

    from hamnet.io import save_trajectories
    from hamnet.simulation import generate
    from hamnet.systems import Springs
    from hamnet.training import TrainConfig
    from pieces import train_hamnet
    from problems import model_config

    data = tmp_path / "springs.npz"
    save_trajectories(data, generate(Springs(n_particles=4), n_systems=6, steps=6, dt=0.01, seed=0))
    config = TrainConfig(model=model_config("fc-hnn"), epochs=2, batch_size=8, max_windows=16, validation=0.2,
                         test=0.0)
    folder = tmp_path / "run"
    train_hamnet(config, data, folder, until=1)
    saved = json.loads((folder / "config.json").read_text())
    del saved["train_config"]["rollback_train"]  # as a run saved before that setting was written
    (folder / "config.json").write_text(json.dumps(saved))
    assert train_hamnet(config, data, folder)["epochs"] == 2
    with pytest.raises(ValueError, match=r"holds a run with other settings \(lr differ"):
        train_hamnet(TrainConfig(**{**config.__dict__, "lr": 0.5}), data, folder)
    saved = json.loads((folder / "config.json").read_text())
    del saved["train_config"]["kernel_bound_factor"]  # as a run from before the bound: unbounded, as hamnet reads it
    (folder / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"other settings \(kernel_bound_factor differ"):
        train_hamnet(config, data, folder)
