"""The layering of DESIGN.md section 2, and each package's public surface."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["trimtab.slo", "trimtab.controller", "trimtab.adapters", "trimtab.dashboards"]


def _imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def test_slo_imports_nothing_of_trimtab() -> None:
    assert {n for n in _imports(ROOT / "slo") if n.startswith("trimtab")} == set()


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extras"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("name", PACKAGES)
def test_package_says_what_it_is_for_and_exports_a_sorted_surface(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__
    assert len(module.__doc__.split()) >= 8
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_every_proxy_adapter_has_a_real_proxy_harness() -> None:
    """The contract and under-load suites run once per harness: a proxy adapter without one
    (or a harness that stopped registering) would leave its proxy untested, silently."""
    from proxies import HARNESSES
    from trimtab.controller.wiring import FACTORIES

    proxies = set(FACTORIES) - {"file"}  # the file adapter has its own suite
    assert proxies == {"envoy", "haproxy", "nginx"}
    assert set(HARNESSES) == proxies
