"""The import graph: data flows one way through hamnet's tiers (docs/architecture.md).

Every module of ``hamnet`` belongs to one named tier and may import from its own tier and the tiers
below, never from a tier above; the graph has no circle, within a tier either; ``hamnet.systems`` (the
true physics) imports nothing from the rest of hamnet. A new module must be given its tier here, which
is the point: where it sits is a decision. No module is much longer than ``MAX_LINES``.
"""

import ast
import importlib
from pathlib import Path

import pytest

import hamnet

ROOT = Path(__file__).resolve().parents[1]

#: lowest first, with what each is for; a module imports from its own tier and those below
TIERS = {
    "foundation": ["version", "registry", "resources", "paths", "config", "settings_file"],
    "numerics": ["composition", "diagnostics", "dynamics", "integrate", "conversion", "io", "provenance", "readers",
                 "data", "region", "simulation", "stepping",
                 "protocols", "lie_group", "rigid_groups", "groups", "equivariance", "lieconv", "layers"],
    "models": ["models", "egnn", "checkpoint", "rollouts", "loss"],
    "workflows": ["monitor", "runs", "distributed", "optimisation", "run_settings", "training", "ensemble", "fitting",
                  "evaluation"],
    "figures": ["population", "plots", "animate"],
    "interface": ["demo", "cli_common", "cli_import", "cli_train", "cli_visual", "cli_rollout", "cli", "__init__"],
}
RANK = {module: rank for rank, modules in enumerate(TIERS.values()) for module in modules}
#: "about 500 lines" per module (the issue that split the large ones); a module past it is split
MAX_LINES = 520


def imported_modules(path: Path) -> set[str]:
    """The modules of hamnet (``systems`` for ``hamnet.systems``) that the hamnet module ``path``
    imports, anywhere in the file (imports inside functions count: they are edges all the same)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1 or node.module == "hamnet":  # from . import x / from hamnet import x
                found |= {alias.name if (ROOT / "hamnet" / f"{alias.name}.py").exists() or alias.name == "systems"
                          else "__init__" for alias in node.names}
            elif node.module:
                found |= _named(node.module.split("."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found |= _named(alias.name.split("."))
    return found - {path.stem}


def _named(parts: list[str]) -> set[str]:
    if parts[0] == "hamnet":
        return {parts[1] if len(parts) > 1 else "__init__"}
    return set()


def hamnet_modules() -> list[Path]:
    return sorted((ROOT / "hamnet").glob("*.py"))


def import_graph() -> dict[str, set[str]]:
    return {path.stem: imported_modules(path) - {"systems"} for path in hamnet_modules()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first search (empty when the graph is acyclic)."""
    found, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_has_a_tier():
    assert {path.stem for path in hamnet_modules()} == set(RANK), "give each new module its tier in TIERS"


@pytest.mark.parametrize("path", hamnet_modules(), ids=lambda path: path.stem)
def test_imports_come_from_the_same_tier_or_below(path):
    upward = sorted(module for module in imported_modules(path) - {"systems"} if RANK[module] > RANK[path.stem])
    assert not upward, f"hamnet.{path.stem} ({_tier(path.stem)}) imports {upward} from a tier above"


def test_there_is_no_import_circle():
    assert circles(import_graph()) == []


def test_nothing_imports_the_package_itself():
    importers = sorted(module for module, targets in import_graph().items() if "__init__" in targets)
    assert not importers, f"{importers} import hamnet's __init__; import the module that holds the name"


@pytest.mark.parametrize("path", hamnet_modules(), ids=lambda path: path.stem)
def test_no_module_is_far_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"hamnet/{path.name} has {lines} lines; split it by concept"


def test_systems_do_not_depend_on_the_rest_of_hamnet():
    for path in sorted((ROOT / "systems").glob("*.py")):
        tree = ast.parse(path.read_text())
        absolute = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0]
        absolute += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        upward = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 1]
        assert not [name for name in absolute if name.split(".")[0] == "hamnet"], f"systems/{path.name} imports hamnet"
        assert not upward, f"systems/{path.name} imports from the package above it"


def test_the_checker_sees_upward_lazy_and_circular_imports(tmp_path):
    module = tmp_path / "io.py"
    module.write_text("import torch\n\ndef load():\n    from .training import train\n    from hamnet import cli\n")
    assert imported_modules(module) == {"training", "cli"}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_submodules_are_importable_by_their_names():
    for path in hamnet_modules():
        if path.stem != "__init__":
            module = importlib.import_module(f"hamnet.{path.stem}")
            assert module.__name__ == f"hamnet.{path.stem}"
    assert importlib.import_module("hamnet.systems").Springs.__module__ == "hamnet.systems.springs"
    # the verbs of the public API do not shadow modules: each verb's module has another name
    assert {"train", "rollout", "evaluate", "generate"} <= set(hamnet.__all__)
    assert not {"train", "rollout", "evaluate", "generate", "simulate"} & {path.stem for path in hamnet_modules()}


def _tier(module: str) -> str:
    return next(name for name, modules in TIERS.items() if module in modules)
