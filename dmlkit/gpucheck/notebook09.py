"""Notebook 09 (training full models) executed on CUDA at a short setting, through
:func:`dmlkit.nbrun.run_notebook` (papermill): its untrained and trained test metrics.

Everything it writes (the executed notebook, its figures, results and runs CSV) goes under
``<out>/notebook/``; the checkout is not touched. Without umap-learn (an offline machine:
llvmlite alone is about 60 MB) the notebook's UMAP becomes a PCA (``DMLKIT_PROJECTION=pca``),
and the report says so. Without CUDA only the parameters are checked against the notebook's
parameters cell (the CPU run is tests/test_notebooks_tiny.py's).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

__all__ = ["NAME", "declared_parameters", "parameters", "run"]

NAME = "09_train_full_models"
#: what executing a notebook needs beyond dmlkit
NEEDS = ("papermill", "jupytext", "nbformat", "ipykernel")


def declared_parameters(source: str | Path) -> set[str]:
    """The names assigned in the ``parameters`` cell of a jupytext percent source."""
    text = Path(source).read_text(encoding="utf-8")
    m = re.search(r'^# %% tags=\["parameters"\]\n(.*?)(?=^# %%)', text, re.M | re.S)
    if m is None:
        raise ValueError(f"{source} has no parameters cell")
    return set(re.findall(r"^([A-Za-z_]\w*)\s*=", m.group(1), re.M))


def parameters(device: str, out: Path, tiny: bool) -> dict:
    """The short setting: the small CNN on 30 glyph classes, 2 epochs of 25 steps (tiny: 2)."""
    return {"DEVICE": device, "DATASET": "glyphs",
            "DATASET_KWARGS": {"num_classes": 30, "images_per_class": 20}, "BACKBONE":
            "small_cnn", "EMBEDDING_DIM": 64, "EPOCHS": 2, "ITERATIONS_PER_EPOCH":
            2 if tiny else 25, "P": 8, "K": 4, "AMP": "auto", "UMAP_POINTS": 300,
            "SAVE_CHECKPOINTS": False, "RESULTS_CSV": str(out / "results" / "runs.csv")}


def run(ctx, sec) -> None:
    from .report import Skip

    source = ctx.repo / "notebooks" / f"{NAME}.py"
    if not source.is_file():
        raise Skip(f"{source} not found (run from a checkout of the repository)")
    out = ctx.out / "notebook"
    params = parameters(ctx.device.type, out, ctx.tiny)
    unknown = sorted(set(params) - declared_parameters(source))
    sec.check("the notebook declares every parameter the check sets", not unknown,
              detail=", ".join(unknown))
    import inspect

    from ..nbrun import run_notebook

    try:    # the call below, checked everywhere (the run itself needs CUDA)
        inspect.signature(run_notebook).bind(source, out / f"{NAME}.ipynb", params, env={},
                                             timeout=60)
        bound = True
    except TypeError:
        bound = False
    sec.check("dmlkit.nbrun.run_notebook takes the check's arguments", bound)
    if ctx.device.type != "cuda":
        raise Skip("no CUDA (notebook 09 on the CPU is run by tests/test_notebooks_tiny.py)")
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed (make gpu-wheels)")
    from . import absolute_pythonpath

    env = {"DMLKIT_FIGURES_DIR": str(out / "figures"), "DMLKIT_RESULTS_DIR":
           str(out / "results"), "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
           "PYTHONPATH": absolute_pythonpath()}     # the kernel runs in <out>/notebook
    if importlib.util.find_spec("umap") is None:
        env["DMLKIT_PROJECTION"] = "pca"
        sec.note("umap-learn is not installed: the notebook's UMAP ran as a PCA "
                 "(DMLKIT_PROJECTION=pca)")
    (out / "results" / f"{NAME}.json").unlink(missing_ok=True)
    (out / "results" / "runs.csv").unlink(missing_ok=True)
    seconds = run_notebook(source, out / f"{NAME}.ipynb", params, env=env,
                           timeout=int(max(60, min(600, ctx.budget.left()))))
    res = json.loads((out / "results" / f"{NAME}.json").read_text())
    sec.note(f"executed in {seconds:.0f} s (kernel start included): "
             f"{out / (NAME + '.ipynb')}; parameters: {json.dumps(params)}")
    parts = [("test classes", "untrained", "trained")]
    if "real_trained" in res:        # its last section: Fashion-MNIST (or glyphs) unseen classes
        parts.append((f"{res.get('real_dataset', 'real')} unseen classes", "real_untrained",
                      "real_trained"))
    for what, before, after in parts:
        for key in sorted(set(res[after]) | set(res[before])):
            sec.row("notebook 09 metrics", data=what, metric=key,
                    untrained=res[before].get(key), trained=res[after].get(key))
        ctx.log(f"  notebook 09, {what}: " + ", ".join(
            f"{k} {res[before].get(k, float('nan')):.3f} -> {v:.3f}"
            for k, v in res[after].items()))
    import pandas as pd

    runs = pd.read_csv(out / "results" / "runs.csv")
    device = str(runs["device"].iloc[-1]) if "device" in runs else "?"
    sec.check("the notebook trained on CUDA", device.startswith("cuda"), detail=device)
    sec.check("trained MAP@R above the untrained network's",
              res["trained"]["map@r"] > res["untrained"]["map@r"],
              detail=f"{res['untrained']['map@r']:.3f} -> {res['trained']['map@r']:.3f}")
