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


#: Where a scheme's name may be compared with a string: its home, and argument validation (which maps it there).
NAMING_SCHEMES = {"dnorm/_kernels/schemes.py", "dnorm/_validate/_options.py"}


def scheme_comparisons(source: str, /) -> list[int]:
    """The lines of ``source`` that compare something with a scheme's name (``==``, ``!=``, ``in``, ``not in``)."""
    import ast

    from dnorm._kernels.schemes import NAMES

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            names = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
            if any(isinstance(n, ast.Constant) and n.value in NAMES for n in names):
                found.append(node.lineno)
    return found


def test_scheme_comparisons_are_found():
    assert scheme_comparisons("if scheme == 'hybrid': pass\nx = s in ('doubly', 'x')\ny = s == 'other'") == [1, 2]


def test_no_module_compares_scheme_names_outside_their_home():
    """What a scheme is lives in dnorm/_kernels/schemes.py; every other module asks it (docs: Architecture)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(ROOT).as_posix()
        if name not in NAMING_SCHEMES and (lines := scheme_comparisons(path.read_text())):
            found[name] = lines
    assert found == {}


def test_no_host_function_takes_more_than_twelve_parameters():
    """Wide argument lists travel as records (the public entry points aside: their signatures are the API)."""
    import ast

    public = {"attention", "varlen_attention", "scaled_dot_product_attention", "decode", "__init__"}
    public.add("attention_forward")  # transformers' attention-function contract, and the options register() binds
    wide = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or node.name in public:
                continue
            if any("jit" in ast.unparse(d) or "tunable" in ast.unparse(d) for d in node.decorator_list):
                continue  # a Triton kernel: its parameters are the launch's, passed by name
            a = node.args
            names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]
            if len(names) > 12:
                wide[f"{path.relative_to(ROOT).as_posix()}:{node.name}"] = len(names)
    assert wide == {}
