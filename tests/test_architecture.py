"""The package's layout keeps to its architecture (docs: Architecture); ``lint-imports`` in CI checks the imports.

Here: every module of ``dnorm`` has a place in the layers contract (a new one
must be given one, or the contract would not see it), and no file grows past
the size at which it holds more than one responsibility.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dnorm"
#: The longest a module of dnorm may be, docstrings included.
MAX_LINES = 350


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_module_of_the_package_is_in_a_layer():
    (layers,) = (c for c in _contracts() if c["type"] == "layers")
    placed = {name.strip() for layer in layers["layers"] for name in re.split(r"[|:]", layer)}
    modules = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if _is_module(p)}
    assert modules - placed == set(), "give these modules a layer in pyproject.toml"
    assert placed - modules == set(), "these layers name no module"


def _is_module(path: Path) -> bool:
    if path.name.startswith("__"):
        return False
    return (path.suffix == ".py") or (path.is_dir() and (path / "__init__.py").exists())


def test_the_kernels_contract_forbids_every_array_library():
    (kernels,) = (c for c in _contracts() if c.get("source_modules") == ["dnorm._kernels"])
    assert {"dnorm.*", "numpy", "torch", "jax", "dask", "cupy", "triton"} <= set(kernels["forbidden_modules"])
    assert {imp.split(" -> ")[0] for imp in kernels["ignore_imports"]} == {"dnorm._kernels._delegation"}


def test_no_module_is_too_long():
    lengths = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
