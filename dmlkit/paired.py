"""Paired comparisons over seeds: the difference of each run to a named baseline with a 95 %
interval, and the verdict that interval allows.

Every comparison in dmlkit (the DAML ablation, the notebooks' loss tables, the reality check)
goes through :func:`paired_differences`: runs x seeds x metrics in, one row per (run, metric)
out, with the mean of the per-seed differences ``run - baseline`` (same seed: same data
order, same initialisation where the runs share it), its standard deviation, a confidence
interval (Student t over the seeds by default; a percentile bootstrap of the mean when asked)
and a verdict read from the interval:

* "better" / "worse": the whole interval lies above / below zero (for a metric where higher
  is better; ``lower_is_better`` flips it);
* "cannot tell with n = 3": the interval contains zero, or there are fewer than two paired
  seeds (no interval);
* "identical": every paired difference is exactly zero.

"Higher on every seed" is never a verdict: with three seeds a coin gives it a quarter of the
time. A seed whose value is NaN (a diverged run) is reported in ``nan_seeds`` and named in the
verdict, never dropped silently; the interval is computed on the seeds where both values are
finite. The intervals are per comparison: with many runs and metrics some intervals exclude
zero by chance (about 1 in 20 when nothing differs), which :func:`verdict_sentence` does not
correct for.

>>> import pandas as pd
>>> frame = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
...                       "recall@1": [0.50, 0.52, 0.51, 0.60, 0.61, 0.63]})
>>> table = paired_differences(frame, baseline="a", metrics=["recall@1"], scale=100)
>>> row = table.to_dict(orient="records")[0]
>>> row["run"], row["n"], round(row["diff"], 2), row["verdict"]
('b', 3, 10.33, 'better')
>>> verdict_sentence(row)
'b vs a: recall@1 +10.3 (95 % CI +6.5 to +14.1, n = 3 seeds): better'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["PAIRED_COLUMNS", "display_table", "interval", "paired_differences", "report",
           "summary_sentence", "verdict", "verdict_lines", "verdict_record", "verdict_sentence"]

#: the columns of :func:`paired_differences`' table, in order
PAIRED_COLUMNS = ("run", "baseline", "metric", "n", "mean", "baseline_mean", "diff", "sd",
                  "low", "high", "confidence", "method", "nan_seeds", "verdict")


def interval(differences: Sequence[float], confidence: float = 0.95, method: str = "t",
             n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """A ``confidence`` interval for the mean of paired ``differences`` (finite floats).

    method "t": ``mean +- t_{(1+c)/2, n-1} sd / sqrt(n)`` (Student t, the default);
    "bootstrap": the percentile interval of ``n_boot`` resampled means (``seed``).
    Fewer than two differences: ``(nan, nan)``.

    >>> interval([1.0, 2.0, 3.0])                       # mean 2, sd 1, t_{0.975, 2} = 4.303
    (-0.4841..., 4.4841...)
    """
    d = np.asarray(differences, dtype=float)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if not np.isfinite(d).all():
        raise ValueError("interval() takes finite differences; report NaN seeds separately")
    n = d.size
    if n < 2:
        return (math.nan, math.nan)
    mean = float(d.mean())
    if method == "t":
        from scipy import stats

        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) \
            / math.sqrt(n)
        return (mean - half, mean + half)
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, n, size=(int(n_boot), n))].mean(axis=1)
        lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
        return (float(lo), float(hi))
    raise ValueError(f"unknown interval method {method!r}; known: 't', 'bootstrap'")


def verdict(low: float, high: float, n: int, differences: Sequence[float] = (),
            lower_is_better: bool = False, nan_seeds: Sequence[int] = ()) -> str:
    """The verdict an interval ``[low, high]`` over ``n`` paired seeds allows (module
    docstring); ``nan_seeds`` are named after it.

    >>> verdict(0.5, 2.0, 5), verdict(-0.5, 2.0, 3), verdict(-2.0, -0.5, 5, lower_is_better=True)
    ('better', 'cannot tell with n = 3', 'better')
    """
    d = np.asarray(differences, dtype=float)
    if n >= 1 and d.size == n and (d == 0).all():
        text = "identical"
    elif n < 2 or not (math.isfinite(low) and math.isfinite(high)):
        text = f"cannot tell with n = {n}"
    elif low > 0 or high < 0:
        up = low > 0
        text = "better" if up != lower_is_better else "worse"
    else:
        text = f"cannot tell with n = {n}"
    if len(nan_seeds):
        text += f" (NaN on seed {', '.join(str(s) for s in nan_seeds)})"
    return text


def paired_differences(frame: pd.DataFrame | Mapping, *, baseline: str | Mapping[str, str],
                       metrics: Iterable[str], runs: Iterable[str] | None = None,
                       run: str = "run", seed: str = "seed", scale: float = 1.0,
                       confidence: float = 0.95, method: str = "t", n_boot: int = 10_000,
                       lower_is_better: Iterable[str] = ()) -> pd.DataFrame:
    """Paired differences of runs to a baseline, per metric, with intervals and verdicts.

    frame: one row per (run, seed) with a column per metric (long format), or a mapping
    ``{run: {metric: [value per seed, ...]}}`` (seeds numbered 0, 1, ...). baseline: the run
    every other run is compared with, or ``{run: its baseline}`` (e.g. each DAML run with
    its own control). runs: the runs to compare (default: every run but the baselines, in
    the frame's order). scale: multiplies the values (100 for percentages). A run is paired
    with its baseline on the seeds both have; a seed missing from either is an error (the
    pairing would be silently unbalanced). lower_is_better: metrics where a decrease is an
    improvement. Returns a DataFrame with :data:`PAIRED_COLUMNS`: n (finite pairs), the two
    means on those pairs, diff (mean difference), sd, low / high, nan_seeds (a tuple) and the
    verdict.
    """
    data = _long(frame, run, seed)
    metrics = list(metrics)
    missing = [m for m in metrics if m not in data.columns]
    if missing:
        raise ValueError(f"unknown metric column(s) {missing}; the frame has "
                         f"{[c for c in data.columns if c not in (run, seed)]}")
    order = list(dict.fromkeys(data[run]))
    if isinstance(baseline, str):
        if baseline not in order:
            raise ValueError(f"baseline {baseline!r} is not among the runs {order}")
        targets = list(runs) if runs is not None else [r for r in order if r != baseline]
        base_of = {r: baseline for r in targets}
    else:
        base_of = dict(baseline)
        targets = list(runs) if runs is not None else [r for r in order if r in base_of]
    unknown = [r for r in targets if r not in order] + \
        [b for r, b in base_of.items() if r in targets and b not in order]
    if unknown:
        raise ValueError(f"unknown run(s) {sorted(set(unknown))}; known: {order}")
    dup = data.duplicated([run, seed])
    if dup.any():
        first = data.loc[dup, [run, seed]].values[0].tolist()
        raise ValueError(f"more than one row for (run, seed) {first}")
    worse_down = set(lower_is_better)
    rows = []
    for name in targets:
        base = base_of.get(name)
        if base is None:
            raise ValueError(f"no baseline given for run {name!r}")
        mine = data[data[run] == name].set_index(seed)
        theirs = data[data[run] == base].set_index(seed)
        if set(mine.index) != set(theirs.index):
            raise ValueError(f"runs {name!r} and {base!r} have different seeds "
                             f"({sorted(mine.index)} vs {sorted(theirs.index)}): pair them "
                             "on the same seeds")
        seeds = sorted(mine.index)
        for m in metrics:
            a = scale * mine.loc[seeds, m].to_numpy(float)
            b = scale * theirs.loc[seeds, m].to_numpy(float)
            ok = np.isfinite(a) & np.isfinite(b)
            nan_seeds = tuple(int(s) if isinstance(s, (int, np.integer)) else s
                              for s, good in zip(seeds, ok) if not good)
            d = a[ok] - b[ok]
            n = int(ok.sum())
            low, high = interval(d, confidence, method, n_boot)
            rows.append({
                "run": name, "baseline": base, "metric": m, "n": n,
                "mean": float(a[ok].mean()) if n else math.nan,
                "baseline_mean": float(b[ok].mean()) if n else math.nan,
                "diff": float(d.mean()) if n else math.nan,
                "sd": float(d.std(ddof=1)) if n > 1 else math.nan,
                "low": low, "high": high, "confidence": confidence, "method": method,
                "nan_seeds": nan_seeds,
                "verdict": verdict(low, high, n, d, m in worse_down, nan_seeds)})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def _long(frame, run: str, seed: str) -> pd.DataFrame:
    if isinstance(frame, pd.DataFrame):
        for col in (run, seed):
            if col not in frame.columns:
                raise ValueError(f"the frame has no {col!r} column (columns: "
                                 f"{list(frame.columns)})")
        if frame.empty:
            raise ValueError("the comparison frame is empty")
        return frame
    if not isinstance(frame, Mapping) or not frame:
        raise ValueError("give a DataFrame (one row per run and seed) or a non-empty mapping "
                         "{run: {metric: [value per seed]}}")
    rows = []
    for name, by_metric in frame.items():
        lengths = {len(v) for v in by_metric.values()}
        if len(lengths) != 1:
            raise ValueError(f"run {name!r}: every metric needs one value per seed, got "
                             f"lengths {sorted(lengths)}")
        for i in range(lengths.pop()):
            rows.append({run: name, seed: i, **{m: v[i] for m, v in by_metric.items()}})
    return pd.DataFrame(rows)


def verdict_sentence(row: Mapping, label: str | None = None, baseline_label: str | None = None,
                     digits: int = 1, unit: str = "") -> str:
    """One sentence for one row of :func:`paired_differences`, e.g. ``"daml vs control:
    recall@1 +12.1 (95 % CI +8.0 to +16.2, n = 5 seeds): better"``; ``unit`` follows each
    number (e.g. " points")."""
    f = f"{{:+.{digits}f}}{unit}"
    who = f"{label or row['run']} vs {baseline_label or row['baseline']}"
    pct = f"{100 * row['confidence']:.0f} %"
    n = int(row["n"])
    if math.isfinite(row["low"]):
        ci = f" ({pct} CI {f.format(row['low'])} to {f.format(row['high'])}, n = {n} seeds)"
    else:
        ci = f" (n = {n} seed{'s' if n != 1 else ''}, no interval)"
    diff = "n/a" if not math.isfinite(row["diff"]) else f.format(row["diff"])
    return f"{who}: {row['metric']} {diff}{ci}: {row['verdict']}"


def verdict_lines(table: pd.DataFrame, labels: Mapping[str, str] | None = None,
                  **kwargs) -> list[str]:
    """:func:`verdict_sentence` for every row of a :func:`paired_differences` table (labels:
    display names of the runs and baselines)."""
    labels = dict(labels or {})
    return [verdict_sentence(r, labels.get(r["run"]), labels.get(r["baseline"]), **kwargs)
            for r in table.to_dict(orient="records")]


def summary_sentence(table: pd.DataFrame, metric: str, labels: Mapping[str, str] | None = None
                     ) -> str:
    """One sentence that sorts the runs of a :func:`paired_differences` table by verdict for
    one metric, e.g. ``"recall@1 against triplet (paired 95 % intervals, n = 2 seeds):
    better: none; worse: lifted structure; cannot tell: N-pair-mc, N-pair-ovo."``."""
    labels = dict(labels or {})
    part = table[table["metric"] == metric]
    if part.empty:
        raise ValueError(f"no rows for metric {metric!r} in the table")
    bases = sorted(set(part["baseline"]))
    ns = sorted(set(int(n) for n in part["n"]))
    groups: dict[str, list[str]] = {"better": [], "worse": [], "identical": [],
                                    "cannot tell": []}
    for r in part.to_dict(orient="records"):
        name = labels.get(r["run"], r["run"])
        if r["nan_seeds"]:
            name += f" (NaN on seed {', '.join(str(s) for s in r['nan_seeds'])})"
        key = next((k for k in groups if r["verdict"].startswith(k)), "cannot tell")
        groups[key].append(name)
    n_text = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"
    base = " / ".join(labels.get(b, b) for b in bases)
    pct = f"{100 * part['confidence'].iloc[0]:.0f} %"
    body = "; ".join(f"{k}: {', '.join(v) if v else 'none'}" for k, v in groups.items()
                     if v or k in ("better", "worse"))
    return f"{metric} against {base} (paired {pct} intervals, {n_text} seeds): {body}."


def display_table(table: pd.DataFrame, digits: int = 1,
                  labels: Mapping[str, str] | None = None, unit: str = "") -> pd.DataFrame:
    """A :func:`paired_differences` table for reading: one row per (run, metric) with the
    means, the difference and its interval as rounded text, n and the verdict; ``unit``
    (e.g. ``"%"``) goes into the headers of the columns that carry it."""
    labels = dict(labels or {})
    u = f" ({unit})" if unit else ""
    f = f"{{:+.{digits}f}}"
    g = f"{{:.{digits}f}}"

    def fmt(v, spec):
        return "n/a" if not math.isfinite(v) else spec.format(v)

    rows = []
    for r in table.to_dict(orient="records"):
        ci = ("n/a" if not math.isfinite(r["low"]) else
              f"{f.format(r['low'])} to {f.format(r['high'])}")
        rows.append({"run": labels.get(r["run"], r["run"]),
                     "baseline": labels.get(r["baseline"], r["baseline"]),
                     "metric": r["metric"], f"mean{u}": fmt(r["mean"], g),
                     f"baseline mean{u}": fmt(r["baseline_mean"], g),
                     f"difference{u}": fmt(r["diff"], f), f"{100 * r['confidence']:.0f} % CI": ci,
                     "n": int(r["n"]), "verdict": r["verdict"]})
    return pd.DataFrame(rows).set_index(["run", "metric"])


def report(frame: pd.DataFrame | Mapping, *, baseline: str | Mapping[str, str],
           metrics: Iterable[str], run: str = "run", scale: float = 1.0,
           labels: Mapping[str, str] | None = None, digits: int = 1,
           printer=print, **kwargs) -> pd.DataFrame:
    """:func:`paired_differences`, its :func:`summary_sentence` per metric printed (what a
    notebook writes under its table), and the :func:`display_table` returned for display.
    kwargs: the other options of :func:`paired_differences`."""
    metrics = list(metrics)
    table = paired_differences(frame, baseline=baseline, metrics=metrics, run=run,
                               scale=scale, **kwargs)
    for m in metrics:
        printer(summary_sentence(table, m, labels))
    return display_table(table, digits, labels, unit="%" if scale == 100 else "")


def verdict_record(shown: pd.DataFrame) -> dict[str, str]:
    """The verdicts of a :func:`display_table` / :func:`report` table as the keys a notebook
    records (``nb.record(**verdict_record(shown))``): ``"verdict[<run> vs <baseline>,
    <metric>]"`` -> the verdict.

    >>> frame = pd.DataFrame({"run": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
    ...                       "m": [0.1, 0.2, 0.3, 0.5]})
    >>> verdict_record(report(frame, baseline="a", metrics=["m"], printer=lambda line: None))
    {'verdict[b vs a, m]': 'cannot tell with n = 2'}
    """
    return {f"verdict[{run} vs {row['baseline']}, {metric}]": row["verdict"]
            for (run, metric), row in shown.iterrows()}
