"""The package's shape: algorithm packages share code through sb3_safe.common only, never through each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sb3_safe"
ALGORITHM_PACKAGES = ("cvpo", "lagrangian", "linear")


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


@pytest.mark.parametrize("package", ALGORITHM_PACKAGES)
def test_no_algorithm_package_imports_another(package):
    others = {f"sb3_safe.{other}" for other in ALGORITHM_PACKAGES if other != package}
    offending = {
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in (PACKAGE / package).glob("*.py")
        for module in _imported_modules(path)
        if any(module == other or module.startswith(other + ".") for other in others)
    }
    assert not offending, sorted(offending)


def test_common_imports_no_algorithm_package():
    offending = {
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in (PACKAGE / "common").glob("*.py")
        for module in _imported_modules(path)
        if any(module.startswith(f"sb3_safe.{package}") for package in ALGORITHM_PACKAGES)
    }
    assert not offending, sorted(offending)
