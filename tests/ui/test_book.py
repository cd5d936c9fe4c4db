"""The book (``make docs``: docs/book/build.py, docs/development.md), built once for these tests.

Without a browser, over every HTML page: every internal link, anchor, image, script and style
sheet resolves inside the book, nothing is loaded from elsewhere (MathJax included), every
chapter, notebook and public module has its page, each notebook page shows as many figures
as the committed notebook holds, and the exercise solutions are all there, each folded in its
own ``<details>``. In Chromium (tests/ui/lab.py; skipped, with the reason, without it or
Playwright), from ``file://`` and with no request leaving the book: the index, a notebook page
and an API page draw every image and typeset every formula, and the search page finds
``multi_similarity``.

In tests/ui/ so that the one build serves both kinds of test (tests/conftest.py: the browser
tests are one unit of work). Skipped, with the reason, when the ``docs`` extra is missing.
Marked ``slow``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ui.lab import chromium, missing

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUILD_S = 900          # a generous bound on the build on a loaded machine (measured: ~45 s idle)
DOCS_EXTRA = ("sphinx", "myst_nb", "pydata_sphinx_theme")


class _Page(HTMLParser):
    """The ids of an HTML page and the URLs it points at: ``(tag, attribute, url, details)``
    where ``details`` is the number of ``<details>`` elements open around it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []
        self.details: list[dict] = []      # each <details>: its attributes and its text
        self._open: list[dict] = []
        self.text: list[str] = []           # text outside any <details>

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key) and (key == "id" or tag == "a"):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) is not None:
                self.urls.append((tag, key, attrs[key]))
        if tag == "details":
            self._open.append({"attrs": attrs, "text": []})

    def handle_endtag(self, tag):
        if tag == "details" and self._open:
            self.details.append(self._open.pop())

    def handle_data(self, data):
        (self._open[-1]["text"] if self._open else self.text).append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


@pytest.fixture(scope="session")
def book(tmp_path_factory) -> Path:
    """The book's html/ folder, built once with the same script as ``make docs`` (or the one
    named by ``DMLKIT_BOOK``, e.g. ``build/docs/html`` after ``make docs``)."""
    absent = [name for name in DOCS_EXTRA if importlib.util.find_spec(name) is None]
    if absent:
        pytest.skip(f"{', '.join(absent)} missing: pip install -e '.[docs]' (make install does)")
    if os.environ.get("DMLKIT_BOOK"):        # an html/ folder built already (make docs)
        return Path(os.environ["DMLKIT_BOOK"]).resolve()
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "book" / "build.py"), "--out",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=BUILD_S)
    assert proc.returncode == 0, f"the book does not build:\n{proc.stdout[-6000:]}\n" \
                                 f"{proc.stderr[-6000:]}"
    return out / "html"


@pytest.fixture(scope="session")
def pages(book) -> dict[Path, _Page]:
    """Every HTML page of the book (not the theme's templates copied into _static/)."""
    return {path: _parse(path) for path in sorted(book.rglob("*.html"))
            if path.relative_to(book).parts[0] != "_static"}


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc


def test_every_link_anchor_and_image_resolves_inside_the_book(book, pages):
    root = book.resolve()
    ids = {path.resolve(): page.ids for path, page in pages.items()}
    broken = []
    for path, page in pages.items():
        for tag, key, url in page.urls:
            if not _local(url) or url in ("", "#"):
                continue
            parts = urlsplit(url)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path \
                else path.resolve()
            where = f"{path.relative_to(book)}: <{tag} {key}={url!r}>"
            if root not in target.parents:
                broken.append(f"{where} leaves the book")
            elif not target.is_file():
                broken.append(f"{where}: no such file")
            elif parts.fragment and target.suffix == ".html" \
                    and unquote(parts.fragment) not in ids[target]:
                broken.append(f"{where}: no such anchor")
    assert not broken, f"{len(broken)} broken:\n" + "\n".join(broken[:40])


def test_nothing_is_loaded_from_elsewhere(book, pages):
    """Scripts, style sheets and images come from the book: it is read offline. Every page
    that holds math loads the MathJax copied into the book."""
    remote = [f"{path.relative_to(book)}: <{tag} {key}={url!r}>"
              for path, page in pages.items() for tag, key, url in page.urls
              if tag != "a" and not _local(url) and not url.startswith("data:")]
    assert not remote, "\n".join(remote[:20])
    with_math = [path for path in pages if 'class="math' in path.read_text(encoding="utf-8")]
    assert book / "docs" / "formulas.html" in with_math
    for path in with_math:
        scripts = [url for tag, _, url in pages[path].urls if tag == "script"]
        mathjax = [url for url in scripts if url.endswith("mathjax/tex-chtml.js")]
        assert mathjax, f"{path.relative_to(book)} has math but no local MathJax"
        assert (path.parent / mathjax[0]).resolve().is_file()


def test_every_chapter_notebook_and_module_has_its_page(book, pages):
    for page in sorted((REPO / "docs").glob("*.md")):
        assert (book / "docs" / f"{page.stem}.html").is_file(), page.name
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 14
    for nb in notebooks:
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        figures = sum("image/png" in out.get("data", {}) for cell in cells
                      for out in cell.get("outputs", []))
        figures += sum(len(re.findall(r"!\[[^\]]*\]\(", "".join(cell["source"])))
                       for cell in cells if cell["cell_type"] == "markdown")
        page = book / "notebooks" / f"{nb.stem}.html"
        shown = [url for tag, _, url in pages[page].urls if tag == "img"
                 and url.startswith("../_images/")]
        assert len(shown) == figures, (nb.name, len(shown), figures)
    import dmlkit

    for info in pkgutil.walk_packages(dmlkit.__path__, "dmlkit."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        top = info.name.split(".")[1]
        page = pages.get(book / "api" / f"{top}.html")
        assert page is not None and f"module-{info.name}" in page.ids, info.name
    # the objects' own anchors, as cross-references use them
    assert "dmlkit.losses.multi_similarity.MultiSimilarityLoss" in \
        pages[book / "api" / "losses.html"].ids


def _words(text: str) -> str:
    return " ".join(text.split())


def test_exercise_solutions_are_all_there_and_folded(book):
    from dmlkit import exercises
    from dmlkit.exercises import solutions

    page = _parse(book / "solutions.html")
    folded = [d for d in page.details if "solution" in d["attrs"].get("class", "").split()]
    names = exercises.available()
    assert len(folded) == len(names) == len(page.details)
    assert not [d for d in folded if "open" in d["attrs"]], "a solution is unfolded"
    outside = _words("".join(page.text))
    for name, details in zip(names, folded):
        text = _words("".join(details["text"]))
        assert text.startswith(f"Solution: {name} "), (name, text[:80])
        answer = solutions.ANSWERS[name]
        code = _words(inspect.getsource(answer)) if callable(answer) else f"{name} ="
        assert code in text, name
        assert code not in outside, f"the solution of {name} shows outside its fold"
        assert _words(exercises.get(name).statement) in outside, name
    linked = {url.split("/")[-1][:2] for tag, _, url in page.urls
              if tag == "a" and url.startswith("notebooks/")}
    assert {exercises.get(name).notebook for name in names} <= linked


# ----------------------------------------------------------------------------- in Chromium
_TYPESET = """async () => {
    if (!window.MathJax || !MathJax.startup) return 'no MathJax';
    await MathJax.startup.promise;
    const math = [...document.querySelectorAll('.math')];
    const raw = math.filter(e => !e.querySelector('mjx-container'));
    return {math: math.length, rendered: document.querySelectorAll('mjx-container').length,
            raw: raw.length, errors: document.querySelectorAll('mjx-merror').length};
}"""
_IMAGES = """() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
    .map(i => i.getAttribute('src'))"""


@pytest.fixture(scope="module")
def browser(book, tmp_path_factory):
    reason = missing()
    if reason:
        pytest.skip(reason)
    with chromium(tmp_path_factory.mktemp("book-chromium")) as page:
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        yield page, requests


@pytest.mark.parametrize("rel, images, math", [
    ("index.html", True, False),
    ("notebooks/03_unified_weight_view.html", True, True),
    ("api/losses.html", False, True)])
def test_page_draws_its_images_and_formulas_offline(book, browser, rel, images, math):
    page, requests = browser
    requests.clear()
    page.goto((book / rel).as_uri(), wait_until="load")
    broken = page.evaluate(_IMAGES)
    assert not broken, f"{rel}: images not drawn: {broken}"
    assert (page.evaluate("document.images.length") > 0) == images, rel
    body = page.evaluate("document.body.innerText")
    assert "$$" not in body, f"{rel}: raw $$ shown"
    if math:
        typeset = page.evaluate(_TYPESET)
        assert isinstance(typeset, dict), f"{rel}: {typeset}"
        assert typeset["math"] > 0 and typeset["rendered"] >= typeset["math"], (rel, typeset)
        assert typeset["raw"] == 0 and typeset["errors"] == 0, (rel, typeset)
    elsewhere = [url for url in requests if not url.startswith(("file:", "data:"))]
    assert not elsewhere, f"{rel} asked the network for {elsewhere[:5]}"


def test_search_finds_multi_similarity(book, browser):
    page, requests = browser
    page.goto((book / "search.html").as_uri() + "?q=multi_similarity", wait_until="load")
    page.wait_for_selector("#search-results .search-summary", timeout=60_000)
    links = page.evaluate("[...document.querySelectorAll('#search-results li a')]"
                          ".map(a => a.getAttribute('href'))")
    assert "api/losses.html#module-dmlkit.losses.multi_similarity" in links, links[:10]
    assert any(link.startswith("notebooks/04_multi_similarity_ablation.html") for link in links)
