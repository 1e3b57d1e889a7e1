"""benchmarks/springs_long.py: its plan of chained runs, the flags each run trains with, and the integrator's
limit against a hand check."""

import sys
from pathlib import Path

import pytest
import torch

from hamnet.simulation import generate
from hamnet.systems import Springs

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import springs_long as sl  # noqa: E402  (benchmarks are scripts, not a package)


def test_every_phase_comes_after_the_run_it_starts_from():
    plan = sl.plan()
    assert plan[0] == "integrator" and len(plan) == len(set(plan)) == 1 + sum(map(len, sl.SEEDS.values()))
    for row, parent, _, _ in sl.ROWS:
        if parent is not None:
            for seed in sl.SEEDS[row]:
                assert plan.index(sl.run_name(parent, seed)) < plan.index(sl.run_name(row, seed))


def test_a_phase_starts_from_its_parents_best_weights_and_selects_on_a_rollout(tmp_path):
    scale = sl.SCALES["small"]
    phase = next(row for row in sl.ROWS if row[1] is not None)
    flags = sl.flags(scale, phase, 1, tmp_path)
    start = flags[flags.index("--init-from") + 1]
    assert start == str(tmp_path / "runs" / sl.run_name(phase[1], 1) / "best.pt")
    assert int(flags[flags.index("--select-steps") + 1]) == scale.select_steps < scale.train_steps
    first = next(row for row in sl.ROWS if row[1] is None)
    assert "--init-from" not in sl.flags(scale, first, 1, tmp_path)
    smoke = sl.flags(sl.SCALES["smoke"], first, 1, tmp_path)
    assert int(smoke[smoke.index("--epochs") + 1]) >= 1


def test_the_integrator_limit_is_the_true_flow_against_itself():
    """The true springs through leapfrog against their own accurate trajectories: valid at first (the error
    starts at 0), energy kept to leapfrog's small bounded error."""
    test = generate(Springs(), n_systems=4, steps=300, dt=0.01, seed=1)
    limit = sl.integrator_limit(test)
    vpt = limit["valid_prediction_time"]
    assert 0 < vpt["min"] <= vpt["median"] <= float(test.t[-1])
    assert 0 < limit["energy"]["max"] < 0.05
    shifted = generate(Springs(), n_systems=4, steps=300, dt=0.01, seed=1)
    shifted.z = shifted.z.clone()
    shifted.z[:, 1:] += 1.0  # "truth" far from any flow from the first state: invalid from the first step
    assert sl.integrator_limit(shifted)["valid_prediction_time"]["median"] <= 0.011
    assert torch.isfinite(torch.tensor(limit["energy"]["median"]))


def test_the_worst_systems_are_those_whose_energy_the_model_changes_most(tmp_path):
    """--explain: the systems are ordered by the learned rollout's true-energy change, which matches the
    change measured directly, and each carries its energy, reach and the integrator's own change."""
    from hamnet.diagnostics import conservation_report
    from hamnet.io import save_trajectories
    from hamnet.models import ModelConfig
    from hamnet.rollouts import rollout_systems
    from hamnet.training import TrainConfig, train

    data, test = tmp_path / "train.npz", generate(Springs(n_particles=4), n_systems=6, steps=60, dt=0.01, seed=1)
    save_trajectories(data, generate(Springs(n_particles=4), n_systems=12, steps=12, dt=0.01, seed=0))
    model = ModelConfig(name="hlieconv", group="SO2", width=8, depth=1, kernel_width=8, kernel_channels=4)
    train(TrainConfig(model=model, epochs=1, batch_size=16, max_windows=32, validation_windows=8), data,
          tmp_path / "run", progress=False)
    explained = sl.worst_systems(tmp_path / "run", test, count=3, compile=False)
    changes = [row["energy_change"] for row in explained["worst"]]
    assert changes == sorted(changes, reverse=True) and len(changes) == 3
    model_, _ = sl.model_from_checkpoint(tmp_path / "run" / "best.pt")
    rolled = rollout_systems(model_, test.z[:, 0], test.params, test.n_times - 1, 0.01, method="leapfrog",
                             keep_diverged=True)
    direct = conservation_report(rolled.z, test.system().hamiltonian, test.params)["energy"]
    assert changes[0] == pytest.approx(float(direct.max()), rel=1e-9)
    first = explained["worst"][0]
    assert first["energy"] > 0 and first["largest_radius"] > 0 and 0 <= first["integrator_energy_change"] < 0.05
    assert explained["training_radius_q999"] > 0
    worst = explained["worst"][0]["system"]  # the learned rollout's own reach, not the true trajectory's
    reach = float(rolled.z[worst, :, 0].norm(dim=-1).max())
    assert first["learned_largest_radius"] == pytest.approx(reach, rel=1e-9)


def test_rows_of_other_training_data_get_the_systems_they_name(tmp_path):
    """A row of more systems trains on that many, a row of a wider start on springs whose every k-th system
    starts spread by its factor and the rest as the scale's own file (seed 0 all); the others share one file."""
    from hamnet.io import load_trajectories

    scale = sl.SCALES["smoke"]
    plain_file = sl.training_file(tmp_path, scale, sl.ROWS[0][0])
    assert plain_file == tmp_path / "data" / f"train_systems{scale.train_systems}_steps{scale.train_steps}_seed0.npz"
    assert sl.training_file(tmp_path, scale, "SO(2), lr 3e-3, 300 epochs") == plain_file
    plain = load_trajectories(plain_file)
    more_row = next(row for row, data in sl.TRAINING_DATA.items() if data.multiple > 1)
    more = load_trajectories(sl.training_file(tmp_path, scale, more_row))
    assert more.z.shape[0] == sl.TRAINING_DATA[more_row].multiple * scale.train_systems == 3 * plain.z.shape[0]
    assert more.meta["seed"] == plain.meta["seed"] == 0
    wide_row = next(row for row, data in sl.TRAINING_DATA.items() if data.spread_every)
    every, factor = sl.TRAINING_DATA[wide_row].spread_every, sl.TRAINING_DATA[wide_row].spread
    wide = load_trajectories(sl.training_file(tmp_path, scale, wide_row))
    assert wide.meta["system"] == "springs" and wide.z.shape == plain.z.shape
    spread = torch.zeros(wide.z.shape[0], dtype=torch.bool)
    spread[::every] = True
    assert torch.equal(wide.z[spread, 0, 0], factor * plain.z[spread, 0, 0])
    assert torch.equal(wide.z[~spread, 0], plain.z[~spread, 0]) and torch.equal(wide.z[spread, 0, 1], plain.z[spread, 0, 1])
    assert torch.equal(wide.params["k"], plain.params["k"])
    # the dynamics are plain springs: the spread systems' energy is conserved as the others' is
    energy = wide.system().hamiltonian(wide.z.flatten(0, 1), {k: v.repeat_interleave(wide.z.shape[1], 0)
                                                              for k, v in wide.params.items()}).view(wide.z.shape[:2])
    assert float(((energy - energy[:, :1]) / energy[:, :1]).abs().max()) < 1e-9


def test_the_report_shows_the_learned_reach_only_where_it_was_measured():
    """Worst-system tables: the learned rollout's reach in brackets when --explain recorded it; older
    entries without it keep a column headed by what they hold."""
    row = {"system": 7, "energy_change": 0.4, "energy": 8.0, "largest_radius": 1.9, "integrator_energy_change": 1e-3}
    explained = {"run": "r", "systems_over_10_percent": 1, "systems_over_5_percent": 1, "median_energy": 40.0,
                 "training_radius_q999": 1.8}
    results = {"command": "c", "note": "n", "threads": 1, "torch": "t", "rows": [], "integrator": None,
               "worst_systems": [{**explained, "worst": [{**row, "learned_largest_radius": 6.5}]},
                                 {**explained, "worst": [row]}]}
    lines = sl.markdown(results)
    headers = [line for line in lines if line.startswith("| system |")]
    assert "true (learned)" in headers[0] and "(learned)" not in headers[1]
    assert "| 7 | 0.4 | 8 | 1.9 (6.5) | 0.001 |" in lines and "| 7 | 0.4 | 8 | 1.9 | 0.001 |" in lines


def test_own_rollout_states_start_true_trajectories_where_the_model_leaves_the_true_motion(tmp_path):
    """DAgger's file: the base file unchanged, then one true trajectory from each picked state of the model's
    own rollouts; a picked state is a candidate (every ``every``-th state) whose true energy moved past the
    threshold or whose farthest particle is past the data's edge, within the reach, at most per_system a
    rollout; the rollouts start from the ``first``-th system on; the new systems carry their rollout's
    parameters and conserve the true energy."""
    from hamnet.diagnostics import conservation_report
    from hamnet.io import load_trajectories, save_trajectories
    from hamnet.models import ModelConfig
    from hamnet.rollouts import rollout_systems
    from hamnet.training import TrainConfig, train

    base = tmp_path / "data" / "base.npz"
    base.parent.mkdir()
    save_trajectories(base, generate(Springs(n_particles=4), n_systems=12, steps=12, dt=0.01, seed=0))
    model = ModelConfig(name="hlieconv", group="SO2", width=8, depth=1, kernel_width=8, kernel_channels=4)
    train(TrainConfig(model=model, epochs=1, batch_size=16, max_windows=32, validation_windows=8), base,
          tmp_path / "runs" / "parent", progress=False)
    # thresholds at which the one-epoch parent's candidates split: each test passes some and fails others
    own = sl.OwnStates(systems=5, steps=60, every=10, energy_change=0.3, reach=1.01, per_system=3, first=4)
    rolled = slice(4, 9)
    scale = sl.SCALES["smoke"]
    path = sl.own_states_file(tmp_path, scale, base, tmp_path / "runs" / "parent", own, compile=False)
    assert sl.own_states_file(tmp_path, scale, base, tmp_path / "runs" / "parent", own) == path  # made once
    with pytest.raises(ValueError, match="grown with other settings"):  # a file grown otherwise is not reused
        sl.own_states_file(tmp_path, scale, base, tmp_path / "runs" / "parent", sl.OwnStates(systems=5, per_system=2))
    plain, grown = load_trajectories(base), load_trajectories(path)
    record = grown.meta["own_states"]
    added = grown.z.shape[0] - plain.z.shape[0]
    assert added == record["systems_added"] > 0 and record["steps"] == 60 and record["parent"] == "parent"
    assert torch.equal(grown.z[:12], plain.z) and grown.z.shape[1:] == plain.z.shape[1:]

    network, _ = sl.model_from_checkpoint(tmp_path / "runs" / "parent" / "best.pt")
    learned = rollout_systems(network, plain.z[rolled, 0], {k: v[rolled] for k, v in plain.params.items()}, 60, 0.01,
                              method="leapfrog", keep_diverged=True)
    candidates = learned.z[:, ::10]
    system, edge = plain.system(), record["edge_radius"]
    assert edge == pytest.approx(float(plain.z[:, :, 0].norm(dim=-1).flatten().quantile(0.999)), rel=1e-12)
    owners = []
    for row in range(12, grown.z.shape[0]):
        start = grown.z[row, 0]
        match = (candidates - start).flatten(2).abs().amax(-1) < 1e-12
        owner, time = match.nonzero()[0].tolist()
        owners.append(owner)
        assert torch.equal(grown.params["k"][row], plain.params["k"][4 + owner])
        energy = system.hamiltonian(candidates[owner, [0, time]],
                                    {k: v[[4 + owner] * 2] for k, v in plain.params.items()})
        reach = float(start[0].norm(dim=-1).max())
        assert abs(float(energy[1] / energy[0]) - 1) > own.energy_change or reach > edge
        assert reach <= own.reach * edge
    # every rollout gives min(its qualifying candidates, per_system) systems: none skipped, none extra
    repeated = {k: v[rolled].repeat_interleave(candidates.shape[1], 0) for k, v in plain.params.items()}
    energy = system.hamiltonian(candidates.flatten(0, 1), repeated).view(candidates.shape[:2])
    radius = candidates[:, :, 0].norm(dim=-1).amax(-1)
    qualifies = (((energy / energy[:, :1] - 1).abs() > own.energy_change) | (radius > edge)) & (radius <= own.reach * edge)
    assert [owners.count(owner) for owner in range(5)] == [min(int(n), own.per_system) for n in qualifies.sum(1)]
    off, out, near = (energy / energy[:, :1] - 1).abs() > own.energy_change, radius > edge, radius <= own.reach * edge
    assert 0 < int(qualifies.sum()) < qualifies.numel() and int(qualifies.sum(1).min()) < own.per_system
    assert bool((off & ~out).any() and (out & near & ~off).any() and (out & ~near).any())  # each test decides
    kept = conservation_report(grown.z[12:], system.hamiltonian, {k: v[12:] for k, v in grown.params.items()})
    assert float(kept["energy"].max()) < 1e-6


def test_the_report_says_how_each_grown_file_was_grown():
    grown = {"parent": "p_seed1", "rollouts": 1000, "steps": 10000, "every": 200, "energy_change": 0.02,
             "edge_radius": 1.7956, "states_off_energy": 207, "states_out": 452, "rollouts_picked": 39,
             "systems_added": 240}
    results = {"command": "c", "note": "n", "threads": 1, "torch": "t", "rows": [], "integrator": None,
               "own_states": [grown]}
    line = next(line for line in sl.markdown(results) if line.startswith("Own-rollout states of p_seed1"))
    assert "39 of its 1000 rollouts" in line and "more than 2%" in line and "past 1.8)" in line
    assert line.endswith("240 new training systems.")
    far = {"pool": 15000, "keep": 300, "seed": 2, "frame": 0.1, "kept_reach_min": 1.7612, "pool_reach_median": 0.9166,
           "base_centred_q999": 1.502, "systems_added": 300}
    line = next(line for line in sl.markdown({**results, "far_reach": [far]}) if line.startswith("Far-reaching"))
    assert "of 15000 fresh systems (seed 2, every 0.1 time units), the 300" in line and "at least 1.76;" in line
    assert "median 0.917;" in line and "within 1.5 of theirs): 300 new training systems." in line


def test_systems_past_the_energy_line_are_counted_and_older_runs_take_the_count_from_explain(tmp_path):
    """A diverged rollout (None) counts as past both lines; a run scored before scores counted them gets its
    count from its ``--explain`` file, a run with neither shows none."""
    import json
    from types import SimpleNamespace

    assert sl.energy_past([0.01, 0.07, 0.2, None]) == {"systems_over_10_percent": 2, "systems_over_5_percent": 3}
    work = tmp_path / "work"
    for folder in ("scores", "explained", "data"):
        (work / folder).mkdir(parents=True)
    drift = {"median": 1e-3, "max": 0.3}
    run = {"best_epoch": 1, "window_mse": 1e-3, "diverged": 0,
           "valid_prediction_time": {"min": 1.0, "q1": 2.0, "median": 3.0, "q3": 4.0, "max": 5.0, "never_exceeded": 0},
           "drift": {"energy": drift, "linear_momentum": drift, "angular_momentum": drift}}
    older, newer, plain = (sl.run_name(sl.ROWS[i][0], 1) for i in range(3))
    (work / "scores" / f"{older}.json").write_text(json.dumps(run))
    (work / "scores" / f"{newer}.json").write_text(json.dumps({**run, "systems_over_10_percent": 7}))
    (work / "scores" / f"{plain}.json").write_text(json.dumps(run))
    (work / "explained" / f"{older}.json").write_text(json.dumps(
        {"run": older, "systems_over_10_percent": 4, "systems_over_5_percent": 6, "median_energy": 40.0,
         "training_radius_q999": 1.8, "worst": []}))
    sl.report(work, sl.SCALES["smoke"], SimpleNamespace(scale="smoke", out=str(tmp_path), threads=1), "_smoke")
    rows = json.loads((tmp_path / "springs_long_smoke.json").read_text())["rows"]
    assert [rows[i]["runs"]["1"].get("systems_over_10_percent") for i in range(3)] == [4, 7, None]
    lines = (tmp_path / "springs_long_smoke.md").read_text().splitlines()
    counts = [next(line for line in lines if line.startswith(f"| {sl.ROWS[i][0]} (seed 1)")).split(" | ")[5]
              for i in range(3)]
    assert counts == ["4", "7", "-"]


def test_far_reaching_systems_are_the_pools_farthest_each_run_through_its_farthest_moment(tmp_path):
    """The grown file: the base unchanged, then one true trajectory for each of the ``keep`` pool systems whose
    particles get farthest from their centroid (the pool run whole here, in chunks there), carrying that
    system's parameters, passing through that moment at its middle, conserving the true energy; other
    settings make another file."""
    from hamnet.diagnostics import conservation_report
    from hamnet.io import load_trajectories
    from hamnet.simulation import simulate

    scale = sl.SCALES["smoke"]
    base = sl.training_file(tmp_path, scale, sl.ROWS[0][0])
    far = sl.FarReach(pool=40, keep=4, seed=5, frame=0.05)
    path = sl.far_reach_file(tmp_path, scale, base, far, chunk=15)
    assert sl.far_reach_file(tmp_path, scale, base, far) == path  # made once
    assert sl.far_reach_file(tmp_path, scale, base, sl.FarReach(pool=40, keep=4, seed=5, frame=0.1)) != path
    plain, grown = load_trajectories(base), load_trajectories(path)
    assert torch.equal(grown.z[:plain.n_systems], plain.z) and grown.n_systems == plain.n_systems + 4

    system = Springs()
    generator = torch.Generator().manual_seed(5)
    params = system.sample_params(40, generator)
    z0 = system.sample_state(params, generator)
    _, pool, _ = simulate(system, z0, params, steps=round(scale.test_steps * 0.01 / 0.05), dt=0.05)
    reach = sl.centred_reach(pool).amax(1)
    chosen = reach.argsort(descending=True)[:4]
    assert grown.meta["far_reach"]["kept_reach_min"] == pytest.approx(float(reach[chosen[-1]]), rel=1e-12)
    added = slice(plain.n_systems, None)
    for name in ("m", "k"):
        torch.testing.assert_close(grown.params[name][added], params[name][chosen].to(grown.params[name].dtype))
    # each starts half its length before its farthest moment (or at the pool's start, if that comes sooner)
    middle = (plain.n_times - 1) // 2
    start = (sl.centred_reach(pool[chosen]).argmax(1) - middle * 0.01 / 0.05).long()
    assert bool((start < 0).any() and (start > 0).any())  # both cases met
    torch.testing.assert_close(grown.z[added, 0], pool[chosen, start.clamp_min(0)].to(grown.z.dtype), rtol=0, atol=0)
    late = start >= 0
    torch.testing.assert_close(sl.centred_reach(grown.z[added, middle])[late], reach[chosen][late], rtol=1e-7, atol=0)
    kept = conservation_report(grown.z[added], system.hamiltonian, {k: v[added] for k, v in grown.params.items()})
    assert float(kept["energy"].max()) < 1e-6


def test_own_rollouts_of_far_reaching_systems_start_from_their_starts(tmp_path):
    """With ``far``, the parent rolls out the far-reaching systems' starts (not the training file's), and every
    new system starts at a state of one of those rollouts and carries that far system's parameters."""
    from hamnet.io import load_trajectories, save_trajectories
    from hamnet.models import ModelConfig
    from hamnet.training import TrainConfig, train

    base = tmp_path / "data" / "base.npz"
    base.parent.mkdir()
    save_trajectories(base, generate(Springs(), n_systems=12, steps=12, dt=0.01, seed=0))
    model = ModelConfig(name="hlieconv", group="SO2", width=8, depth=1, kernel_width=8, kernel_channels=4)
    train(TrainConfig(model=model, epochs=1, batch_size=16, max_windows=32, validation_windows=8), base,
          tmp_path / "runs" / "parent", progress=False)
    scale, far = sl.SCALES["smoke"], sl.FarReach(pool=30, keep=4, seed=3, frame=0.05)
    own = sl.OwnStates(systems=3, steps=60, every=10, energy_change=0.01, reach=4.0, per_system=2, far=far)
    path = sl.own_states_file(tmp_path, scale, base, tmp_path / "runs" / "parent", own, compile=False)
    plain, grown = load_trajectories(base), load_trajectories(path)
    starts, params, _, _ = sl.far_starts(Springs(), far, scale.test_steps * 0.01, (plain.n_times - 1) * 0.01 / 2)
    network, _ = sl.model_from_checkpoint(tmp_path / "runs" / "parent" / "best.pt")
    learned = sl.rollout_systems(network, starts[:3], {k: v[:3] for k, v in params.items()}, 60, 0.01,
                                 method="leapfrog", keep_diverged=True)
    candidates = learned.z[:, ::10]
    assert grown.meta["own_states"]["far"] == sl.dataclasses.asdict(far) and grown.n_systems > plain.n_systems
    for row in range(plain.n_systems, grown.n_systems):
        owner = ((candidates - grown.z[row, 0]).flatten(2).abs().amax(-1) < 1e-12).nonzero()[0, 0]
        assert torch.equal(grown.params["k"][row], params["k"][owner].to(grown.params["k"].dtype))


def test_the_pick_is_the_fewest_systems_past_the_line_then_the_highest_median_then_the_earliest():
    def m(epoch, past, vpt):
        return {"epoch": epoch, "systems_over_10_percent": past, "plain_vpt_median": vpt}

    assert sl.picked([m(15, 2, 14.0), m(30, 0, 6.0), m(45, 1, 20.0)])["epoch"] == 30
    assert sl.picked([m(15, 1, 9.0), m(30, 1, 11.0), m(45, 1, 10.0)])["epoch"] == 30
    assert sl.picked([m(15, 0, 9.0), m(30, 0, 9.0)])["epoch"] == 15


def test_the_selection_set_is_the_pools_farthest_then_its_first_others_run_by_the_true_springs(tmp_path):
    from hamnet.diagnostics import conservation_report
    from hamnet.io import load_trajectories
    from hamnet.simulation import simulate

    test = generate(Springs(), n_systems=2, steps=60, dt=0.01, seed=1)
    selection = sl.RolloutSelection(pool=40, far=4, plain=5, seed=5, frame=0.05)
    path = sl.selection_file(tmp_path, test, selection)
    assert sl.selection_file(tmp_path, test, selection) == path  # made once
    assert sl.selection_file(tmp_path, test, sl.RolloutSelection(pool=40, far=4, plain=5, seed=6, frame=0.05)) != path
    chosen = load_trajectories(path)
    assert chosen.n_systems == 9 and chosen.n_times == test.n_times

    system = Springs()
    generator = torch.Generator().manual_seed(5)
    params = system.sample_params(40, generator)
    z0 = system.sample_state(params, generator).to(torch.float64)
    _, pool, _ = simulate(system, z0, params, steps=round(0.6 / 0.05), dt=0.05)
    order = sl.centred_reach(pool).amax(1).argsort(descending=True)
    far, others = order[:4], order[4:].sort().values[:5]
    assert bool((others < 9).all())  # the pool's first systems besides the far ones
    indices = torch.cat([far, others])
    torch.testing.assert_close(chosen.z[:, 0], z0[indices].to(chosen.z.dtype), rtol=0, atol=0)
    torch.testing.assert_close(chosen.params["k"], params["k"][indices].to(chosen.params["k"].dtype))
    assert chosen.meta["selection"]["far_reach_min"] > chosen.meta["selection"]["plain_reach_median"]
    kept = conservation_report(chosen.z, system.hamiltonian, chosen.params)["energy"]
    assert float(kept.max()) < 1e-6


def test_a_run_kept_in_snapshots_is_the_run_trained_in_one_go_and_the_picked_one_is_measured(tmp_path):
    """Training stopped and resumed at every snapshot gives bitwise the weights of one uninterrupted run; each
    snapshot's measures are the selection set's, and a second call reuses them."""
    import dataclasses

    from hamnet.io import load_trajectories, save_trajectories
    from hamnet.models import ModelConfig
    from hamnet.training import TrainConfig, train

    data = tmp_path / "train.npz"
    save_trajectories(data, generate(Springs(), n_systems=12, steps=12, dt=0.01, seed=0))
    test = generate(Springs(), n_systems=2, steps=30, dt=0.01, seed=1)
    selection = sl.RolloutSelection(every=2, pool=20, far=2, plain=3, seed=4, frame=0.05)
    chosen = load_trajectories(sl.selection_file(tmp_path, test, selection))
    model = ModelConfig(name="hlieconv", group="SO2", width=8, depth=1, kernel_width=8, kernel_channels=4).for_data(data)
    config = TrainConfig(model=model, epochs=5, batch_size=16, max_windows=32, validation_windows=8)
    scale = dataclasses.replace(sl.SCALES["smoke"], epochs_scale=1.0)
    run = tmp_path / "runs" / "run_seed1"
    best, measures, training = sl.train_and_pick(config, data, run, selection, chosen, scale, compile=False)
    assert [m["epoch"] for m in measures] == [2, 4, 5] and training["epochs"] == 5
    assert best == tmp_path / "snapshots" / "run_seed1" / f"epoch{sl.picked(measures)['epoch']}.pt"
    train(dataclasses.replace(config, epochs=5), data, tmp_path / "straight", progress=False)
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    pieces = torch.load(tmp_path / "snapshots" / "run_seed1" / "epoch5.pt", weights_only=False)["model"]
    assert all(torch.equal(straight[key], pieces[key]) for key in straight)
    direct = sl.rollout_measures(tmp_path / "snapshots" / "run_seed1" / "epoch4.pt", chosen, 2, compile=False)
    assert direct == measures[1]
    weak = (chosen.params["k"][:2] < sl.WEAK_SPRING).any(-1)
    assert direct["far_weak"] == int(weak.sum()) and direct["far_weak_over_10_percent"] <= direct["far_weak"]
    assert sl.train_and_pick(config, data, run, selection, chosen, scale, compile=False)[1] == measures


def test_later_starts_are_the_plain_systems_carried_on_by_their_true_motion_to_a_time_in_range():
    """The systems (masses, springs) are the plain file's; each first state lies on that system's own true
    trajectory at some step within the range, and the steps differ between systems."""
    from hamnet.simulation import simulate

    plain = generate(Springs(), n_systems=5, steps=4, dt=0.01, seed=3)
    later = generate(sl.LaterSprings(0.3, chunk=2), n_systems=5, steps=4, dt=0.01, seed=3)
    for name in plain.params:
        torch.testing.assert_close(later.params[name], plain.params[name], rtol=0, atol=0)
    _, motion, _ = simulate(Springs(), plain.z[:, 0], plain.params, steps=30, dt=0.01)
    distance = (motion - later.z[:, :1]).flatten(2).norm(dim=-1)  # (5, 31): each start against each step
    steps = distance.argmin(1)
    assert float(distance.amin(1).max()) < 1e-6 and len(set(steps.tolist())) > 1
    assert later.meta["system"] == plain.meta["system"]


def test_the_edge_radius_of_a_file_of_more_positions_than_the_quantile_takes():
    """Past 2**24 positions it takes evenly spaced ones, the last among them (float32 spacing once ran past it)."""
    from types import SimpleNamespace

    z = torch.zeros(1, 3_000_300, 2, 6, 1)  # 18,001,800 positions, as many as the held-out file has
    z[..., 0, :, 0] = torch.arange(6.0)  # distances from the origin 0..5, a sixth of them each
    assert sl.edge_radius(SimpleNamespace(z=z)) == 5.0


def test_the_report_shows_each_picked_runs_snapshots_and_the_runs_measured_on_the_selection_set():
    def m(epoch, past):
        return {"epoch": epoch, "systems_over_10_percent": past, "systems_over_5_percent": past + 1,
                "far_over_10_percent": past, "largest_energy_change": 0.5, "plain_vpt_median": 9.0,
                "far_vpt_median": 4.0}

    settings = {"every": 15, "far": 100, "far_reach_min": 1.76, "frame": 0.1, "plain": 100,
                "plain_reach_median": 0.9, "pool": 5000, "seed": 3}
    run = {"best_epoch": 30, "valid_prediction_time": {"median": 8.0, "q1": 5.0, "q3": 11.0, "never_exceeded": 0},
           "drift": {name: {"median": 1e-3, "max": 0.2} for name in ("energy", "linear_momentum", "angular_momentum")},
           "diverged": 0, "systems_over_10_percent": 1,
           "selection": {"settings": settings, "snapshots": [m(15, 14), m(30, 12)]}}
    lines = sl.markdown({"command": "c", "note": "n", "threads": 1, "torch": "t", "integrator": None,
                         "rows": [{"row": "picked", "what": "w", "runs": {"1": run}}],
                         "measured": [{"run": "other_seed1", **m(55, 18)},
                                      {"run": "weak_seed1", **m(60, 20), "far_weak": 49, "far_weak_over_10_percent": 17,
                                       "weak_force_error": 0.75, "held_force_error": 0.00123}]})
    assert "| 15 | 14 (14) | 15 | 0.5 | 9.00 (4.00) | - | - |" in lines
    assert "| 30 | 12 (12) | 13 | 0.5 | 9.00 (4.00) | - | - |" in lines
    assert any("epoch 30 scored above" in line for line in lines)
    assert "| other_seed1 | 55 | 18 (18) | 19 | 0.5 | 9.00 (4.00) | - | - |" in lines  # measured before the count
    assert "| weak_seed1 | 60 | 20 (20) | 21 | 0.5 | 9.00 (4.00) | 17 (49) | 0.75 (0.0012) |" in lines


def test_force_errors_part_the_nearly_free_particles_from_the_others():
    """The true springs miss by round-off; a force off by the same small amount on every particle is a large
    error for a nearly free particle and a small one for the others."""
    from types import SimpleNamespace

    from hamnet.simulation import simulate

    system, generator = Springs(), torch.Generator().manual_seed(0)
    params = system.sample_params(3, generator)
    params["k"][:, 0] = 0.01  # particle 0 nearly free
    _, z, _ = simulate(system, system.sample_state(params, generator), params, steps=20, dt=0.01)
    chosen = SimpleNamespace(z=z, params=params, system=lambda: system)
    exact = sl.force_errors(system, chosen, 3, every=5)
    assert exact["weak_force_error"] < 1e-12 and exact["held_force_error"] < 1e-12

    class Pushed:
        def forces(self, q, params):
            return system.forces(q, params) + 0.01

    pushed = sl.force_errors(Pushed(), chosen, 3, every=5)
    assert pushed["weak_force_error"] > 10 * pushed["held_force_error"] > 0
