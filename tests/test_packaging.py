"""What installing hamnet gives a user: one top-level package, and version bounds that CI tests."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", path.read_text(), re.M))


def lower_bounds() -> dict[str, str]:
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)>=([^,\s]+)", "\n".join(requirements), re.M))


def test_the_lowest_versions_tested_are_the_lowest_pyproject_allows():
    lowest, bounds = pins(ROOT / "constraints-lowest.txt"), lower_bounds()
    for package in ("torchdiffeq", "numpy", "matplotlib"):
        assert Version(lowest[package]) == Version(bounds[package]), f"constraints-lowest.txt pins {package} {lowest[package]}, " \
                                                   f"pyproject.toml allows {bounds[package]}"
    assert lowest["torch"] == pins(ROOT / "constraints.txt")["torch"]  # one torch build for both runs


@pytest.mark.slow
def test_a_wheel_installs_hamnet_and_nothing_else_at_the_top(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("hamnet", "systems"):
        shutil.copytree(ROOT / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("hamnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"hamnet"}
    assert "hamnet/systems/springs.py" in names and "hamnet/pretrained/springs-so2.pt" in names
