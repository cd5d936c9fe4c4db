"""Sphinx configuration of the book (``make docs``; docs/development.md).

The source tree is staged by ``docs/book/build.py`` under ``build/docs/src`` (the README as the
landing page, ``docs/*.md``, the committed notebooks, the figures, the generated API and
exercise-solution pages); this file is read from its tracked place with ``sphinx-build -c``.
Notebooks are rendered from their committed outputs, never executed. MathJax is served from the
book itself (sphinx-mathjax-offline), so that no page needs the network.
"""

from __future__ import annotations

import re

from docutils import nodes

project = "dmlkit"
author = "the dmlkit authors"
copyright = "the dmlkit authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",     # MathJax 3 copied into _static/ (no CDN)
]

root_doc = "index"
smartquotes = False            # 'easy', dmlkit's: quotes as written (students copy them)
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
# a notebook may put an exercise's "###" heading right under its title: a skipped heading level
# is no broken reference, so it does not fail the build (every other warning does)
suppress_warnings = ["myst.header"]

# MyST: $...$ / $$...$$ math as in the notebooks and docs/formulas.md, GitHub-style heading
# anchors (the docs' links point at headings by their slugs), raw <a id> anchors kept
myst_enable_extensions = ["dollarmath", "amsmath", "html_image"]
myst_heading_anchors = 4
myst_dmath_double_inline = True

# notebooks: the committed outputs, as they are
nb_execution_mode = "off"
nb_ipywidgets_js = {}          # no widget manager from a CDN (the outputs hold no widget state)
nb_merge_streams = True

# API reference from the docstrings
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "pydata_sphinx_theme"
html_title = "dmlkit"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}
html_sidebars = {"solutions": []}     # one page: its own table of contents is on the right


# ----------------------------------------------------------------------------- plain bars
# The docstrings are written for help() as much as for the book: |x|, |P_i| or |dL/df| there
# mean an absolute value or a size, never a reStructuredText substitution (dmlkit defines
# none). Escape such bars in prose lines; literal spans, roles, doctest and indented literal or
# directive blocks (math included) are left as they are.
_LITERAL_SPAN = re.compile(r"(``.+?``|:[A-Za-z:]+:`[^`]*`|`[^`]*`_?)")


def _plain_bars(app, what, name, obj, options, lines) -> None:
    block = None            # the indentation of the line that opened a literal / directive block
    doctest = False
    for i, line in enumerate(lines):
        text = line.lstrip()
        indent = len(line) - len(text)
        if not text:
            doctest = False
            continue
        if block is not None:
            if indent > block:
                continue
            block = None
        if doctest or text.startswith(">>>"):
            doctest = True
            continue
        if text.startswith(".. ") or text.endswith("::"):
            block = indent
            if text.startswith(".. "):
                continue
        if "|" in line:
            parts = _LITERAL_SPAN.split(line)
            lines[i] = "".join(part if k % 2 else part.replace("|", r"\|")
                               for k, part in enumerate(parts))


# ----------------------------------------------------------------------------- raw anchors
# docs/references.md marks each entry with <a id="key"></a> (GitHub shows it; the docs link to
# references.md#key). Register those ids as labels of their page so that MyST resolves the
# links to them like links to headings (and a link to a missing key still fails the build).
_ANCHOR = re.compile(r'<a\s+(?:id|name)="([^"]+)"\s*>')


def _register_raw_anchors(app, doctree) -> None:
    std = app.env.domains.standard_domain
    docname = app.env.docname
    for raw in doctree.findall(nodes.raw):
        if "html" not in raw.get("format", "").split():
            continue
        for anchor in _ANCHOR.findall(raw.astext()):
            std.anonlabels.setdefault(anchor, (docname, anchor))


def setup(app):
    app.connect("doctree-read", _register_raw_anchors)
    app.connect("autodoc-process-docstring", _plain_bars)
    return {"parallel_read_safe": True}
