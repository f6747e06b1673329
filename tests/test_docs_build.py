"""The documentation site builds warning-free, runs its examples and serves MathJax itself (formulas render offline).

The built pages are then read as a browser shows them (what headless Chromium showed at 1280 px when they were
written): every page a click away from the top bar or the sidebar of every other page, no empty navigation, no
LaTeX left raw in the text, every image present, the asv figures on the Performance page, whole signatures in the
API summaries, spec identifiers in docstrings linked to their theorems, and code blocks and tables that wrap.
"""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# the extensions and theme docs/conf.py loads: the `docs` extra
NEEDS = ("sphinx", "myst_parser", "numpydoc", "pydata_sphinx_theme", "matplotlib", "sphinx-mathjax-offline")
PAGES = ("getting_started.html", "spec/schemes.html")  # both carry math: inline in the first, $$ blocks in the spec


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


# -- the pages as a browser shows them ---------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HIDDEN = {"script", "style", "pre", "code", "head"}  # text a reader does not see as prose
NAVIGATION = ("bd-header", "bd-sidebar-primary")  # the top bar and the left sidebar
RAW_LATEX = re.compile(r"\$[^$\s][^$]*\$|\\(?:frac|sum|ge|le|alpha|operatorname|mathrm|bar|max|log|cdot)\b")


class _Page(HTMLParser):
    """One built page: its navigation links, images, visible prose and stylesheets."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, set[str]]] = []
        self.navigation: list[str] = []
        self.images: list[str] = []
        self.styles: list[str] = []
        self.prose: list[str] = []
        self.sidebar_titles: list[str] = []

    def _inside(self, *classes: str) -> bool:
        return any(c in names for _, names in self.stack for c in classes)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href") and self._inside(*NAVIGATION):
            self.navigation.append(found["href"] or "")
        if tag == "img":
            self.images.append(found.get("src") or "")
        if tag == "link" and found.get("rel") == "stylesheet":
            self.styles.append(found.get("href") or "")
        if tag not in VOID:
            self.stack.append((tag, set((found.get("class") or "").split()) | {f"<{tag}>"}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        if self._inside("bd-links__title"):
            self.sidebar_titles.append(data.strip())
        if not self._inside("math", *(f"<{t}>" for t in HIDDEN)):
            self.prose.append(data)


@cache
def _read(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _pages(site: Path) -> list[Path]:
    """The site's pages: what the toctree holds (not the search page, the index of terms or the sources)."""
    skip = {"search.html", "genindex.html", "py-modindex.html"}
    return sorted(p for p in site.rglob("*.html") if p.name not in skip and p.relative_to(site).parts[0][0] != "_")


def _target(page: Path, href: str) -> Path | None:
    url = urldefrag(href).url
    if not url or url.startswith(("http://", "https://", "//", "mailto:")):
        return page if not url else None
    return (page.parent / url).resolve()


def test_every_page_is_a_click_away_from_every_page(site: Path) -> None:
    pages = _pages(site)
    assert len(pages) > 30, [p.name for p in pages]  # the guide's pages, the spec's and one per API entry
    for page in pages:
        reached = {_target(page, href) for href in _read(page).navigation}
        missing = [str(p.relative_to(site)) for p in pages if p.resolve() not in reached and p != page]
        assert not missing, f"{page.relative_to(site)}: no link in the top bar or the sidebar to {missing}"


def test_no_navigation_is_empty(site: Path) -> None:
    for page in _pages(site):
        titles = _read(page).sidebar_titles
        assert "Section Navigation" not in titles, page.relative_to(site)
        assert "All pages" in titles, page.relative_to(site)


def test_no_latex_is_left_raw(site: Path) -> None:
    for page in _pages(site):
        prose = " ".join(_read(page).prose)
        raw = RAW_LATEX.findall(prose)
        assert not raw, f"{page.relative_to(site)} shows raw LaTeX: {raw[:5]}"


def test_every_image_is_there(site: Path) -> None:
    shown = 0
    for page in _pages(site):
        for src in _read(page).images:
            target = _target(page, src)
            assert target is not None, f"{page.relative_to(site)} loads {src} from the network"
            assert target.is_file(), f"{page.relative_to(site)} shows {src}, absent from the site"
            shown += 1
    assert shown >= 5  # the plots of the examples page at least


def test_code_blocks_and_tables_wrap(site: Path) -> None:
    """wrap.css is on every page and lets code blocks and table cells wrap (Chromium at 1280 px cut them off)."""
    css = (site / "_static" / "wrap.css").read_text()
    assert "white-space: pre-wrap" in css
    assert "table-layout: fixed" in css
    assert "overflow-wrap: anywhere" in css  # long inline code in a cell
    for page in _pages(site):
        assert any("wrap.css" in href for href in _read(page).styles), page.relative_to(site)


def test_the_performance_page_shows_the_asv_figures_and_their_commands(site: Path) -> None:
    page = (site / "performance.html").read_text(encoding="utf-8")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())
    asv = (ROOT / "asv_benchmarks" / "README.md").read_text()
    headers = re.findall(r"^\| ([^|]*?) \|.*\n\|[ -]*---", asv, flags=re.MULTILINE)  # every table's first cell
    assert len(headers) >= 5
    assert page.count("<table") > len(headers)  # the README's training step too
    for header in headers:
        assert header.replace("`", "") in text, header
    for command in ("asv run --python=same", "python scripts/readme_figures.py", "python scripts/sharded_bench.py"):
        assert command in text, command


def test_api_summaries_show_whole_signatures(site: Path) -> None:
    text = (site / "api.html").read_text(encoding="utf-8").replace("\u00a0", " ")
    row = text[text.index("dnorm.scaled_dot_product_attention.html#") :]  # the table's row, not the sidebar's
    row = re.sub(r"<[^>]+>", "", row[: row.index("</tr>")])
    for parameter in ("attn_mask=None", "is_causal=False", "enable_gqa=False", "scheme='doubly'", "kernel='auto'"):
        assert parameter in row, parameter


def test_spec_identifiers_in_docstrings_link_to_them(site: Path) -> None:
    page = site / "api" / "generated" / "dnorm.attention.html"
    targets = {urldefrag(href) for href in re.findall(r'href="([^"]+)"', page.read_text(encoding="utf-8"))}
    for where, anchor in [("theorems.html", "thm-mass-lower-bound"), ("schemes.html", "def-dnas")]:
        assert (f"../../spec/{where}", anchor) in targets, anchor
