"""The package layering of DESIGN.md, checked on the source: jiio_core imports only torch,
attrs, einops and the standard library (not cattrs: the dict loader is jiio_zoo's); jiio_zoo
never imports jiio_tasks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "jiio_core": {"torch", "attrs", "einops", "jiio_core"},
    "jiio_zoo": {"torch", "attrs", "cattrs", "einops", "jiio_core", "jiio_zoo"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_respect_the_layering(package: str) -> None:
    stdlib = set(sys.stdlib_module_names)
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = sorted(n for n in _imports(path) - stdlib - ALLOWED[package] if n != "__future__")
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, f"{package} imports outside its layer: {offenders}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text("import numpy\nfrom jiio_tasks.data import x\n", encoding="utf8")
    assert _imports(bad) == {"numpy", "jiio_tasks"}


FAMILIES = ("generative", "inverse", "adversarial", "meta")


def _task_modules(path: Path) -> set[str]:
    """``jiio_tasks.<sub>`` names imported by ``path`` (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        out.update(n.split(".")[1] for n in names if n.startswith("jiio_tasks.") and n.count(".") >= 1)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_task_families_never_import_each_other(family: str) -> None:
    offenders = {}
    for path in sorted((ROOT / "jiio_tasks" / family).rglob("*.py")):
        bad = sorted(_task_modules(path) & (set(FAMILIES) - {family}))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, f"jiio_tasks.{family} imports other families: {offenders}"


def test_shared_task_modules_import_no_family() -> None:
    """jiio_tasks.imaging, .loop, .runs, .penalty, ... serve every family, so they import none
    (the CLI finds the families by name, not by import)."""
    offenders = {}
    for path in sorted((ROOT / "jiio_tasks").rglob("*.py")):
        parts = path.relative_to(ROOT / "jiio_tasks").parts
        if parts[0] in FAMILIES:
            continue
        bad = sorted(_task_modules(path) & set(FAMILIES))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, f"shared modules import task families: {offenders}"


def test_the_family_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text("from jiio_tasks.adversarial.train import x\nimport jiio_tasks.meta\n", encoding="utf8")
    assert _task_modules(bad) == {"adversarial", "meta"}


def test_jiio_core_holds_only_the_library() -> None:
    """The demo is an example (jiio_tasks.demo), not the core: no runnable module in jiio_core."""
    assert not (ROOT / "jiio_core" / "demo.py").exists()
    assert (ROOT / "jiio_tasks" / "demo.py").exists()
    runnable = []
    for path in sorted((ROOT / "jiio_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__":
                runnable.append(str(path.relative_to(ROOT)))
    assert not runnable, f"jiio_core modules with a __main__ block: {runnable}"


def _context_mutations(path: Path) -> list[str]:
    """Per-batch context set on a module instead of passed as an argument: a ``set_context``
    method or call, any assignment to a ``.context`` attribute, or an assignment to another
    object's ``.operator`` (e.g. ``objective.operator = op``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "set_context":
            out.append(f"line {node.lineno}: def set_context")
        elif isinstance(node, ast.Attribute) and node.attr == "set_context":
            out.append(f"line {node.lineno}: .set_context")
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for t in targets:
            if not isinstance(t, ast.Attribute):
                continue
            on_self = isinstance(t.value, ast.Name) and t.value.id == "self"
            if t.attr == "context" or (t.attr == "operator" and not on_self):
                out.append(f"line {t.lineno}: assigns .{t.attr}")
    return out


def test_per_batch_context_is_passed_not_set() -> None:
    offenders = {}
    for package in ("jiio_core", "jiio_zoo", "jiio_tasks", "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found = _context_mutations(path)
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, f"per-batch context set on modules (pass context= instead): {offenders}"


def test_the_context_checker_sees_a_mutation(tmp_path: Path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text(
        "def set_context(self, c): self.context = c\nobjective.operator = op\nmodel.set_context(x)\n"
        "class A:\n    def __init__(self, op): self.operator = op\n",
        encoding="utf8",
    )
    assert len(_context_mutations(bad)) == 4
