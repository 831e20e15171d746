"""The code's layout rules (issue 28), checked on the source so a change that breaks one fails here.

Static reads of the tree: no imports run except each package's own `__init__`.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "components").iterdir() if (p / "__init__.py").exists())
DEEP = re.compile(r"^components\.(\w+)\.\w+$")
MLFLOW_HOMES = ("components/registry/", "tracking.py")


def _sources(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (ROOT / root).rglob("*.py"))


def _package_of(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    return rel[1].removesuffix(".py") if rel[0] == "components" else None


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno


def test_no_file_in_components_or_flows_exceeds_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources("components", "flows")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}


def test_imports_across_packages_use_the_package_exports():
    deep = [
        f"{p.relative_to(ROOT)}:{line} from {module}"
        for p in _sources("components", "flows", "benchmarks")
        for module, _, line in _imports(p)
        if (m := DEEP.match(module)) and m.group(1) != _package_of(p)
    ]
    assert deep == []


def test_no_private_name_is_imported_from_another_package():
    private = [
        f"{p.relative_to(ROOT)}:{line} {name} from {module}"
        for p in _sources("components", "flows", "benchmarks")
        for module, names, line in _imports(p)
        if module.startswith("components.") and module.split(".")[1] != _package_of(p)
        for name in names
        if name.startswith("_")
    ]
    assert private == []


def test_mlflow_is_imported_only_by_the_registry_and_the_tracking_modules():
    outside = [
        str(p.relative_to(ROOT))
        for p in _sources("components", "flows")
        if any(module.split(".")[0] == "mlflow" for module, _, _ in _imports(p))
        and not any(home in p.relative_to(ROOT).as_posix() for home in MLFLOW_HOMES)
    ]
    assert outside == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(f"components.{package}")
    exported = getattr(module, "__all__", [])
    assert [name for name in exported if not hasattr(module, name)] == []
