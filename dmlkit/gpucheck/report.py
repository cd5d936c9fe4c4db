"""The GPU check's report: one :class:`Section` per part of the check, with its checks (a
value against a stated tolerance), its tables and its notes; written as JSON and Markdown.

>>> sec = Section("demo", "A demo section")
>>> sec.check("max relative error", 2e-7, 1e-5)
True
>>> sec.check("stays finite", False)
False
>>> sec.skip_check("on CUDA", "no CUDA")
>>> [c["result"] for c in sec.checks]
['pass', 'FAIL', 'skipped: no CUDA']
>>> print(markdown_table([{"loss": "triplet", "err": 1.234567e-7, "ok": True}]))
| loss | err | ok |
|---|---|---|
| triplet | 1.235e-07 | yes |
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text

__all__ = ["Budget", "Section", "Skip", "fmt", "markdown_table", "render_markdown",
           "write_report"]


class Skip(Exception):
    """Raised by a section (or a part of one) that cannot run here; the message is the
    reason, reported as ``skipped: <reason>``."""


@dataclass
class Budget:
    """The check's global time budget (seconds from ``start``)."""

    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def need(self, seconds: float, what: str) -> None:
        """Raise :class:`Skip` when less than ``seconds`` are left for ``what``."""
        if self.left() < seconds:
            raise Skip(f"time budget: {max(self.left(), 0):.0f} s of {self.seconds:.0f} s left, "
                       f"{what} needs ~{seconds:.0f} s (--budget-s)")


@dataclass
class Section:
    """The outcome of one part of the check: ``status`` is ``ok``, ``failed`` (an exception:
    ``reason`` holds it) or ``skipped`` (``reason`` says why)."""

    name: str
    title: str
    status: str = "ok"
    reason: str = ""
    seconds: float = 0.0
    checks: list = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def check(self, name: str, value, tol: float | None = None, detail: str = "",
              at_least: bool = False) -> bool:
        """Record a check: ``value <= tol`` (``value >= tol`` with ``at_least``) for a finite
        number, or a boolean ``value`` when ``tol`` is None. Returns whether it passed."""
        if tol is None:
            passed = bool(value)
        elif value is None or not math.isfinite(float(value)):
            passed = False
        else:
            passed = float(value) >= tol if at_least else float(value) <= tol
        self.checks.append({"name": name, "value": value,
                            "tol": tol if tol is None or not at_least else f">= {tol:g}",
                            "detail": detail, "passed": passed,
                            "result": "pass" if passed else "FAIL"})
        return passed

    def skip_check(self, name: str, reason: str) -> None:
        """Record a check that could not run here (``passed`` is None)."""
        self.checks.append({"name": name, "value": None, "tol": None, "detail": "",
                            "passed": None, "result": f"skipped: {reason}"})

    def row(self, table: str, **values) -> dict:
        """Append a row to table ``table``; returns it (to be completed later)."""
        self.tables.setdefault(table, []).append(values)
        return values

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def failed_checks(self) -> list:
        return [c for c in self.checks if c["passed"] is False]


def fmt(v) -> str:
    """A table cell: 4 significant digits for floats, yes / no for booleans, - for None."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v).replace("|", "/").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of dict rows (the union of their keys, in first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(fmt(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(report: dict) -> str:
    """The whole report as Markdown: the machine, a summary line per section, then each
    section's checks, notes and tables."""
    meta, s = report["meta"], report["summary"]
    lines = ["# dmlkit GPU check", ""]
    lines += [f"- **{k}**: {fmt(v)}" for k, v in meta.items()]
    lines += ["", f"**{s['verdict']}**: {s['checks_passed']} checks passed, "
                  f"{s['checks_failed']} failed, {s['checks_skipped']} skipped; sections "
                  f"failed: {', '.join(s['sections_failed']) or 'none'}; total "
                  f"{s['seconds']:.0f} s of a {report['settings']['budget_s']:.0f} s budget.", ""]
    lines.append(markdown_table([
        {"section": sec["title"], "status": sec["status"] + (
            f": {sec['reason']}" if sec["reason"] else ""),
         "checks passed": f"{sum(c['passed'] is True for c in sec['checks'])}"
                          f"/{len(sec['checks'])}",
         "seconds": round(sec["seconds"], 1)} for sec in report["sections"]]))
    for sec in report["sections"]:
        lines += ["", f"## {sec['title']}", ""]
        lines.append(f"Status: **{sec['status']}**" + (f" ({sec['reason']})" if sec["reason"]
                                                         else "") + f", {sec['seconds']:.1f} s.")
        if sec["checks"]:
            lines += ["", markdown_table([{"check": c["name"], "value": c["value"],
                                           "tolerance": c["tol"], "result": c["result"],
                                           "detail": c["detail"] or None}
                                          for c in sec["checks"]])]
        lines += [""] + [f"- {n}" for n in sec["notes"]] if sec["notes"] else []
        for name, rows in sec["tables"].items():
            if rows:
                lines += ["", f"**{name}**", "", markdown_table(rows)]
    return "\n".join(lines) + "\n"


def summarize(sections: list[Section], seconds: float) -> dict:
    checks = [c for s in sections for c in s.checks]
    failed = [s.name for s in sections if s.status == "failed"]
    n_fail = sum(c["passed"] is False for c in checks)
    return {"verdict": "PASS" if not failed and not n_fail else "FAIL",
            "checks_passed": sum(c["passed"] is True for c in checks),
            "checks_failed": n_fail, "checks_skipped": sum(c["passed"] is None for c in checks),
            "sections_failed": failed,
            "sections_skipped": [s.name for s in sections if s.status == "skipped"],
            "seconds": seconds}


def write_report(out: Path, meta: dict, settings: dict, sections: list[Section],
                 seconds: float, log: Callable[[str], None] | None = None) -> dict:
    """Write ``report.json`` and ``report.md`` into ``out``; returns the report dict."""
    report = {"meta": meta, "settings": settings, "summary": summarize(sections, seconds),
              "sections": [asdict(s) for s in sections]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=_json) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report))
    if log:
        log(f"report: {out / 'report.md'} ({report['summary']['verdict']})")
    return report


def _json(v):
    """Numbers of numpy / torch as plain Python numbers; anything else as its string."""
    if hasattr(v, "item"):
        return v.item()
    return str(v)
