"""The examples of the documentation (docs/snippets/*.py) run and check what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SNIPPETS = sorted((Path(__file__).resolve().parent.parent / "docs" / "snippets").glob("*.py"))
NEEDS = {"torch": "torch", "jax": "jax", "transformers": "transformers"}


@pytest.mark.parametrize("path", SNIPPETS, ids=lambda p: p.stem)
def test_snippet_runs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for word, module in NEEDS.items():
        if word in path.stem:
            pytest.importorskip(module, reason=f"{path.name} needs {module}")
    if "jax" not in path.stem:
        runpy.run_path(str(path), run_name="__main__")
        return
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)  # the snippets run in JAX's default float32, as users would
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        jax.config.update("jax_enable_x64", before)


def test_every_snippet_is_on_a_docs_page() -> None:
    pages = "".join(p.read_text() for p in (SNIPPETS[0].parent.parent).glob("*.md"))
    assert SNIPPETS
    for path in SNIPPETS:
        assert f"snippets/{path.name}" in pages, path.name
