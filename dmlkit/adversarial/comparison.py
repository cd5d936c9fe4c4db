"""Fair comparisons of adversarial training: each design next to the control that changes
nothing but the generator.

A DAML (or DAML+SP) run of a preset is compared with its **control**: the same call with
``generator="identity"`` (:class:`~dmlkit.adversarial.generators.IdentityGenerator`,
``G(a, p, n) = n``). The control runs the preset's schedule, batches, triples, ``J_m``,
gradient routing, optimisers and learning rates, and the metric sees as many negatives per
anchor as DAML does, real ones where DAML puts synthetic ones: the difference between the two
is the generator. (For ``preset="official"`` the control equals ``method="metric"``, the
authors' own metric-only protocol on random triplets; for ``"dmlkit"``, whose metric-only
warm-up uses every batch negative, ``method="metric"`` is not a fair control: one synthetic
negative per anchor against every real one. It is kept in the tables as a reference,
labelled by its negatives.)

:func:`fair_runs` lists the runs; :func:`run_comparison` trains each for several seeds, end to
end on a data set's images (:func:`~dmlkit.adversarial.fit_adversarial_images`) or on frozen
features, with the diagnostics; :func:`summarize` gives mean +- std over seeds, the paired
(same seed) difference to the control, and each run's configuration beside its numbers.
``benchmarks/adversarial.py`` saves its full-size table as the package resource
``adversarial_benchmark.csv`` (:func:`load_benchmark`), which notebooks 06 and 07 show next to
their own small runs.

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
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .presets import PRESETS

__all__ = ["BENCHMARK_RESOURCE", "CONFIG_COLUMNS", "DIAGNOSTIC_COLUMNS", "RunSpec",
           "fair_runs", "load_benchmark", "negatives_in_metric_loss", "run_comparison",
           "summarize", "verdict_lines"]

#: the diagnostics of the last epoch kept per run (``fit_adversarial(..., diagnostics=True)``)
DIAGNOSTIC_COLUMNS = ("collapse_same", "collapse_different", "probe_accuracy",
                      "synthetic_norm", "negative_norm", "violating")
#: the settings printed beside each run's numbers (those the presets and controls differ in)
CONFIG_COLUMNS = ("preset", "method", "generator", "negatives", "lr", "trunk_lr_factor",
                  "generator_lr_factor", "routing", "warmup", "generator_epochs", "lam",
                  "real_weight", "generator_weight", "weight_decay", "weight_decay_on",
                  "alpha_sign", "steps")
#: file name of the saved benchmark table in ``dmlkit/resources``
BENCHMARK_RESOURCE = "adversarial_benchmark.csv"


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
                   history: list | None = None, **common) -> pd.DataFrame:
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
    row of every run (with ``run`` and ``seed``; the diagnostics over training).
    """
    from tqdm.auto import tqdm

    from .. import evaluate as _evaluate

    runs = list(runs)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    missing = {r.control for r in runs if r.control is not None} - set(names)
    if missing:
        raise ValueError(f"controls {sorted(missing)} are not among the runs")
    if not seeds:
        raise ValueError("give at least one seed")
    kinds = {"recall" if m.startswith("recall@") else m for m in metrics}
    ks = sorted({int(m.split("@")[1]) for m in metrics if m.startswith("recall@")}) or [1]
    eval_kwargs = {"metrics": sorted(kinds), "ks": tuple(ks)}
    rows = []
    bar = tqdm(total=len(runs) * len(seeds), disable=not progress, desc="runs")
    for spec in runs:
        for seed in seeds:
            t0 = time.perf_counter()
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
            cfg = res.config
            row = {"run": spec.name, "control": spec.control, "seed": int(seed),
                   **{m: float(got[m]) for m in metrics}}
            last = res.history[-1]
            row.update({k: float(last.get(k, math.nan)) for k in DIAGNOSTIC_COLUMNS})
            row.update(_config_columns(cfg))
            if history is not None:
                history += [{"run": spec.name, "seed": int(seed), **h} for h in res.history]
            row["config"] = json.dumps(_jsonable(cfg), sort_keys=True)
            rows.append(row)
            bar.update(1)
            if log is not None:
                log(f"{spec.name:24s} seed {seed}: " + "  ".join(
                    f"{m} {100 * row[m]:.1f}" for m in metrics)
                    + f"  ({time.perf_counter() - t0:.1f} s)")
    bar.close()
    return pd.DataFrame(rows)


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
    (sample standard deviation, times ``scale``), ``<metric> vs control`` and ``<metric> vs
    control sd`` (mean and sd of the paired differences to the control with the same seed,
    NaN for controls), ``<metric> verdict`` ("higher on every seed", "lower on every seed" or
    "mixed across seeds"; empty for controls), the diagnostics' means and the configuration
    columns."""
    if frame.empty:
        raise ValueError("the comparison frame is empty")
    if metrics is None:
        skip = {"seed", *DIAGNOSTIC_COLUMNS, *CONFIG_COLUMNS}
        metrics = [c for c in frame.columns if c not in skip
                   and pd.api.types.is_float_dtype(frame[c])]
    order = list(dict.fromkeys(frame["run"]))
    by_seed = frame.set_index(["run", "seed"])
    out = []
    for name in order:
        part = frame[frame["run"] == name]
        row = {"run": name, "seeds": len(part)}
        control = part["control"].iloc[0]
        for m in metrics:
            v = scale * part[m].to_numpy(float)
            row[m] = v.mean()
            row[f"{m} sd"] = v.std(ddof=1) if len(v) > 1 else math.nan
            row[f"{m} vs control"] = row[f"{m} vs control sd"] = math.nan
            row[f"{m} verdict"] = ""
            if isinstance(control, str):
                base = scale * by_seed.loc[[(control, s) for s in part["seed"]], m].to_numpy()
                d = v - base
                row[f"{m} vs control"] = float(np.mean(d))
                row[f"{m} vs control sd"] = float(d.std(ddof=1)) if len(d) > 1 else math.nan
                row[f"{m} verdict"] = ("higher on every seed" if (d > 0).all() else
                                       "lower on every seed" if (d < 0).all() else
                                       "mixed across seeds")
        for k in DIAGNOSTIC_COLUMNS:
            row[k] = float(part[k].mean())
        for k in CONFIG_COLUMNS:
            row[k] = part[k].iloc[0]
        out.append(row)
    return pd.DataFrame(out)


def verdict_lines(summary: pd.DataFrame, where: str = "",
                  metrics: Sequence[str] = ("recall@1", "map@r")) -> list[str]:
    """One line per compared run of a :func:`summarize` table: the paired difference to its
    control (and its sd) for the first metric, the mean difference for the others, and the
    first metric's verdict; ``where`` prefixes each line (e.g. "benchmark")."""
    first, *rest = metrics
    prefix = f"{where}: " if where else ""
    lines = []
    for row in summary.to_dict(orient="records"):
        if not row[f"{first} verdict"]:
            continue
        others = "".join(f", {m} {row[f'{m} vs control']:+5.1f}" for m in rest)
        lines.append(f"{prefix}{row['run']:16s} {first} {row[f'{first} vs control']:+5.1f} "
                     f"(sd {row[f'{first} vs control sd']:.1f}) vs its control{others}: "
                     f"{first} {row[f'{first} verdict']}")
    return lines


def load_benchmark(path: str | Path | None = None) -> pd.DataFrame:
    """The saved table of ``benchmarks/adversarial.py`` (one row per run and seed, as
    :func:`run_comparison`), from ``path`` or the package resource
    :data:`BENCHMARK_RESOURCE`. Raises ValueError saying how to make it when absent."""
    if path is None:
        ref = resources.files("dmlkit") / "resources" / BENCHMARK_RESOURCE
        if not ref.is_file():
            raise ValueError(f"dmlkit/resources/{BENCHMARK_RESOURCE} is missing: run "
                             "`python benchmarks/adversarial.py --save` from the repository")
        with resources.as_file(ref) as p:
            return pd.read_csv(p)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no benchmark table at {path}: run `python benchmarks/adversarial.py "
                         f"--save {path}`")
    return pd.read_csv(path)
