"""The house rules that keep the code findable, checked on the source itself: the orchestrator asks a
trainer's spec and never tests its name, no two modules share a name, private library internals are
used in one module only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trainers import catalog

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_TRAINERS = sorted(path for folder in ("orchestrator", "benchmarks")
                          for path in (ROOT / folder).rglob("*.py"))
LIBRARIES = ("ray", "optuna", "mlflow")


def trainer_name_tests(tree: ast.AST) -> list[int]:
    """Lines that compare a value with a trainer's name, or test membership in names of trainers."""
    names = set(catalog.TRAINERS)

    def named(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(element) for element in node.elts)
        return False

    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Compare) and any(named(side) for side in [node.left, *node.comparators])]


@pytest.mark.parametrize("path", OUTSIDE_TRAINERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_outside_the_trainers_tests_a_trainers_name(path: Path) -> None:
    lines = trainer_name_tests(ast.parse(path.read_text()))
    assert not lines, (f"{path.relative_to(ROOT)}:{lines[0]} tests a trainer's name: add the fact to "
                       "TrainerSpec (trainers/catalog.py) and ask the spec")


def test_the_name_check_finds_what_it_looks_for() -> None:
    found = trainer_name_tests(ast.parse('if trainer == "dcgan":\n    pass\nok = t in ("mlp_gan", "x")\n'))
    assert found == [1, 3]
    assert trainer_name_tests(ast.parse('spec = get("dcgan")\nif spec.needs_evaluator:\n    pass\n')) == []


def test_no_two_orchestrator_modules_share_a_name() -> None:
    """Within orchestrator/, and between it and trainers/ (whose gan.py beside models/gan.py predates it)."""
    def stems(package: str) -> list[tuple[str, str]]:
        return [(path.stem, str(path.relative_to(ROOT))) for path in (ROOT / package).rglob("*")
                if "__pycache__" not in path.parts and path.name not in ("__init__.py", "__main__.py")
                and (path.suffix == ".py" or path.is_dir())]

    ours, theirs = stems("orchestrator"), dict(stems("trainers"))
    modules: dict[str, list[str]] = {}
    for stem, path in ours:
        modules.setdefault(stem, []).append(path)
        if stem in theirs:
            modules[stem].append(theirs[stem])
    repeated = {name: paths for name, paths in modules.items() if len(paths) > 1}
    assert not repeated, f"two modules of one name: {repeated}"


def private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """Imports of a private module of Ray, Optuna or MLflow, and private attributes read off them."""
    found = []
    for node in ast.walk(tree):
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [f"{node.module}.{alias.name}" for alias in node.names]
                   if isinstance(node, ast.ImportFrom) and node.module else [])
        for module in modules:
            parts = module.split(".")
            if parts[0] in LIBRARIES and any(part.startswith("_") for part in parts[1:]):
                found.append((node.lineno, module))
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                found.append((node.lineno, node.attr))
    return found


def test_private_library_internals_are_used_in_one_module() -> None:
    offenders = []
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        if path.name == "library_internals.py":
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line} {what}" for line, what in private_uses(
            ast.parse(path.read_text()))]
    assert not offenders, f"private internals outside library_internals.py: {'; '.join(offenders)}"
    internals = private_uses(ast.parse((ROOT / "orchestrator" / "library_internals.py").read_text()))
    assert internals, "the check finds the internals where they are"
