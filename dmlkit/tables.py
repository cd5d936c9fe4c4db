"""How the notebooks show numbers: tables of rounded text, retrieval metrics as percentages.

One convention for every table and figure: retrieval metrics (R@k, MAP@R, R-Precision, NMI,
F1, ...) are shown as percentages (x 100) with one decimal and labelled "(%)"; a value that
does not apply is ``n/a`` (never ``NaN``); other numbers are rounded to what they can say.
:mod:`dmlkit.evaluate` itself returns fractions in [0, 1]; these helpers only format.

>>> percent(0.33504)
'33.5'
>>> percent(float("nan"))
'n/a'
>>> metric_label("map@r"), metric_label("recall@1"), metric_label("val_recall@1")
('MAP@R (%)', 'R@1 (%)', 'val R@1 (%)')
>>> metrics_table({"untrained": {"recall@1": 0.11, "map@r": 0.024},
...                "trained": {"recall@1": 0.335}})
          untrained trained
R@1 (%)        11.0    33.5
MAP@R (%)       2.4     n/a
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

__all__ = ["NA", "fixed", "mean_std", "metric_label", "metric_name", "metrics_table",
           "name_list", "percent", "plural", "scientific", "summary_table", "text_table"]

#: What a table shows where a value does not apply.
NA = "n/a"

_SHORT = (("recall@", "R@"), ("precision@", "P@"), ("map@r", "MAP@R"), ("r_precision", "RP"),
          ("nmi", "NMI"), ("f1", "F1"), ("cmc@", "CMC@"), ("vrf_neg", "VRF/"), ("map", "mAP"))
_PREFIXES = ("val_", "test_", "untrained_")


def _missing(value) -> bool:
    try:
        return value is None or not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def metric_name(name: str) -> str:
    """The papers' short name of a :mod:`dmlkit.evaluate` metric key (``recall@1`` -> ``R@1``,
    ``map@r`` -> ``MAP@R``, ``r_precision`` -> ``RP``); a ``val_`` / ``test_`` /
    ``untrained_`` prefix is kept as a word; other names are returned as they are."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return f"{prefix[:-1]} {metric_name(name[len(prefix):])}"
    for long, short in _SHORT:
        if name.startswith(long):
            return short + name[len(long):]
    return name


def metric_label(name: str) -> str:
    """``metric_name(name) + " (%)"``: how a percentage column or axis is labelled."""
    return f"{metric_name(name)} (%)"


def percent(value, digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals; ``n/a`` for None / NaN."""
    return NA if _missing(value) else f"{100.0 * float(value):.{digits}f}"


def fixed(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``n/a`` for None / NaN."""
    return NA if _missing(value) else f"{float(value):.{digits}f}"


def scientific(value, digits: int = 1) -> str:
    """A number in scientific notation (``7.9e-13``: round-off sizes); ``n/a`` for None / NaN."""
    return NA if _missing(value) else f"{float(value):.{digits}e}"


def mean_std(mean, std, digits: int = 1, scale: float = 100.0) -> str:
    """``"61.9 ± 1.9"``: a mean and a standard deviation, both times ``scale`` (default:
    fractions shown as percentages)."""
    if _missing(mean):
        return NA
    sd = "" if _missing(std) else f" ± {scale * float(std):.{digits}f}"
    return f"{scale * float(mean):.{digits}f}{sd}"


def metrics_table(columns: Mapping[str, Mapping[str, float]], digits: int = 1,
                  short: bool = True) -> pd.DataFrame:
    """One row per metric (``R@1 (%)``, ...), one column per model, e.g.
    ``metrics_table({"untrained": m0, "trained": m1})``: percentages as text, ``n/a`` where a
    model lacks a metric. Row order follows the first model's keys. ``short=False``: rows
    named by :mod:`dmlkit.evaluate`'s keys (``recall@1 (%)``)."""
    if not columns:
        raise ValueError("columns is empty: give at least one {name: metrics} entry")
    order: list[str] = []
    for m in columns.values():
        order += [k for k in m if k not in order]
    return pd.DataFrame({name: [percent(m.get(k), digits) for k in order]
                         for name, m in columns.items()},
                        index=[metric_label(k) if short else f"{k} (%)" for k in order])


def summary_table(summary: pd.DataFrame, metrics: Sequence[str] = ("recall@1", "map@r"),
                  digits: int = 1, scale: Mapping[str, float] | None = None) -> pd.DataFrame:
    """A :func:`dmlkit.tasks.summarize` table (``<m>_mean``, ``<m>_std``, ``n``) for reading:
    one column ``"R@1 (%)"`` of ``"mean ± std"`` per metric and the number of seeds.
    ``scale``: per metric, a factor other than 100 (then the column has no "(%)"; e.g.
    ``{"pos_kept": 1}`` with ``digits`` applying to it too)."""
    scale = dict(scale or {})
    out = {}
    for m in metrics:
        factor = scale.get(m, 100.0)
        label = metric_label(m) if factor == 100.0 else metric_name(m)
        out[label] = [mean_std(a, b, digits, factor)
                      for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    out["seeds"] = summary["n"].astype(int).to_list()
    return pd.DataFrame(out, index=summary.index)


def text_table(frame: pd.DataFrame, formats: Mapping[str, Callable | str] | None = None,
               default: Callable | str | None = None) -> pd.DataFrame:
    """``frame`` with its numbers as text: per column a function (``percent``, ``scientific``,
    ...) or a format spec (``"{:.2f}"``), ``default`` for the other numeric columns (a
    fixed 3 decimals unless given); ``n/a`` for every missing value. Columns that hold text
    stay as they are."""
    formats = dict(formats or {})
    default = default or fixed

    def as_function(spec):
        if callable(spec):
            return spec
        return lambda v: NA if _missing(v) else spec.format(v)

    out = frame.copy()
    for col in out.columns:
        spec = formats.get(col)
        if spec is None and not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = [NA if v is None or (isinstance(v, float) and math.isnan(v)) else v
                        for v in out[col]]
            continue
        if pd.api.types.is_bool_dtype(out[col]) and spec is None:
            continue
        f = as_function(spec or default)
        out[col] = [f(v) for v in out[col]]
    return out


def name_list(title: str, names: Sequence[str], width: int = 88) -> str:
    """``"title: a, b, c"`` wrapped at ``width`` between names, never inside one (a browser
    wraps a long output line anywhere: "lifted_st|ructure"); continuation lines indented
    under the first name.

    >>> print(name_list("losses:", ["contrastive", "lifted_structure", "multi_similarity"], 30))
    losses: contrastive,
            lifted_structure,
            multi_similarity
    """
    return textwrap.fill(", ".join(names), width=width, initial_indent=f"{title} ",
                         subsequent_indent=" " * (len(title) + 1), break_long_words=False,
                         break_on_hyphens=False)


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 seed"``, ``"3 seeds"`` (never "3 seed(s)").

    >>> plural(1, "seed"), plural(3, "seed"), plural(2, "class", "classes")
    ('1 seed', '3 seeds', '2 classes')
    """
    return f"{n} {noun if n == 1 else (plural_form or noun + 's')}"
