"""The import graph: data flows one way through hamnet's layers (docs/architecture.md).

Every module of ``hamnet`` sits in one layer and may import only from strictly lower layers, so no
import goes upward or in a circle; ``systems`` (the true physics) imports nothing from hamnet. A new
module must be given its layer here, which is the point: where it sits is a decision.
"""

import ast
from pathlib import Path

import pytest

import hamnet

ROOT = Path(__file__).resolve().parents[1]

#: lowest first; a module may import from any layer below its own and from none at or above it
LAYERS = [
    ["version", "registry", "resources", "paths"],
    ["composition", "diagnostics", "groups", "dynamics"],
    ["integrate", "lieconv", "equivariance", "io"],
    ["models", "simulation", "protocols", "data"],
    ["checkpoint", "rollouts", "loss", "predictors"],
    ["training", "evaluation"],
    ["plots"],
    ["animate"],
    ["demo"],
    ["cli_common"],
    ["cli_visual"],
    ["cli"],
    ["__init__"],
]
RANK = {module: rank for rank, layer in enumerate(LAYERS) for module in layer}


def imported_modules(path: Path) -> set[str]:
    """The modules of hamnet (and 'systems') that the hamnet module ``path`` imports, anywhere in the
    file (imports inside functions count: they are edges of the graph all the same)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1 or node.module == "hamnet":  # from . import x / from hamnet import x
                found |= {alias.name if (ROOT / "hamnet" / f"{alias.name}.py").exists() else "__init__"
                          for alias in node.names}
            elif node.module:
                found |= _named(node.module.split("."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found |= _named(alias.name.split("."))
    return found - {path.stem}


def _named(parts: list[str]) -> set[str]:
    if parts[0] == "hamnet":
        return {parts[1] if len(parts) > 1 else "__init__"}
    return {"systems"} if parts[0] == "systems" else set()


def hamnet_modules() -> list[Path]:
    return sorted((ROOT / "hamnet").glob("*.py"))


def test_every_module_has_a_layer():
    assert {path.stem for path in hamnet_modules()} == set(RANK), "give each new module its layer in LAYERS"


@pytest.mark.parametrize("path", hamnet_modules(), ids=lambda path: path.stem)
def test_imports_only_from_lower_layers(path):
    upward = sorted(module for module in imported_modules(path) - {"systems"}
                    if RANK[module] >= RANK[path.stem])
    assert not upward, f"hamnet.{path.stem} (layer {RANK[path.stem]}) imports {upward} from its own layer or above"


def test_systems_do_not_depend_on_hamnet():
    for path in sorted((ROOT / "systems").glob("*.py")):
        tree = ast.parse(path.read_text())
        absolute = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0]
        absolute += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert not [name for name in absolute if name.split(".")[0] == "hamnet"], f"systems/{path.name} imports hamnet"


def test_the_checker_sees_upward_and_lazy_imports(tmp_path):
    module = tmp_path / "io.py"
    module.write_text("import torch\n\ndef load():\n    from .training import train\n    from hamnet import cli\n")
    assert imported_modules(module) == {"training", "cli"}


def test_submodules_are_importable_by_their_names():
    import importlib

    for path in hamnet_modules():
        if path.stem != "__init__":
            module = importlib.import_module(f"hamnet.{path.stem}")
            assert module.__name__ == f"hamnet.{path.stem}"
    # the verbs of the public API do not shadow modules: each verb's module has another name
    assert {"train", "rollout", "evaluate", "generate"} <= set(hamnet.__all__)
    assert not {"train", "rollout", "evaluate", "generate", "simulate"} & {path.stem for path in hamnet_modules()}
