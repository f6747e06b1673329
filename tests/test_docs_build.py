"""The documentation site builds warning-free, runs its examples and serves MathJax itself (formulas render offline)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# the extensions and theme docs/conf.py loads: the `docs` extra
NEEDS = ("sphinx", "myst_parser", "numpydoc", "pydata_sphinx_theme", "matplotlib", "sphinx-mathjax-offline")
PAGES = ("index.html", "spec/schemes.html")  # both carry math: $1/K$ on the front page, $$ blocks in the spec


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        src = dict(attrs).get("src")
        if tag == "script" and src:
            self.srcs.append(src)


def _mathjax_scripts(page: Path) -> list[str]:
    parser = _Scripts()
    parser.feed(page.read_text(encoding="utf-8"))
    return [src for src in parser.srcs if "mathjax" in src.lower()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in NEEDS:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"building the docs needs {module}: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs") / "html"
    # a subprocess: Sphinx and its extensions' own Python warnings stay out of pytest's filterwarnings=error,
    # while -W makes every Sphinx warning fail the build, as in CI
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"docs build failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.mark.parametrize("name", PAGES)
def test_mathjax_is_served_locally(site: Path, name: str) -> None:
    page = site / name
    srcs = _mathjax_scripts(page)
    assert srcs, f"{name} loads no MathJax script"
    for src in srcs:
        assert not src.startswith(("http://", "https://", "//")), f"{name} loads MathJax from the network: {src}"
        path = src.split("?", 1)[0].split("#", 1)[0]
        target = (page.parent / path).resolve()
        assert target.is_file(), f"{name} loads {src}, absent from the built site"
        assert target.is_relative_to(site.resolve()), f"{name} loads {src}, outside the built site"


def test_every_example_ran_while_the_site_was_built(site: Path) -> None:
    """docs/conf.py runs every snippet after the build; one that needs a missing library would be left out."""
    snippets = sorted(p.name for p in (DOCS / "snippets").glob("*.py"))
    ran = (site / "snippets-run.txt").read_text().split()
    assert ran == snippets
