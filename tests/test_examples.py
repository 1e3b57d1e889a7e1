"""Every example runs end to end on its tiny setting and shows what it claims."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args):
    return runpy.run_path(str(EXAMPLES / f"{name}.py"))["main"](["--tiny", *args])


def test_train_springs(tmp_path):
    scores = run_example("train_springs", "--out", str(tmp_path))
    assert scores["drift"]["angular_momentum"]["max"] < 1e-12  # SO(2) + leapfrog
    assert (tmp_path / "run" / "best.pt").exists()


def test_long_rollout_conservation(tmp_path):
    drifts = run_example("long_rollout_conservation", "--out", str(tmp_path))
    assert drifts["true H, leapfrog"]["angular_momentum"] < 1e-12
    assert drifts["true H, rk4"]["angular_momentum"] > 1e3 * drifts["true H, leapfrog"]["angular_momentum"]
    assert drifts["HLieConv SO(2), leapfrog"]["angular_momentum"] < 1e-12
    assert (tmp_path / "conservation.png").exists()


@pytest.mark.parametrize("dim", ["2", "3"])
def test_nbody(tmp_path, dim):
    scores = run_example("nbody", "--dim", dim, "--out", str(tmp_path))
    assert scores["drift"]["linear_momentum"]["max"] < 1e-12


def test_custom_system_and_group(tmp_path):
    result = run_example("custom_system_and_group", "--out", str(tmp_path))
    assert result["energy_error"] < 1e-8 and result["equivariance_error"] < 1e-10
    assert (tmp_path / "morse.npz").exists()
