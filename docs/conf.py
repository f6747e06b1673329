"""Sphinx configuration of the dnorm documentation site (built offline)."""

import importlib.util
import re
import runpy
import sys
from pathlib import Path

from sphinx.util import logging

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
