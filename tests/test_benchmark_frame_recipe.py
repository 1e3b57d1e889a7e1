"""benchmarks/frame_recipe.py at a tiny size: a recipe's phases chain (each starts from the last one's
best.pt and keeps its sub-steps), every phase is scored from the protocol's start frame, and the table
reads the scores."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from hamnet.checkpoint import load_checkpoint
from hamnet.protocols import PROTOCOLS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import frame_recipe as recipe  # noqa: E402  (benchmarks are scripts, not a package)

RECIPES = dict(recipe.RECIPES)  # the fixture replaces them


#: splits of 6 systems each (made by data_path on first use), 24 windows an epoch
TINY = recipe.Scale("tiny", 6, 6, 24, "a test's")


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The charged protocol's splits at 6 systems, and the recipe at a tiny size."""
    monkeypatch.setattr(recipe, "BASE", {**recipe.BASE, "epochs": 1, "validation_windows": 4, "validation": 0.34})
    monkeypatch.setattr(recipe, "RECIPES", {"auto": [(row, {**settings, "epochs": 1}, chained)
                                                     for row, settings, chained in recipe.RECIPES["auto"][:3]]})
    monkeypatch.setattr(recipe, "model_config", lambda protocol: recipe.ModelConfig(
        name="hlieconv", group="SE3", n_particles=5, dim=3, feature_keys=("m", "charge"), width=4, depth=1,
        kernel_width=4, kernel_channels=2))
    return tmp_path / "data", tmp_path / "work"


def test_the_phases_chain_and_each_is_scored(tiny):
    data, work = tiny
    recipe.run_recipe(work, data, PROTOCOLS["egnn-charged5"], "auto", 0, TINY)
    assert sorted(path.name for path in data.iterdir()) == ["egnn-charged5_test_n6_seed45.npz",
                                                            "egnn-charged5_train_n6_seed43.npz"]
    runs = work / "runs" / "egnn-charged5_auto_seed0"
    first = load_checkpoint(runs / "auto" / "best.pt")
    second = load_checkpoint(runs / "auto+long" / "best.pt")
    assert second["init_from"]["checkpoint"].endswith("auto/best.pt")
    assert second["train_config"]["substeps"] == first["train_config"]["substeps"] > 1
    assert second["train_config"]["chunk"] == 9 and load_checkpoint(runs / "auto+long+f64" / "best.pt")[
        "train_config"]["dtype"] == "float64"
    scores = {path.name: json.loads(path.read_text()) for path in (work / "scores").glob("*.json")}
    assert sorted(scores) == ["egnn-charged5_auto+long+f64_seed0.json", "egnn-charged5_auto+long_seed0.json",
                              "egnn-charged5_auto_seed0.json"]
    assert all(len(s["mse"]) == 3 and s["diverged"] == 0 for s in scores.values())
    assert "last_epoch" in scores["egnn-charged5_auto_seed0.json"]
    table = recipe.summary(work)["egnn-charged5"]
    assert table["auto"]["mse"] == [scores["egnn-charged5_auto_seed0.json"]["mse"]]
    assert table["auto (last epoch)"]["mse"] == [scores["egnn-charged5_auto_seed0.json"]["last_epoch"]["mse"]]


def test_the_coupled_recipe_weights_pairs_by_charge_and_validation_picks_its_phase(tiny, monkeypatch):
    data, work = tiny
    monkeypatch.setattr(recipe, "RECIPES", {**RECIPES, "coupled4": [
        (row, {**settings, "epochs": 1, "select_steps": 4}, chained) for row, settings, chained in RECIPES["coupled4"]]})
    monkeypatch.setattr(recipe, "model_config", lambda protocol, coupling=None: recipe.ModelConfig(
        name="hlieconv", group="SE3", n_particles=5, dim=3, feature_keys=("m", "charge"), width=4, depth=1,
        kernel_width=4, kernel_channels=2, coupling=coupling))
    recipe.run_recipe(work, data, PROTOCOLS["egnn-charged5"], "coupled4", 0, TINY)
    runs = work / "runs" / "egnn-charged5_coupled4_seed0"
    errors = {}
    for phase in ("coupled4", "coupled4+long", "coupled4+long+longer"):
        state = load_checkpoint(runs / phase / "best.pt")
        assert state["train_config"]["model"]["coupling"] == "charge" and "coupling" not in state["train_config"]
        errors[phase] = min(json.loads(line)["validation_rollout_mse"] for line in (runs / phase / "metrics.jsonl").open())
    path = work / "scores" / "egnn-charged5_coupled4+long_seed0.json"
    scored = json.loads(path.read_text())
    close = scored["close"]
    assert close["of"] == TINY.test and len(close["share"]) == 3 and all(0 <= s <= 1 for s in close["share"])
    path.write_text(json.dumps({k: v for k, v in scored.items() if k != "close"}))  # a score from before the figure
    recipe.run_recipe(work, data, PROTOCOLS["egnn-charged5"], "coupled4", 0, TINY)  # adds it, trains nothing
    assert json.loads(path.read_text()) == json.loads(json.dumps(scored))
    table = recipe.summary(work, earlier=False)["egnn-charged5"]
    chosen = min(errors, key=errors.get)  # the first phase is a candidate too
    assert table["coupled4 recipe"]["mse"] == table[chosen]["mse"]
    assert "coupled recipe" not in table  # until coupled10 is scored too
    monkeypatch.setattr(recipe, "RECIPES", {**recipe.RECIPES, "coupled10": [
        (row, {**settings, "epochs": 1, "select_steps": 4}, chained)
        for row, settings, chained in RECIPES["coupled10"]]})
    recipe.run_recipe(work, data, PROTOCOLS["egnn-charged5"], "coupled10", 0, TINY)
    ten = work / "runs" / "egnn-charged5_coupled10_seed0" / "coupled10"
    errors["coupled10"] = min(json.loads(line)["validation_rollout_mse"] for line in (ten / "metrics.jsonl").open())
    for phase, error in errors.items():  # each score records its phase's figure; one from before reads the metrics
        path = work / "scores" / f"egnn-charged5_{phase}_seed0.json"
        result = json.loads(path.read_text())
        assert result["validation_rollout"] == error
        if phase == "coupled4+long":
            path.write_text(json.dumps({k: v for k, v in result.items() if k != "validation_rollout"}))
    table = recipe.summary(work, earlier=False)["egnn-charged5"]
    assert table["coupled recipe"]["mse"] == table[min(errors, key=errors.get)]["mse"]  # across the two recipes
    path = work / "scores" / "egnn-charged5_coupled10_seed0.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "validation_rollout": 0.0}))
    assert recipe.summary(work, earlier=False)["egnn-charged5"]["coupled recipe"]["mse"] == table["coupled10"]["mse"]
    shutil.rmtree(runs / "coupled4+long")  # its score has no record and its run is gone: no choice, no crash
    without = recipe.summary(work, earlier=False)["egnn-charged5"]
    assert "coupled recipe" not in without and "coupled4 recipe" not in without and "coupled10" in without
    reference = recipe.references(PROTOCOLS["egnn-charged5"], recipe.data_path("egnn-charged5", "test", data, TINY))
    assert set(reference) == set(recipe.REFERENCE_SUBSTEPS) and all(
        len(r["mse"]) == 3 and r["close"]["of"] == TINY.test for r in reference.values())
    text = "\n".join(recipe.markdown({"egnn-charged5": table}, "frame_recipe.py", TINY, {"egnn-charged5": reference}))
    assert "| true H, 100 steps | the protocol's Hamiltonian" in text
    assert "| coupled4 recipe | " in text and f"| coupled4+long | {close['systems']} of {TINY.test} |" in text
    # a finished run of other settings is refused, not scored under the recipe's name
    (work / "scores" / "egnn-charged5_coupled4_seed0.json").unlink()
    monkeypatch.setattr(recipe, "RECIPES", {"coupled4": [("coupled4", {**recipe.RECIPES["coupled4"][0][1], "lr": 1e-2},
                                                          False)]})
    with pytest.raises(ValueError, match="holds a run of other lr"):
        recipe.run_recipe(work, data, PROTOCOLS["egnn-charged5"], "coupled4", 0, TINY)


def test_the_fresh_windows_recipe_draws_the_scales_count_from_every_window(tiny, monkeypatch):
    data, work = tiny
    monkeypatch.setattr(recipe, "RECIPES", {"coupled10-fresh": [
        (row, {**settings, "epochs": 1, "select_steps": 4, "substeps": 2}, chained)
        for row, settings, chained in RECIPES["coupled10-fresh"]]})
    monkeypatch.setattr(recipe, "model_config", lambda protocol, coupling=None: recipe.ModelConfig(
        name="hlieconv", group="SE3", n_particles=5, dim=3, feature_keys=("m", "charge"), width=4, depth=1,
        kernel_width=4, kernel_channels=2, coupling=coupling))
    recipe.run_recipe(work, data, PROTOCOLS["egnn-charged5"], "coupled10-fresh", 0, TINY)
    run = work / "runs" / "egnn-charged5_coupled10-fresh_seed0" / "coupled10-fresh"
    state = load_checkpoint(run / "best.pt")
    assert state["train_config"]["max_windows"] is None and state["train_config"]["epoch_windows"] == TINY.max_windows
    assert state["data"]["n_train_windows"] > TINY.max_windows  # the pool: every window of the training systems
    score = json.loads((work / "scores" / "egnn-charged5_coupled10-fresh_seed0.json").read_text())
    assert score["settings"]["epoch_windows"] == TINY.max_windows and score["settings"]["max_windows"] is None


def test_rows_of_the_last_results_file_are_kept_only_where_their_recipe_is_unchanged(tmp_path):
    entry = {"seeds": [0], "mse": [[1.0, 2.0, 3.0]], "diverged": 0, "train_seconds": [1.0], "substeps": [1]}
    made = json.loads(json.dumps({"base": recipe.BASE, "recipes": recipe.RECIPES}))
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps({**made, "table": {"egnn-charged5": {"plain": entry, "steady4 recipe": entry}}}))
    assert set(recipe.summary(tmp_path, previous, earlier=False)["egnn-charged5"]) == {"plain", "steady4 recipe"}
    made["recipes"]["substeps4-steady"][0][1]["lr"] = 1.0  # the recipe changed since: its rows are dropped
    previous.write_text(json.dumps({**made, "table": {"egnn-charged5": {"plain": entry, "steady4 recipe": entry}}}))
    assert set(recipe.summary(tmp_path, previous, earlier=False)["egnn-charged5"]) == {"plain"}
    assert recipe.summary(tmp_path, previous, earlier=False, base={"max_windows": 18_000}) == {}  # another scale
    assert "segno-gravity5" not in recipe.ONLY["coupled4"]  # unit masses: nothing to couple by
    assert [row for row, _, _ in recipe.rows_of("segno-gravity5") if row.startswith("coupled")] == []
    assert "coupled recipe" in [row for row, _, _ in recipe.rows_of("egnn-charged5")]
    made = json.loads(json.dumps({"base": recipe.BASE, "recipes": recipe.RECIPES}))
    made["recipes"]["coupled10"][0][1]["lr"] = 1.0  # a choice's row is dropped when any recipe it spans changed
    previous.write_text(json.dumps({**made, "table": {"egnn-charged5": {"coupled4 recipe": entry,
                                                                        "coupled recipe": entry}}}))
    assert set(recipe.summary(tmp_path, previous, earlier=False)["egnn-charged5"]) == {"coupled4 recipe"}


def test_rescoring_rolls_the_same_best_pt_out_with_other_sub_steps(tiny, monkeypatch):
    data, work = tiny
    monkeypatch.setattr(recipe, "RECIPES", {"auto": [(row, {**settings, "epochs": 1, "substeps": 2}, chained)
                                                     for row, settings, chained in RECIPES["auto"][:1]]})
    charged = PROTOCOLS["egnn-charged5"]
    recipe.rescore(work, data, charged, "auto", 0, [2, 6], TINY)  # nothing trained yet: nothing to roll out
    assert not (work / "rescored").exists()
    recipe.run_recipe(work, data, charged, "auto", 0, TINY)
    recipe.rescore(work, data, charged, "auto", 0, [2, 6], TINY)
    assert [path.name for path in (work / "rescored").iterdir()] == ["egnn-charged5_auto_seed0_substeps6.json"]
    finer = json.loads((work / "rescored" / "egnn-charged5_auto_seed0_substeps6.json").read_text())
    best, test = work / "runs" / "egnn-charged5_auto_seed0" / "auto" / "best.pt", recipe.data_path(
        "egnn-charged5", "test", data, TINY)
    assert finer["mse"] == recipe.score(best, charged, test, 6)["mse"] != recipe.score(best, charged, test)["mse"]
    assert finer["substeps"] == 6 and finer["trained_substeps"] == 2
    cached = work / "rescored" / "egnn-charged5_auto_seed0_substeps6.json"
    cached.write_text(json.dumps({**finer, "mse": [1.0, 2.0, 3.0]}))  # a cached figure is not made again
    recipe.rescore(work, data, charged, "auto", 0, [6], TINY)
    assert json.loads(cached.read_text())["mse"] == [1.0, 2.0, 3.0]
    cached.write_text(json.dumps(finer))
    stem = work / "results"
    table = recipe.rescored_summary(work)
    assert table["egnn-charged5"]["auto"]["6"]["mse"] == [finer["mse"]]
    cells = " | ".join(f"{m:.5f} ± 0.00000" for m in finer["mse"])
    assert f"| substeps10 | 2 | 6 | {cells} | 0 | 0 |" in "\n".join(recipe.finer_steps(table["egnn-charged5"],
                                                                                       "egnn-charged5"))
    # a results file keeps the figures once the work folder loses them, while the recipe is as it was
    stem.with_suffix(".json").write_text(json.dumps({"base": recipe.BASE, "recipes": recipe.RECIPES,
                                                     "table": {}, "rescored": table}))
    (work / "scores" / "egnn-charged5_auto_seed0.json").unlink()  # scored again: the rescored figures go
    recipe.run_recipe(work, data, charged, "auto", 0, TINY)
    assert not cached.exists()
    assert recipe.rescored_summary(work, stem.with_suffix(".json")) == json.loads(json.dumps(table))
    assert recipe.rescored_summary(work, stem.with_suffix(".json"), base={"max_windows": 1}) == {}  # another scale
    monkeypatch.setattr(recipe, "RECIPES", {"auto": [("auto", {**recipe.RECIPES["auto"][0][1], "lr": 1.0}, False)]})
    assert recipe.rescored_summary(work, stem.with_suffix(".json")) == {}
