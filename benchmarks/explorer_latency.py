"""The weight explorer's update latency in a browser: a slider change to the redrawn figure.

    python benchmarks/explorer_latency.py                    # notebook 03's losses, 7 updates each
    python benchmarks/explorer_latency.py --loss multi_similarity proxy_anchor --updates 15

Runs JupyterLab and a headless Chromium (the helpers of ``tests/ui/lab.py``: Debian's
``/usr/bin/chromium`` and Playwright), opens a notebook that displays
``weight_explorer("multi_similarity", points=101, batches=...)`` with two probe batches of
32 samples (8 classes x 4, D = 64; "untrained": every embedding near one direction, as an
untrained network's; "trained": the classes clustered), as notebook 03 does with its own. For
each loss it selects the loss in the dropdown, then types alternately two values into the
readout of a slider (the first hyper-parameter, then the last context slider) and measures, in
the page, the time from the Enter key to the ``load`` event of the new plot image: kernel
compute and drawing, the widget message both ways and the browser's decoding. Updates run one
after another (each waits for the previous image). Prints median and p90 per loss, and the
same state's kernel-side time measured in this process (``curves`` = the weight curves,
``batches`` = the batch panel's pair weights, ``render`` = the figure and its PNG), so that
browser minus kernel is the transport and the page. No assertion: a measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

DEFAULT_LOSSES = ["multi_similarity", "binomial", "vthm", "contrastive", "triplet",
                  "generalized_lifted_structure", "lifted_structure", "proxy_anchor", "proxy_nca"]

SETUP = '''import torch
from dmlkit import plotting
from dmlkit.explorer import weight_explorer

plotting.set_style()   # as notebook 03 (notebook.setup)

g = torch.Generator().manual_seed(0)
labels = torch.arange(32) // 4
centres = torch.randn(8, 64, generator=g, dtype=torch.float64)
untrained = torch.randn(64, dtype=torch.float64) + 0.05 * torch.randn(32, 64, generator=g,
                                                                      dtype=torch.float64)
trained = centres[labels] + 0.6 * torch.randn(32, 64, generator=g, dtype=torch.float64)
batches = {"untrained": (untrained, labels), "trained": (trained, labels)}
'''
SHOW = '''explorer = weight_explorer("multi_similarity", points=101, batches=batches)
explorer
'''

#: JS: the time from the next Enter key to the load of a new plot image, in ms
_ARM = """(img) => {
    window.__lat = null;
    const old = img.getAttribute('src');
    let t0 = null;
    const key = (e) => { if (e.key === 'Enter' && t0 === null) t0 = performance.now(); };
    document.addEventListener('keydown', key, {capture: true});
    const done = () => {
        if (t0 !== null && img.getAttribute('src') !== old && img.complete
                && img.naturalWidth > 0) {
            window.__lat = performance.now() - t0;
            img.removeEventListener('load', done);
            document.removeEventListener('keydown', key, {capture: true});
        }
    };
    img.addEventListener('load', done);
}"""


def _notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(SHOW)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def _set(page, slider, value: str) -> None:
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def _quantiles(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]


def browser_latency(names, updates: int, screenshots: Path | None = None) -> dict:
    """loss -> list of latencies (ms), slider change to the loaded new image, in Chromium."""
    from ui.lab import ALL_RUN, chromium, jupyterlab, missing, open_notebook

    reason = missing()
    if reason:
        raise SystemExit(reason)
    out = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        work = tmp / "nb"
        work.mkdir()
        _notebook(work / "explorer.ipynb")
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        with jupyterlab(work, tmp, env=env, max_s=1800) as (base, token), \
                chromium(tmp / "profile", timeout_ms=60_000) as page:
            open_notebook(page, base, token, "explorer")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_timeout(500)
            page.wait_for_function(ALL_RUN, timeout=180_000, polling=500)
            app = page.locator(".jp-OutputArea-output .widget-vbox").filter(
                has=page.locator(".widget-dropdown")).last
            img = app.locator("img.widget-image")
            img.wait_for()
            for name in names:
                app.locator(".widget-dropdown select").select_option(name)
                page.wait_for_timeout(300)
                page.wait_for_function(ALL_RUN, timeout=60_000, polling=200)
                page.wait_for_timeout(1500)   # the selection's own redraw
                sliders = app.locator(".widget-slider")
                first, last = sliders.first, sliders.last
                times = []
                for i in range(updates):
                    slider = first if i % 2 == 0 else last
                    value = slider.locator(".widget-readout").inner_text().strip()
                    lo, hi = _endpoints(slider)
                    new = _other(value, lo, hi, i)
                    if not i:
                        print("   ", name, slider.locator(".widget-label").inner_text(), value,
                              lo, hi, new, flush=True)
                    page.evaluate(_ARM, img.element_handle())
                    _set(page, slider, new)
                    page.wait_for_function("() => window.__lat !== null", timeout=60_000,
                                           polling=20)
                    times.append(page.evaluate("() => window.__lat"))
                out[name] = times
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    app.screenshot(path=str(screenshots / f"explorer_{name}.png"))
                print(f"  {name}: " + ", ".join(f"{t:.0f}" for t in times) + " ms", flush=True)
    return out


def _endpoints(slider):
    """(min, max) of a slider from its ARIA attributes (noUiSlider's handle)."""
    handle = slider.locator("[aria-valuemin]").first
    return float(handle.get_attribute("aria-valuemin")), float(handle.get_attribute(
        "aria-valuemax"))


def _other(value: str, lo: float, hi: float, i: int) -> str:
    """The ``i``-th of a sequence of values in [lo, hi], each new to the slider (a value
    seen before would be drawn from the explorer's cache), other than ``value``."""
    v = float(value.replace("\u2212", "-"))
    x = lo + (0.12 + 0.07 * (i // 2)) * (hi - lo)
    return f"{x if abs(x - v) > 1e-9 else x + 0.03 * (hi - lo):.2f}"


def kernel_time(names, repeats: int = 5) -> dict:
    """loss -> medians (ms) of the kernel-side parts of one update, in this process."""
    import matplotlib

    matplotlib.use("Agg")
    from dmlkit import explorer as E

    scope: dict = {}
    exec(SETUP, scope)
    out = {}
    for name in names:
        ex = E.weight_explorer(name, points=101, batches=scope["batches"], draw=False)
        parts = {"curves": [], "batches": [], "render": []}
        slider = next(iter(ex.sliders.values()))
        for i in range(repeats):
            slider.value = slider.min + (0.12 + 0.07 * i) * (slider.max - slider.min)
            for cache in ("_curve_cache", "_batch_cache"):   # a new state: nothing cached
                getattr(ex, cache, {}).clear()
            ex._cached = None
            t0 = time.perf_counter()
            ex.curves()
            t1 = time.perf_counter()
            ex.batch_weights()
            t2 = time.perf_counter()
            ex.png()
            t3 = time.perf_counter()
            parts["curves"].append(t1 - t0)
            parts["batches"].append(t2 - t1)
            parts["render"].append(t3 - t2)   # png() reads the cached curves (and batches)
        out[name] = {k: 1e3 * statistics.median(v) for k, v in parts.items()}
        if not hasattr(ex, "_batch_cache"):   # an explorer that recomputes them in png()
            out[name]["render"] -= out[name]["batches"]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", nargs="+", default=DEFAULT_LOSSES)
    parser.add_argument("--updates", type=int, default=7)
    parser.add_argument("--no-kernel", action="store_true", help="browser latency only")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="a folder for a screenshot of the explorer per loss")
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    browser = browser_latency(args.loss, args.updates, args.screenshots)
    kernel = {} if args.no_kernel else kernel_time(args.loss)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'loss':30s} {'median':>7s} {'p90':>7s}   kernel: curves batches render (ms)")
    for name, times in browser.items():
        med, p90 = _quantiles(times)
        k = kernel.get(name)
        extra = "" if k is None else (f"   {k['curves']:6.0f} {k['batches']:7.0f} "
                                      f"{k['render']:6.0f}")
        print(f"{name:30s} {med:7.0f} {p90:7.0f}{extra}")


if __name__ == "__main__":
    main()
