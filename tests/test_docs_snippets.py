"""The examples of the documentation (docs/snippets/*.py) are on its pages.

They run while the site builds (docs/conf.py), which tests/test_docs_build.py
checks: every snippet ran, and one that fails fails the build.
"""

from __future__ import annotations

from pathlib import Path

SNIPPETS = sorted((Path(__file__).resolve().parent.parent / "docs" / "snippets").glob("*.py"))


def test_every_snippet_is_on_a_docs_page() -> None:
    pages = "".join(p.read_text() for p in (SNIPPETS[0].parent.parent).glob("*.md"))
    assert SNIPPETS
    for path in SNIPPETS:
        assert f"snippets/{path.name}" in pages, path.name
