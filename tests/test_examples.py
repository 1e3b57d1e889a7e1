"""Every example runs end to end on its tiny setting and shows what it claims."""

import json
import os
import runpy
import subprocess
import sys
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


def test_extend_hamnet_through_the_command_line(tmp_path):
    """A user's system, group, model and integrator, each registered from its own file, work through the
    CLI (generate, train, checkpoint, rollout); a fresh process refuses the checkpoint without the plugin.
    Run in a subprocess: the plugins register into process-wide tables that other tests list."""
    subprocess.run([sys.executable, str(EXAMPLES / "extend_hamnet.py"), "--tiny", "--out", str(tmp_path)], check=True,
                   capture_output=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # the TX-invariant, centred HLieConv keeps linear momentum; the pair potential keeps both momenta
    assert summary["drifts"]["tx"]["linear_momentum"] < 1e-12
    assert max(summary["drifts"]["pair"].values()) < 1e-12
    assert summary["refused_exit"] == 1 and not summary["refused_file_exists"]
    assert "unknown group 'TX'" in summary["refused_message"] and "--plugin" in summary["refused_message"]
    assert summary["refused_message"].count("\n") == 1 and "Traceback" not in summary["refused_message"]


@pytest.mark.slow
def test_the_quickstart_notebook_runs_and_keeps_both_momenta(tmp_path):
    """Every code cell of examples/quickstart.ipynb, in order, in one namespace, in a fresh process (as a
    kernel would run them; matplotlib draws off screen)."""
    notebook = json.loads((EXAMPLES / "quickstart.ipynb").read_text())
    cells = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    script = tmp_path / "notebook.py"
    report = "import json\nprint(json.dumps({name: float(value.max()) for name, value in drift.items()}))\n"
    script.write_text("\n\n".join(cells) + "\n\n" + report)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    drift = json.loads(done.stdout.strip().splitlines()[-1])
    assert drift["linear_momentum"] < 1e-12 and drift["angular_momentum"] < 1e-12
