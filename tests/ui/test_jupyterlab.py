"""The notebooks as students use them: JupyterLab in a real (headless) Chromium.

One JupyterLab server (127.0.0.1, a token, fresh workspace and settings; the session fixture
``lab`` of tests/ui/conftest.py, shared with the other browser tests) serves a temporary
folder with notebooks 00 and 03 built from their ``.py`` sources at small parameters; Chromium
opens each, runs all cells from JupyterLab's own command, and the tests check what the page
shows: no error or stderr output, every figure drawn, the weight explorer's widgets rendered
(no "Error displaying widget"), and its plot redrawn when a slider moves. An executed, cleaned
notebook (:func:`dmlkit.nbrun.run_notebook`) must open without being marked modified.

Skipped, with the reason, when Chromium (``/usr/bin/chromium``) or Playwright is missing. A
failing test leaves a screenshot in ``build/ui-screenshots/``. Marked ``slow``.
"""

from __future__ import annotations

import pytest

from dmlkit.explorer import TRACK_PX
from ui.lab import ALL_RUN as _ALL_RUN
from ui.lab import CURRENT as _CURRENT
from ui.lab import open_notebook as _open
from ui.lab import screenshot_on_failure as _screenshot_on_failure

pytestmark = pytest.mark.slow

#: figures each notebook draws (at least)
FIGURES = {"00_quickstart": 2, "03_unified_weight_view": 3}   # the explorer: a widget
RUN_S = 150          # the longest a notebook may take to run all cells in the browser


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
        labels = explorer.locator(".widget-slider .widget-label").all_inner_texts()
        assert labels[:4] == ["α", "β", "λ", "ε"], labels   # the papers' symbols
        tracks = explorer.locator(".widget-slider .slider-container").evaluate_all(
            "els => els.map(e => e.getBoundingClientRect().width)")
        assert min(tracks) >= TRACK_PX, tracks   # >= 1 px per step of every slider
        plot = explorer.locator("img.widget-image")
        plot.wait_for(timeout=30_000)
        size = plot.evaluate("i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect()"
                             ".width, i.getBoundingClientRect().height]")
        assert size[:2] == size[2:], size   # shown at its pixel size
        beta = explorer.locator(".widget-slider").filter(
            has=page.locator(".widget-label", has_text="β")).first
        latencies = [_set_and_wait(page, plot, beta, v) for v in ("10", "20", "30")]
        assert float(beta.locator(".widget-readout").inner_text()) == 30.0
        top = plot.evaluate("i => i.getBoundingClientRect().top")
        before = plot.get_attribute("src")
        explorer.locator(".widget-dropdown select").select_option("proxy_anchor")
        page.wait_for_function(
            "([el, old]) => el.getAttribute('src') !== old && el.complete && el.naturalWidth > 0",
            arg=[plot.element_handle(), before], timeout=60_000)
        after = plot.evaluate("i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect()"
                              ".width, i.getBoundingClientRect().height, "
                              "i.getBoundingClientRect().top]")
        assert after == [*size, top], (size, top, after)   # nothing on the page moves
        labels = explorer.locator(".widget-slider .widget-label").all_inner_texts()
        assert labels[:2] == ["α", "δ"], labels
        # a measurement, not a test (benchmarks/explorer_latency.py measures it per loss)
        print(f"\nexplorer update latency in Chromium (ms): {latencies}")


def _set_and_wait(page, plot, slider, value: str) -> float:
    """Type ``value`` into ``slider``'s readout; the ms from Enter to the new image loaded."""
    before = plot.get_attribute("src")
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    t0 = page.evaluate("() => performance.now()")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "([el, old]) => el.getAttribute('src') !== old && el.complete && el.naturalWidth > 0",
        arg=[plot.element_handle(), before], timeout=30_000, polling=20)
    return round(page.evaluate("() => performance.now()") - t0)


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
