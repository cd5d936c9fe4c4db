"""Run the notebook collection with papermill: ``make demo`` (defaults, in place) and the tests
(tiny parameters, into a temporary folder).

Outputs are kept in the committed notebooks (people read them on the web), with the noisy
metadata papermill adds (timestamps, durations, kernel versions) stripped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .notebook import atomic_write_text, repo_root

__all__ = ["notebook_dir", "list_notebooks", "run_notebook", "strip_noisy_metadata", "run_all"]


def notebook_dir() -> Path:
    return repo_root() / "notebooks"


def list_notebooks(only=None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order; ``only``: prefixes or names."""
    paths = sorted(p for p in notebook_dir().glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = [str(o) for o in only]
        paths = [p for p in paths if any(p.stem == w or p.stem.startswith(w) for w in wanted)]
        if not paths:
            known = ", ".join(p.stem for p in list_notebooks())
            raise ValueError(f"no notebook matches {only}; notebooks: {known}")
    return paths


def strip_noisy_metadata(path: Path) -> None:
    """Drop papermill / execution timing metadata so that reruns give small diffs."""
    nb = json.loads(Path(path).read_text())
    nb.get("metadata", {}).pop("papermill", None)
    lang = nb.get("metadata", {}).get("language_info", {})
    lang.pop("version", None)
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        meta.pop("papermill", None)
        meta.pop("execution", None)
        tags = meta.get("tags")
        if tags is not None and not tags:
            meta.pop("tags")
    atomic_write_text(Path(path), json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run_notebook(path: Path, output_path: Path | None = None, parameters: dict | None = None,
                 kernel_name: str = "python3", env: dict | None = None,
                 progress: bool = False) -> float:
    """Execute one notebook with papermill; returns the wall time in seconds.

    ``output_path=None`` executes in place (through a temporary file, replaced atomically).
    """
    import papermill as pm

    path = Path(path)
    final = Path(output_path) if output_path is not None else path
    tmp = final.with_name(f".{final.stem}.running.ipynb")
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(path), str(tmp), parameters=parameters or {},
                            kernel_name=kernel_name, cwd=str(path.parent),
                            progress_bar=progress, request_save_on_cell_execute=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - t0
    os.replace(tmp, final)
    strip_noisy_metadata(final)
    return seconds


def run_all(only=None, parameters_by_name: dict | None = None, output_dir: Path | None = None,
            env: dict | None = None, verbose: bool = True) -> dict[str, float]:
    """Run every notebook (in place, or into ``output_dir``); returns seconds per notebook."""
    timings = {}
    for path in list_notebooks(only):
        params = (parameters_by_name or {}).get(path.stem, {})
        out = None if output_dir is None else Path(output_dir) / path.name
        if verbose:
            print(f"running {path.name} ...", flush=True)
        timings[path.stem] = run_notebook(path, out, params, env=env)
        if verbose:
            print(f"  {path.name}: {timings[path.stem]:.0f} s", flush=True)
    return timings
