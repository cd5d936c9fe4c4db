"""The notebooks as students use them: JupyterLab in a real (headless) Chromium.

One JupyterLab server (127.0.0.1, a token, fresh workspace and settings) serves a temporary
folder with notebooks 00 and 03 built from their ``.py`` sources at small parameters; Chromium
opens each, runs all cells from JupyterLab's own command, and the tests check what the page
shows: no error or stderr output, every figure drawn, the weight explorer's widgets rendered
(no "Error displaying widget"), and its plot redrawn when a slider moves. An executed, cleaned
notebook (:func:`dmlkit.nbrun.run_notebook`) must open without being marked modified.

Skipped, with the reason, when Chromium (``/usr/bin/chromium``) or Playwright is missing. A
failing test leaves a screenshot in ``build/ui-screenshots/``. Marked ``slow``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from dmlkit.nbrun import build_notebook, run_notebook, write_notebook

from ui.lab import chromium, jupyterlab, missing

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "ui-screenshots"
#: small parameters (as in tests/test_notebooks_tiny.py): the browser waits for the kernel
PARAMETERS = {
    "00_quickstart": {"NUM_CLASSES": 16, "IMAGES_PER_CLASS": 10, "DIFFICULTY": 0.3, "EPOCHS": 2,
                      "ITERATIONS_PER_EPOCH": 10, "EMBEDDING_DIM": 16},
    "03_unified_weight_view": {"NUM_CLASSES": 20, "NUM_TEST_CLASSES": 10, "IMAGES_PER_CLASS": 8,
                               "STEPS": 20, "SNAPSHOTS": 2, "CURVE_POINTS": 41},
}
#: figures each notebook draws (at least)
FIGURES = {"00_quickstart": 2, "03_unified_weight_view": 3}   # the explorer: a widget
RUN_S = 150          # the longest a notebook may take to run all cells in the browser
SESSION_S = 420      # the server is stopped after this long, whatever happens
TINY = '''# %% tags=["parameters"]
N = 3

# %%
from tqdm.auto import tqdm
total = sum(tqdm(range(N)))
print(total)
'''

_CURRENT = "window.jupyterapp.shell.currentWidget"
_KERNEL_IDLE = f"""(path) => {{
    const w = {_CURRENT};
    if (!w || !w.context || w.context.path !== path) return false;
    const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle';
}}"""
_ALL_RUN = f"""() => {{
    const w = {_CURRENT};
    const k = w.sessionContext.session && w.sessionContext.session.kernel;
    const cells = w.content.widgets.filter(c => c.model.type === 'code');
    return !!k && k.status === 'idle' && cells.every(c => c.model.executionCount !== null)
        && !document.body.innerText.includes('[*]:');
}}"""


def _with_parameters(source: Path, params: dict):
    """The notebook of ``source`` with ``params`` set in its parameters cell."""
    nb = build_notebook(source)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for name, value in params.items():
        hits = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        assert hits, f"{source.stem} has no parameter {name}"
        lines[hits[0]] = f"{name} = {value!r}"
    cell.source = "\n".join(lines)
    return nb


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``(page, base_url, token, folder)``: the server, a page, the notebooks to open."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)   # only this run's failures stay
    tmp = tmp_path_factory.mktemp("ui")
    work = tmp / "notebooks"
    work.mkdir()
    for name, params in PARAMETERS.items():
        write_notebook(_with_parameters(REPO / "notebooks" / f"{name}.py", params),
                       work / f"{name}.ipynb")
    (tmp / "tiny.py").write_text(TINY)
    run_notebook(tmp / "tiny.py", work / "99_executed.ipynb")   # as `make notebooks` does
    env = {"DMLKIT_FIGURES_DIR": str(tmp / "figures"), "DMLKIT_RESULTS_DIR": str(tmp / "results"),
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    # the kernel draws inline (a test run may have set MPLBACKEND=Agg)
    env.update({k: v for k, v in os.environ.items() if k != "MPLBACKEND" and k not in env})
    with jupyterlab(work, tmp, env=env, max_s=SESSION_S) as (base, token), \
            chromium(tmp / "chromium-profile") as page:
        yield page, base, token, work


@contextlib.contextmanager
def _screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        raise


def _open(page, base: str, token: str, name: str) -> None:
    """Open ``name`` alone in a fresh workspace and wait for its kernel."""
    page.goto(f"{base}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function(_KERNEL_IDLE, arg=f"{name}.ipynb", timeout=60_000)


def _run_all(page, base: str, token: str, name: str) -> None:
    _open(page, base, token, name)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(500)
    page.wait_for_function(_ALL_RUN, timeout=RUN_S * 1000, polling=500)


def _check_outputs(page, name: str) -> None:
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [stderr.nth(i).inner_text()[:500] for i in range(stderr.count())]
    assert not texts, f"{name}: error or stderr output in the browser:\n" + "\n---\n".join(texts)
    body = page.locator("body").inner_text()
    assert "Error displaying widget" not in body, f"{name}: a widget failed to render"
    images = page.locator(".jp-RenderedImage img")
    assert images.count() >= FIGURES[name], f"{name}: {images.count()} figures drawn"
    sizes = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 0 for w in sizes), f"{name}: a figure did not load ({sizes})"


def test_quickstart_runs_in_jupyterlab(lab):
    page, base, token, _ = lab
    with _screenshot_on_failure(page, "00_quickstart"):
        _run_all(page, base, token, "00_quickstart")
        _check_outputs(page, "00_quickstart")
        text = page.locator(".jp-Notebook").inner_text()
        assert text.count("CUDA not available") <= 1, "the device message is printed twice"


def test_weight_view_and_explorer_in_jupyterlab(lab):
    page, base, token, _ = lab
    with _screenshot_on_failure(page, "03_unified_weight_view"):
        _run_all(page, base, token, "03_unified_weight_view")
        _check_outputs(page, "03_unified_weight_view")
        explorer = page.locator(".jp-OutputArea-output .widget-vbox").filter(
            has=page.locator(".widget-dropdown")).last
        explorer.wait_for(timeout=30_000)
        sliders = explorer.locator(".widget-slider")
        assert sliders.count() >= 4 + 6, "hyper-parameter and context sliders"
        plot = explorer.locator("img.widget-image")
        plot.wait_for(timeout=30_000)
        before = plot.get_attribute("src")
        beta = explorer.locator(".widget-slider").filter(
            has=page.locator(".widget-label", has_text="beta")).first
        readout = beta.locator(".widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("10")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "([el, old]) => el.getAttribute('src') !== old && el.complete && el.naturalWidth > 0",
            arg=[plot.element_handle(), before], timeout=30_000)
        assert float(readout.inner_text()) == 10.0


def test_an_executed_notebook_opens_unmodified(lab):
    """``clean_notebook`` keeps the kernel's language_info: JupyterLab then has nothing to
    rewrite when the kernel starts, and the notebook is not marked modified on opening."""
    page, base, token, _ = lab
    with _screenshot_on_failure(page, "99_executed"):
        _open(page, base, token, "99_executed")
        page.evaluate(f"async () => {{ await {_CURRENT}.sessionContext.session.kernel.info; }}")
        page.wait_for_timeout(1500)
        assert page.evaluate(f"() => {_CURRENT}.model.dirty") is False
        assert page.locator(".jp-mod-dirty").count() == 0
