"""The front door and the documentation: the README's example runs as written, the README stays short,
and every results table on a page is what its results file gives (benchmarks/tables.py)."""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_architecture import TIERS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) <= 120


def test_the_readme_example_runs_as_written_and_keeps_both_momenta(tmp_path):
    """Run verbatim in a fresh process on one thread, in an empty folder (it writes springs.npz and runs/)."""
    (example,) = python_blocks(README)
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HAMNET_DEBUG": "1"})
    assert done.returncode == 0, done.stderr
    drift = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert float(drift["linear_momentum"]) < 1e-12 and float(drift["angular_momentum"]) < 1e-12
    assert (tmp_path / "runs" / "hlieconv-SO2-1" / "best.pt").exists()


def test_getting_started_shows_the_readme_example():
    assert python_blocks(README)[0] in python_blocks(ROOT / "docs" / "getting-started.md")


def test_every_table_on_every_page_is_its_results_file(tables):
    stale = [str(page.relative_to(ROOT)) for page in tables.stale_pages()]
    assert not stale, f"run python benchmarks/tables.py: {stale}"
    assert "<!-- table: headline -->" in README.read_text()


def test_a_figure_that_differs_from_its_result_is_caught(tables):
    text = README.read_text()
    block = re.search(r"<!-- table: headline -->\n(.*?)<!-- /table -->", text, re.S)
    figure = re.search(r"\d\.\de-\d", block.group(1)).group(0)
    edited = text.replace(figure, figure.replace(figure[0], str((int(figure[0]) + 1) % 10), 1), 1)
    assert edited != text and tables.render(edited) == text
    with pytest.raises(KeyError, match="unknown table 'no-such-table'"):
        tables.render("<!-- table: no-such-table -->\n<!-- /table -->\n")


def test_the_architecture_page_names_every_module_in_its_tier():
    rows = {line.split("|")[1].strip(): line.split("|")[2] for line in
            (ROOT / "docs" / "architecture.md").read_text().splitlines() if line.startswith("| ")}
    for tier, modules in TIERS.items():
        assert tier in rows, f"docs/architecture.md has no row for the tier {tier}"
        assert {f"`{module}`" for module in modules} <= set(re.findall(r"`\w+`", rows[tier])), tier
