"""benchmarks/lennard_jones.py: its probe of a learned potential against known errors, and the script end to end
at its smoke scale."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hamnet.simulation import generate
from hamnet.systems import LennardJones

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import lennard_jones as lj  # noqa: E402  (benchmarks are scripts, not a package)


class Scaled(nn.Module):
    """A stand-in for a learned model: the true potential times ``factor`` plus ``offset``."""

    def __init__(self, system, factor: float, offset: float) -> None:
        super().__init__()
        self.system, self.factor, self.offset = system, factor, offset
        self.anchor = nn.Parameter(torch.zeros(()))  # so that .double() has something to cast

    def potential(self, q, params):
        return self.factor * self.system.potential(q, params) + self.offset

    def forces(self, q, params):
        return self.factor * self.system.forces(q, params)


@pytest.fixture(scope="module")
def clusters():
    return generate(LennardJones(), n_systems=4, steps=40, dt=0.01, seed=3)


def test_probe_reads_a_known_potential_error(clusters):
    system = clusters.system()
    exact = lj.probe(Scaled(system, 1.0, 2.5), clusters, 4)
    assert exact["force_error_median"] == pytest.approx(0, abs=1e-12)
    assert exact["potential_error_spread_median"] == pytest.approx(0, abs=1e-12)
    off = lj.probe(Scaled(system, 1.1, 0.0), clusters, 4)
    assert off["force_error_median"] == pytest.approx(0.1, rel=1e-9)
    z = clusters.z[:, ::4].double()
    params = {k: v.double() for k, v in clusters.params.items()}
    v = torch.stack([system.potential(z[:, t, 0], params) for t in range(z.shape[1])], 1)
    h0 = system.hamiltonian(z[:, 0], params).abs()
    expected = (0.1 * (v.amax(1) - v.amin(1)) / h0).median()
    assert off["potential_error_spread_median"] == pytest.approx(float(expected), rel=1e-9)
    assert off["states"] == 4 * z.shape[1]


def test_windows_by_time_scores_the_first_and_the_last_span(clusters, monkeypatch):
    from hamnet.data import Windows
    from hamnet.io import Trajectories
    from hamnet.loss import window_mse

    monkeypatch.setattr(lj, "SPAN_STEPS", 10)
    system = clusters.system()
    scores = lj.windows_by_time(system, clusters, "leapfrog")
    for key, span in (("window_mse_first", slice(0, 11)), ("window_mse_last", slice(30, 41))):
        part = Trajectories(clusters.t[:11], clusters.z[:, span], clusters.params, dict(clusters.meta))
        expected = window_mse(system, Windows(part, 5, seed=0), 0.01, method="leapfrog", dtype=torch.float64)
        assert scores[key] == pytest.approx(expected["mse"], rel=1e-12)
    assert scores["window_mse_first"] != scores["window_mse_last"]


def test_equilibrated_systems_are_pieces_of_one_longer_run(tmp_path):
    scale = lj.Scale(3, 5, 2, 20, 10, None, 1.0, 1, "test")
    path = lj.equilibrated_file(tmp_path, scale)
    from hamnet.io import load_trajectories

    pieces = load_trajectories(path)
    full = generate(LennardJones(), n_systems=3, steps=25, dt=0.01, seed=0)
    starts = [next(s for s in range(21) if torch.equal(full.z[b, s], pieces.z[b, 0])) for b in range(3)]
    for b, start in enumerate(starts):
        assert torch.equal(pieces.z[b], full.z[b, start:start + 6])
    assert len(set(starts)) > 1 and pieces.meta["steps"] == 5


def test_the_smoke_scale_runs_end_to_end(monkeypatch, tmp_path):
    monkeypatch.setattr(lj, "HERE", tmp_path)
    monkeypatch.setattr(sys, "argv", ["lennard_jones.py", "--scale", "smoke"])
    monkeypatch.setattr(lj, "springs_probe", lambda work, scale: {"model": "springs-so2 (pretrained)",
                                                                  "force_error_median": 0.5,
                                                                  "potential_error_spread_median": 0.5})
    lj.main()
    results = json.loads((tmp_path / "results" / "lennard_jones_smoke.json").read_text())
    assert list(results["table"]) == [row[0] for row in lj.ROWS]
    for row, entry in results["table"].items():
        assert len(entry["runs"]) == len(entry["seeds"]) > 0
        for run in entry["runs"]:
            assert run["diverged"] == 0 and run["linear_momentum"]["max"] < 1e-12
    # the true Hamiltonian through leapfrog at dt 0.01 keeps its energy far better than any learned model here
    assert results["integrator"]["energy"]["median"] < 1e-3
    table = (tmp_path / "results" / "lennard_jones_smoke.md").read_text()
    assert "| SO(2), defaults |" in table and "The true Hamiltonian" in table
