"""A JupyterLab server and a headless Chromium for the browser tests, both bounded in time.

:func:`jupyterlab` starts ``jupyter lab`` on 127.0.0.1 (a free port, a random token, fresh
config / runtime / workspace / settings folders under a temporary folder, the app exposed as
``window.jupyterapp``) and stops it, its kernels included, when the ``with`` block ends.
:func:`chromium` drives Debian's ``/usr/bin/chromium`` with Playwright (never ``playwright
install``) in a new user-data-dir. :func:`missing` says why the tests cannot run, or None.
:func:`open_notebook` opens a notebook alone and waits for its kernel;
:func:`screenshot_on_failure` leaves a screenshot of a failing test in ``build/ui-screenshots/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CHROMIUM = Path(os.environ.get("DMLKIT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"
#: the flags of issue 14: headless, no sandbox (root in CI), nothing that reaches the network
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
SERVER_START_S = 90
STOP_S = 10


def missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not CHROMIUM.exists():
        return (f"Chromium not found at {CHROMIUM}: install it with `apt-get update && "
                "apt-get install -y chromium` (Debian / Ubuntu; .ci/run does) or set "
                "DMLKIT_CHROMIUM to a Chromium binary")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server and its kernels), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_S)


@contextlib.contextmanager
def jupyterlab(root: Path, tmp: Path, env: dict | None = None, max_s: float = 600):
    """Run JupyterLab serving ``root`` in environment ``env`` (default: this process's);
    yields ``(base_url, token)``. The server and its kernels are stopped when the block ends,
    or after ``max_s`` seconds, whichever comes first."""
    port, token = _free_port(), secrets.token_hex(16)
    dirs = {name: tmp / name for name in ("config", "runtime", "workspaces", "settings")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    # no news / update toasts over the notebook
    notify = dirs["settings"] / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True, exist_ok=True)
    (notify / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # every cell in the page (no windowing), so that the tests see every output
    tracker = dirs["settings"] / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--LabApp.workspaces_dir={dirs['workspaces']}",
           f"--LabApp.user_settings_dir={dirs['settings']}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False",
           "--ServerApp.allow_root=True"]
    full_env = {**(os.environ if env is None else env), "JUPYTER_CONFIG_DIR": str(dirs["config"]),
                "JUPYTER_RUNTIME_DIR": str(dirs["runtime"])}
    log = open(tmp / "jupyterlab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    watchdog = threading.Timer(max_s, _stop, [proc])
    watchdog.daemon = True
    watchdog.start()
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n"
                                   + (tmp / "jupyterlab.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer in {SERVER_START_S} s:\n"
                                       + (tmp / "jupyterlab.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        yield base, token
    finally:
        watchdog.cancel()
        _stop(proc)
        log.close()


@contextlib.contextmanager
def chromium(profile: Path, timeout_ms: int = 30_000):
    """A headless Chromium page (Playwright) in a new user-data-dir ``profile``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000}, timeout=timeout_ms)
        try:
            context.set_default_timeout(timeout_ms)
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()


CURRENT = "window.jupyterapp.shell.currentWidget"
_KERNEL_IDLE = f"""(path) => {{
    const w = {CURRENT};
    if (!w || !w.context || w.context.path !== path) return false;
    const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle';
}}"""

#: JS: every code cell of the current notebook has run and its kernel is idle
ALL_RUN = f"""() => {{
    const w = {CURRENT};
    const k = w.sessionContext.session && w.sessionContext.session.kernel;
    const cells = w.content.widgets.filter(c => c.model.type === 'code');
    return !!k && k.status === 'idle' && cells.every(c => c.model.executionCount !== null)
        && !document.body.innerText.includes('[*]:');
}}"""


def open_notebook(page, base: str, token: str, name: str) -> None:
    """Open ``name`` alone in a fresh workspace and wait for its kernel."""
    page.goto(f"{base}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function(_KERNEL_IDLE, arg=f"{name}.ipynb", timeout=60_000)


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    """Leave ``build/ui-screenshots/<name>.png`` when the block fails."""
    try:
        yield
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        raise
