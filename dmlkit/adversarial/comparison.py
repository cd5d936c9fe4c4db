"""Fair comparisons of adversarial training: each design next to the control that replaces
the generator (and its objective) by the real negative.

A DAML (or DAML+SP) run of a preset is compared with its **control**: the same call with
``generator="identity"`` (:class:`~dmlkit.adversarial.generators.IdentityGenerator`,
``G(a, p, n) = n``). The control runs the preset's schedule, batches, triples, ``J_m``,
gradient routing, optimisers and learning rates, and the metric sees as many negatives per
anchor as DAML does, real ones where DAML puts synthetic ones. The difference between the two
is the generator *and its objective*: under full routing ("official", "pml") DAML's metric
network also receives ``J_hard``, ``J_reg`` and ``J_adv``, which the control does not, so
"DAML minus control" does not by itself credit the learned generator;
:mod:`dmlkit.adversarial.ablation` separates the two. (For ``preset="official"`` the
control equals ``method="metric"``, the authors' own metric-only protocol on random
triplets; for ``"dmlkit"``, whose metric-only warm-up uses every batch negative,
``method="metric"`` is not a fair control: one synthetic negative per anchor against every
real one. It is kept in the tables as a reference, labelled by its negatives.)

:func:`fair_runs` lists the runs; :func:`run_comparison` trains each for several seeds, end to
end on a data set's images (:func:`~dmlkit.adversarial.fit_adversarial_images`) or on frozen
features, with the diagnostics; :func:`summarize` gives mean +- std over seeds, the paired
(same seed) difference to the control with its 95 % interval and verdict
(:mod:`dmlkit.paired`), and each run's configuration beside its numbers.
``benchmarks/adversarial.py --ablation --save`` saves the full-size table of
:mod:`dmlkit.adversarial.ablation` (which holds these runs) as a package resource, which
notebooks 06 and 07 show next to their own small runs.

>>> [r.name for r in fair_runs(presets=("official",), methods=("daml", "daml+sp"))]
['control/official', 'daml/official', 'daml+sp/official']
>>> fair_runs(presets=("dmlkit",))[0].generator
'identity'
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .presets import PRESETS

__all__ = ["CONFIG_COLUMNS", "DIAGNOSTIC_COLUMNS", "RunSpec", "fair_runs",
           "negatives_in_metric_loss", "overrides", "run_comparison", "summarize",
           "verdict_lines"]

#: the diagnostics of the last epoch kept per run (``fit_adversarial(..., diagnostics=True)``)
DIAGNOSTIC_COLUMNS = ("collapse_same", "collapse_different", "centred_same",
                      "centred_different", "offset", "spread", "probe_accuracy",
                      "synthetic_norm", "negative_norm", "violating")
#: the settings printed beside each run's numbers (those the presets and controls differ in)
CONFIG_COLUMNS = ("preset", "method", "generator", "generator_terms", "negatives", "lr",
                  "trunk_lr_factor", "generator_lr_factor", "routing", "warmup",
                  "generator_epochs", "lam", "lambda2", "real_weight", "generator_weight",
                  "weight_decay", "weight_decay_on", "alpha_sign", "steps")


@dataclass(frozen=True)
class RunSpec:
    """One configuration of a comparison: ``fit_adversarial(..., method, preset=preset,
    generator=generator, **settings)`` under the display ``name``; ``control``: the name of
    the run it is compared with (None for controls and references)."""

    name: str
    preset: str
    method: str
    generator: str = "mlp"
    settings: dict = field(default_factory=dict)
    control: str | None = None


def fair_runs(presets: Sequence[str] = ("dmlkit", "official", "pml"),
              methods: Sequence[str] = ("daml",), reference: bool = False) -> list[RunSpec]:
    """For every preset: its control (``control/<preset>``, the identity generator) and one
    run per method (``<method>/<preset>``, compared with that control). reference: also the
    plain metric loss on every batch negative (``metric/every negative``, the "dmlkit"
    metric-only run, not a fair control of any DAML run)."""
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; known presets: {', '.join(PRESETS)}")
    bad = [m for m in methods if m not in ("daml", "daml+sp")]
    if bad:
        raise ValueError(f"methods must be 'daml' and / or 'daml+sp', got {bad}")
    runs = [RunSpec("metric/every negative", "dmlkit", "metric")] if reference else []
    for preset in presets:
        control = f"control/{preset}"
        # the control of DAML and DAML+SP is one run: with G = identity neither generator
        # has an objective, and the presets' DAML+SP settings differ only in the hinge
        runs.append(RunSpec(control, preset, "daml", generator="identity"))
        runs += [RunSpec(f"{m}/{preset}", preset, m, control=control) for m in methods]
    return runs


def negatives_in_metric_loss(config: dict) -> str:
    """What the metric loss ``J_m`` sees per anchor in a run (from its ``config``), e.g.
    "1 synthetic", "1 real", "batch + 1 synthetic"."""
    method, gen = config["method"], config.get("generator", "mlp")
    if method == "metric":
        return ("1 real" if config.get("metric_triples") == "sampled"
                else "every batch negative")
    npa = config.get("negatives_per_anchor")
    n = "all" if npa is None else str(npa)
    kind = "real" if gen == "identity" else "synthetic"
    text = f"{n} {kind}"
    if config.get("keep_real_negatives"):
        text = f"batch negatives + {text}"
    if config.get("real_weight", 0.0) > 0:
        text = f"batch + {text}"
    return text


def _fit_images(spec: RunSpec, seed: int, dataset: str, loss: str, common: dict):
    from .fitting import fit_adversarial_images

    return fit_adversarial_images(dataset, loss, spec.method, preset=spec.preset,
                                  generator=spec.generator, seed=seed, diagnostics=True,
                                  **{**common, **spec.settings})


def run_comparison(runs: Iterable[RunSpec], *, seeds: Sequence[int] = (0, 1, 2),
                   dataset: str = "glyphs", loss: str = "triplet", features=None,
                   metrics: Sequence[str] = ("recall@1", "map@r", "nmi"),
                   progress: bool = False, log: Callable[[str], None] | None = None,
                   history: list | None = None, workers: int = 1, **common) -> pd.DataFrame:
    """Train every run for every seed and return one row per (run, seed).

    End to end by default: :func:`~dmlkit.adversarial.fit_adversarial_images` on
    ``dataset``'s images (the test split, unseen classes, evaluated after the last epoch);
    ``features=((x_train, y_train), (x_test, y_test))``: on frozen features with
    :func:`~dmlkit.adversarial.fit_adversarial`. ``common``: the settings every run shares
    (``epochs``, ``warmup_epochs``, ``batches_per_epoch``, ``P``, ``K``, ``lr``,
    ``trunk_lr_factor``, ``embedding_dim``, ``dataset_kwargs``, ...); a run's own
    ``settings`` override them. Columns: run, control, seed, the metrics (fractions), the
    last epoch's :data:`DIAGNOSTIC_COLUMNS` (NaN where a run has none), the
    :data:`CONFIG_COLUMNS` and ``config`` (every setting as JSON). log: called with a line
    per finished run (e.g. ``print``). history: a list that receives every epoch's history
    row of every run (with ``run`` and ``seed``; the diagnostics over training). workers:
    processes training runs at once (each with the calling process's torch thread count);
    every run is seeded on its own, so the rows do not depend on ``workers``.
    """
    from tqdm.auto import tqdm

    runs = list(runs)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    missing = {r.control for r in runs if r.control is not None} - set(names)
    if missing:
        raise ValueError(f"controls {sorted(missing)} are not among the runs")
    if not seeds:
        raise ValueError("give at least one seed")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [(spec, int(seed), dataset, loss, features, tuple(metrics), common)
            for spec in runs for seed in seeds]
    bar = tqdm(total=len(jobs), disable=not progress, desc="runs")
    done = []

    def finish(result):
        row, hist, seconds = result
        done.append((row, hist))
        bar.update(1)
        if log is not None:
            log(f"{row['run']:24s} seed {row['seed']}: " + "  ".join(
                f"{m} {100 * row[m]:.1f}" for m in metrics) + f"  ({seconds:.1f} s)")

    if int(workers) == 1:
        for job in jobs:
            finish(_run_job(*job))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        import torch

        with ProcessPoolExecutor(int(workers), mp_context=mp.get_context("fork"),
                                 initializer=torch.set_num_threads,
                                 initargs=(torch.get_num_threads(),)) as pool:
            for result in pool.map(_run_job, *zip(*jobs)):
                finish(result)
    bar.close()
    if history is not None:
        for _, hist in done:
            history += hist
    return pd.DataFrame([row for row, _ in done])


def _run_job(spec: RunSpec, seed: int, dataset: str, loss: str, features, metrics, common):
    """One (run, seed): its row, its history rows and the seconds it took."""
    from .. import evaluate as _evaluate

    t0 = time.perf_counter()
    kinds = {"recall" if m.startswith("recall@") else m for m in metrics}
    ks = sorted({int(m.split("@")[1]) for m in metrics if m.startswith("recall@")}) or [1]
    eval_kwargs = {"metrics": sorted(kinds), "ks": tuple(ks)}
    if features is None:
        res = _fit_images(spec, seed, dataset, loss,
                          {"eval_kwargs": {**eval_kwargs, "seed": seed}, **common})
        got = res.history[-1]
    else:
        from .fitting import fit_adversarial

        (xtr, ytr), (xte, yte) = features
        res = fit_adversarial(xtr, ytr, loss, spec.method, preset=spec.preset,
                              generator=spec.generator, seed=seed, diagnostics=True,
                              **{**common, **spec.settings})
        got = _evaluate.evaluate(res.embed(xte), yte, seed=seed, **eval_kwargs)
    row = {"run": spec.name, "control": spec.control, "seed": int(seed),
           **{m: float(got[m]) for m in metrics}}
    last = res.history[-1]
    row.update({k: float(last.get(k, math.nan)) for k in DIAGNOSTIC_COLUMNS})
    row.update(_config_columns(res.config))
    row["config"] = json.dumps(_jsonable(res.config), sort_keys=True)
    hist = [{"run": spec.name, "seed": int(seed), **h} for h in res.history]
    return row, hist, time.perf_counter() - t0


def _config_columns(cfg: dict) -> dict:
    out = {k: cfg.get(k) for k in CONFIG_COLUMNS if k != "negatives"}
    out["negatives"] = negatives_in_metric_loss(cfg)
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def summarize(frame: pd.DataFrame, metrics: Sequence[str] | None = None,
              scale: float = 100.0) -> pd.DataFrame:
    """Per run (in the frame's order): ``seeds``, ``<metric>`` mean and ``<metric> sd``
    (sample standard deviation, times ``scale``), the paired comparison with the control of
    the same seed (:func:`dmlkit.paired.paired_differences`): ``<metric> vs control`` (mean
    difference), ``<metric> vs control sd``, ``<metric> low`` / ``<metric> high`` (its 95 %
    t interval) and ``<metric> verdict`` ("better", "worse", "cannot tell with n = 3", ...;
    empty for controls), the diagnostics' means and the configuration columns."""
    from .. import paired

    if frame.empty:
        raise ValueError("the comparison frame is empty")
    if metrics is None:
        skip = {"seed", *DIAGNOSTIC_COLUMNS, *CONFIG_COLUMNS}
        metrics = [c for c in frame.columns if c not in skip
                   and pd.api.types.is_float_dtype(frame[c])]
    order = list(dict.fromkeys(frame["run"]))
    first = frame.drop_duplicates("run")
    base_of = {r: c for r, c in zip(first["run"], first["control"]) if isinstance(c, str)}
    compared = {}
    if base_of:
        table = paired.paired_differences(frame, baseline=base_of, metrics=metrics,
                                          scale=scale)
        compared = {(r["run"], r["metric"]): r for r in table.to_dict(orient="records")}
    out = []
    for name in order:
        part = frame[frame["run"] == name]
        row = {"run": name, "seeds": len(part)}
        for m in metrics:
            v = scale * part[m].to_numpy(float)
            row[m] = v.mean()
            row[f"{m} sd"] = v.std(ddof=1) if len(v) > 1 else math.nan
            c = compared.get((name, m))
            row[f"{m} vs control"] = c["diff"] if c else math.nan
            row[f"{m} vs control sd"] = c["sd"] if c else math.nan
            row[f"{m} low"] = c["low"] if c else math.nan
            row[f"{m} high"] = c["high"] if c else math.nan
            row[f"{m} verdict"] = c["verdict"] if c else ""
        for k in DIAGNOSTIC_COLUMNS:
            row[k] = float(part[k].mean()) if k in part else math.nan
        for k in CONFIG_COLUMNS:
            row[k] = part[k].iloc[0] if k in part else None
        out.append(row)
    return pd.DataFrame(out)


def verdict_lines(summary: pd.DataFrame, where: str = "",
                  metrics: Sequence[str] = ("recall@1", "map@r")) -> list[str]:
    """One line per compared run of a :func:`summarize` table: for each metric the paired
    difference to its control, its 95 % interval and the verdict the interval allows;
    ``where`` prefixes each line (e.g. "benchmark")."""
    prefix = f"{where}: " if where else ""
    lines = []
    for row in summary.to_dict(orient="records"):
        if not row[f"{metrics[0]} verdict"]:
            continue
        parts = []
        for m in metrics:
            ci = (f"CI {row[f'{m} low']:+.1f} to {row[f'{m} high']:+.1f}"
                  if math.isfinite(row[f"{m} low"]) else "no interval")
            parts.append(f"{m} {row[f'{m} vs control']:+.1f} ({ci}): {row[f'{m} verdict']}")
        lines.append(f"{prefix}{row['run']} vs its control, n = {row['seeds']} seeds: "
                     + "; ".join(parts))
    return lines


def overrides(common: dict, presets: Iterable[str]) -> list[str]:
    """The shared settings of a comparison that replace a preset's own value, one line per
    (setting, preset), e.g. ``"trunk_lr_factor = 1 (official: 0.001)"``.

    >>> overrides({"lr": 1e-3, "epochs": 12}, ["official", "dmlkit"])
    ['lr = 0.001 (official: 0.0001)']
    """
    lines = []
    for key, value in common.items():
        for preset in presets:
            own = PRESETS[preset].get(key, value)
            if key in PRESETS[preset] and own != value:
                lines.append(f"{key} = {value:g} ({preset}: {own:g})"
                             if isinstance(value, (int, float)) and isinstance(own, (int, float))
                             else f"{key} = {value!r} ({preset}: {own!r})")
    return lines
