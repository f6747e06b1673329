"""Sphinx configuration of the dnorm documentation site (built offline)."""

import importlib.util
import re
import runpy
import sys
from inspect import Parameter
from pathlib import Path

import sphinx.ext.autosummary as autosummary
from sphinx.util import logging
from sphinx.util.inspect import signature_from_str

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))  # the plots import examples/train_toy.py

project = "dnorm"
author = "dnorm developers"
copyright = "dnorm developers"

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax 3 from _static/mathjax/ instead of a CDN
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "tables"]  # tables/: generated, included by the pages that show them

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]

autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]

html_theme = "pydata_sphinx_theme"
html_title = "dnorm"
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["wrap.css"]  # code blocks and tables wrap at 1280 px instead of hiding their ends
# Every page a click away: the whole tree in the sidebar of every page (the theme's own sidebar shows only the
# current section's pages, and is empty on a top-level page), the first top-level pages in the top bar too.
html_theme_options = {
    "header_links_before_dropdown": 7,
    "navbar_align": "left",
    "show_prev_next": False,
    "show_toc_level": 2,
}
html_sidebars = {"**": ["sidebar-collapse", "site-nav"]}


# The API summaries show whole signatures: autosummary shortens them to about 40 characters, so that
# scaled_dot_product_attention showed as (query, key, value). Its tables wrap instead (_static/wrap.css).
def _whole_signature(sig: str, max_chars: int = 30) -> str:
    try:
        parsed = signature_from_str(sig.split("\n")[0])
    except (SyntaxError, ValueError):
        return _shortened_signature(sig, max_chars)
    parameters = [p.replace(annotation=Parameter.empty) for p in parsed.parameters.values()]
    return str(parsed.replace(parameters=parameters, return_annotation=Parameter.empty))


_shortened_signature = autosummary.mangle_signature
autosummary.mangle_signature = _whole_signature

# Spec identifiers (THM-..., DEF-...) and spec pages (numerics.md, ...) in docstrings become links to them.
SPEC_ID = re.compile(r"\b((?:THM|DEF)-[A-Z0-9]+(?:-[A-Z0-9]+)*)\b")
SPEC_PAGE = re.compile(
    r"\b(" + "|".join(p.stem for p in (ROOT / "spec").glob("*.md") if p.stem != "index") + r")\.md\b"
)


def _link_spec(app, what, name, obj, options, lines):
    for n, line in enumerate(lines):
        if line.lstrip().startswith(">>>"):
            continue
        parts = line.split("``")  # even parts are outside inline literals
        for i in range(0, len(parts), 2):
            parts[i] = SPEC_ID.sub(lambda m: f":ref:`{m[1]} <{m[1].lower()}>`", parts[i])
            parts[i] = SPEC_PAGE.sub(lambda m: f":doc:`{m[1]}.md </spec/{m[1]}>`", parts[i])
        lines[n] = "``".join(parts)


# Every example a page includes from docs/snippets/ runs while the site builds: an example that fails fails the build.
# One that needs a library this machine lacks is skipped and left out of snippets-run.txt, which the tests check.
SNIPPETS = ROOT / "docs" / "snippets"


def _run_snippets(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    log, ran = logging.getLogger(__name__), []
    for path in sorted(SNIPPETS.glob("*.py")):
        imports = set(re.findall(r"^(?:import|from) (\w+)", path.read_text(), flags=re.MULTILINE))
        missing = sorted(m for m in imports if importlib.util.find_spec(m) is None)
        if missing:
            log.info("snippet %s skipped: needs %s", path.name, ", ".join(missing))
            continue
        runpy.run_path(str(path), run_name="__main__")
        ran.append(path.name)
    (Path(app.outdir) / "snippets-run.txt").write_text("\n".join(ran) + "\n")


def setup(app):
    app.connect("build-finished", _run_snippets)
    app.connect("autodoc-process-docstring", _link_spec, priority=600)  # after numpydoc's rewriting
    # autosummary makes the signatures' spaces non-breaking, which cut them off at 1280 px: keep them breakable
    app.add_node(autosummary.autosummary_table, override=True, html=(autosummary.autosummary_noop,) * 2)
