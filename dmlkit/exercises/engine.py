"""The checking engine: an exercise's cases, running a student's answer on them, the feedback.

An :class:`Exercise` holds its statement, graded hints and, by kind,

* ``implement``: a function building its :class:`Case` list (inputs, the expected output from
  dmlkit's own implementation, the expected gradient) and a catalogue of typical mistakes
  (``{what went wrong: a function making that mistake}``), used to name the mistake a wrong
  answer most likely made;
* ``predict``: the expected answer and a comparison;
* ``experiment``: the direction the notebook's experiment should show, revealed once the
  student has written an explanation.

:func:`run_check` never raises on a student's answer: a placeholder raising
``NotImplementedError`` is "not implemented yet", a wrong type, a wrong signature, an
exception inside the student's code, a NaN, a wrong value or gradient are each reported on the
FIRST case that shows them, in words, with the (small) input printed. The solution is never
printed.
"""

from __future__ import annotations

import inspect
import math
import os
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Case", "Exercise", "Feedback", "Problem", "format_input", "run_check"]

PASS, FAIL, TODO, NOTED, INFO = "passed", "failed", "not implemented", "noted", "info"


class Feedback:
    """What :func:`~dmlkit.exercises.check` and :func:`~dmlkit.exercises.hint` return: plain
    text (its ``repr``, so a notebook cell shows it) and a status, ``passed``, ``failed``,
    ``not implemented`` (a placeholder or an empty prediction), ``noted`` (an experiment's
    free-text answer) or ``info`` (a hint)."""

    def __init__(self, exercise: str, status: str, text: str):
        self.exercise, self.status, self.text = exercise, status, text

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


@dataclass
class Case:
    """One input of an exercise, in plain words (``label``), with what dmlkit computes on it.

    ``args`` / ``kwargs``: the call ``answer(*args, **kwargs)`` (tensors are cloned before each
    call); ``expected``: dmlkit's output; ``grad_args``: positions of the arguments whose
    gradient is checked (``expected_grads`` in that order); ``show``: the input as printed in a
    message (None: too large to print); ``rtol`` / ``atol``: the tolerance of values and
    gradients; ``extra``: whatever the exercise's comparison needs (e.g. a second acceptable
    output).
    """

    label: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)
    show: str | None = None
    grad_args: tuple = ()
    expected_grads: tuple = ()
    rtol: float = 1e-6
    atol: float = 1e-8
    extra: dict = field(default_factory=dict)


@dataclass
class Problem:
    """A failed case: ``what`` went wrong, in words; ``kind``: ``value`` (a wrong output that a
    mistake of the catalogue may explain), ``grad``, ``type``, ``nan``, ``error`` or
    ``inplace``."""

    what: str
    kind: str = "value"


@dataclass
class Exercise:
    """One exercise of the catalogue (see the module docstring)."""

    name: str
    notebook: str
    kind: str                          # "implement" | "predict" | "experiment"
    title: str
    statement: str
    hints: Sequence[str]
    minutes: int = 10
    call: str = ""                     # how the checker calls an implemented function
    runner: Callable | None = None     # runner(fn, *args, **kwargs): drives fn over a case
    cases: Callable[[], list[Case]] | None = None
    compare: Callable[[Any, Case], Problem | None] | None = None
    mistakes: dict[str, Callable] = field(default_factory=dict)
    expected: Any = None               # predict: the right answer
    judge: Callable[[Any], str | None] | None = None   # predict: None when right, else a nudge
    reveal: str = ""                   # experiment: the expected direction
    after: str = "The next cells show why."   # predict: said after a right answer
    _cache: list | None = field(default=None, repr=False)

    def all_cases(self) -> list[Case]:
        if self._cache is None:
            self._cache = self.cases()
        return self._cache


# ----------------------------------------------------------------------------- formatting
def format_input(**named) -> str:
    """A small input as printed in a message: tensors rounded to 3 decimals, one per line."""
    lines = []
    for name, value in named.items():
        if isinstance(value, torch.Tensor):
            v = value.detach()
            if v.dtype == torch.bool:
                text = str(v.int().tolist())
            elif v.is_floating_point():
                text = np.array2string(v.double().numpy().round(3), precision=3,
                                       suppress_small=True, separator=", ")
            else:
                text = str(v.tolist())
        else:
            text = repr(value)
        sep = " = "
        if "\n" in text:
            sep, text = " =\n    ", text.replace("\n", "\n    ")
        lines.append(f"  {name}{sep}{text}")
    return "\n".join(lines)


def describe_value(x) -> str:
    """A short description of an output: ``tensor of shape (3, 3), float32`` / ``list``."""
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, {str(x.dtype).replace('torch.', '')}"
    return f"a {type(x).__name__}"


def _number(x: float) -> str:
    return f"{x:.6g}"


# ----------------------------------------------------------------------------- comparisons
def compare_tensor(out, expected: torch.Tensor, case: Case, what: str = "the result",
                   scalar_ok: bool = False) -> Problem | None:
    """``out`` against ``expected``: its type, shape, dtype kind, NaN / inf, then the value."""
    if scalar_ok and isinstance(out, (int, float, np.floating, np.integer)) and \
            not isinstance(out, bool):
        out = torch.tensor(float(out), dtype=torch.float64)
    if not isinstance(out, torch.Tensor):
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            return Problem(f"{what} is a Python {type(out).__name__}, not a tensor: keep it a "
                           "torch tensor (no .item() / float()), so that autograd can "
                           "differentiate it", "type")
        return Problem(f"{what} is {describe_value(out)}; expected a torch tensor of shape "
                       f"{tuple(expected.shape)}", "type")
    if tuple(out.shape) != tuple(expected.shape):
        hint = (" (a scalar: reduce with .sum() / .mean(), without keepdim)"
                if expected.dim() == 0 else "")
        return Problem(f"{what} has shape {tuple(out.shape)}; expected "
                       f"{tuple(expected.shape)}{hint}", "type")
    if expected.dtype == torch.bool:
        if out.dtype != torch.bool:
            return Problem(f"{what} has dtype {str(out.dtype).replace('torch.', '')}; expected "
                           "a bool mask (comparisons give bools; combine them with &, |, ~)",
                           "type")
        diff = out.detach().cpu() != expected
        if bool(diff.any()):
            idx = [tuple(i) for i in torch.nonzero(diff).tolist()]
            extra = [f"({', '.join(map(str, i))}): yours {bool(out[i])}, expected "
                     f"{bool(expected[i])}" for i in idx[:3]]
            return Problem(f"{what} differs at {len(idx)} entr{'y' if len(idx) == 1 else 'ies'},"
                           f" e.g. " + "; ".join(extra))
        return None
    if not (out.is_floating_point() or out.is_complex()):
        return Problem(f"{what} has dtype {str(out.dtype).replace('torch.', '')}; expected a "
                       "floating-point tensor", "type")
    o = out.detach().cpu().double()
    e = expected.detach().cpu().double()
    bad = torch.isnan(o) & ~torch.isnan(e)
    if bool(bad.any()):
        return Problem(f"{what} contains NaN", "nan")
    bad = torch.isinf(o) & ~torch.isinf(e)
    if bool(bad.any()):
        return Problem(f"{what} contains inf (an overflow?)", "nan")
    close = torch.isclose(o, e, rtol=case.rtol, atol=case.atol, equal_nan=True)
    if bool(close.all()):
        return None
    if e.dim() == 0:
        return Problem(f"{what} is {_number(float(o))}; expected {_number(float(e))} "
                       f"(off by {_number(abs(float(o - e)))})")
    gap = torch.where(close, 0.0, (o - e).abs().nan_to_num(posinf=math.inf))
    idx = tuple(torch.nonzero(gap == gap.max())[0].tolist())
    return Problem(f"{what} is off at {int((~close).sum())} of {e.numel()} entries, most at "
                   f"{idx}: yours {_number(float(o[idx]))}, expected {_number(float(e[idx]))}")


def compare_index(out, expected: int, case: Case, what: str = "the index") -> Problem | None:
    """An integer answer (an int, a numpy integer or a one-element integer tensor)."""
    if isinstance(out, torch.Tensor) and out.numel() == 1 and not out.is_floating_point():
        out = int(out)
    if isinstance(out, np.integer):
        out = int(out)
    if not isinstance(out, int) or isinstance(out, bool):
        return Problem(f"{what} is {describe_value(out)}; expected an int", "type")
    if out != expected:
        return Problem(f"{what} is {out}; expected {expected}")
    return None


def compare_float(out, expected: float, case: Case, what: str = "the result") -> Problem | None:
    """A number (a float, or a 0-dim tensor); NaN expected means "no query counts"."""
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = float(out)
    if isinstance(out, (np.floating, np.integer, int)) and not isinstance(out, bool):
        out = float(out)
    if not isinstance(out, float):
        return Problem(f"{what} is {describe_value(out)}; expected a number (a float)", "type")
    if math.isnan(expected):
        return None if math.isnan(out) else Problem(
            f"{what} is {_number(out)}; expected NaN (no query counts)")
    if math.isnan(out):
        return Problem(f"{what} is NaN", "nan")
    if not math.isclose(out, expected, rel_tol=case.rtol, abs_tol=case.atol):
        return Problem(f"{what} is {_number(out)}; expected {_number(expected)} "
                       f"(off by {_number(abs(out - expected))})")
    return None


# ----------------------------------------------------------------------------- running answers
def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(x.requires_grad)
    if isinstance(x, list):
        return [_clone(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    return x


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(
            (a.detach() == b.detach()).logical_or(a.isnan() & b.isnan()).all()
            if a.is_floating_point() else (a == b).all())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return True


_OWN_FILES = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(torch.__file__))


def _student_line(exc: BaseException) -> str:
    """`` (line N: `code`)`` of the innermost frame outside dmlkit.exercises and torch."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_OWN_FILES)]
    if not frames:
        return ""
    f = frames[-1]
    where = f"line {f.lineno}" + (f" of {f.name}" if f.name not in ("<module>", "") else "")
    return f" ({where}: `{f.line.strip()}`)" if f.line else f" ({where})"


class _Raised(Exception):
    """The student's code raised ``exc``."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


def _apply(ex: Exercise, fn, args, kwargs):
    if ex.runner is not None:
        return ex.runner(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def _call(ex: Exercise, fn, case: Case, grad: bool):
    """``fn`` on fresh copies of the case's inputs; returns (output, inputs, leaves)."""
    args = [_clone(a) for a in case.args]
    kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
    leaves = []
    if grad:
        for i in case.grad_args:
            args[i] = args[i].requires_grad_(True)
            leaves.append(args[i])
    before = [_clone(a) for a in args]
    try:
        with torch.enable_grad(), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = _apply(ex, fn, args, kwargs)
    except Exception as exc:  # the student's code: reported, never raised
        raise _Raised(exc) from None
    changed = [i for i, (a, b) in enumerate(zip(args, before)) if not _same(a, b)]
    return out, args, leaves, changed


def _error_problem(exc: BaseException) -> Problem:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
    line = _student_line(exc)
    lowered = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("in-place" in lowered or "inplace" in lowered):
        return Problem("autograd cannot differentiate your function: it edits a tensor in place "
                       "(x[...] = ..., x.masked_fill_(), x += ...) that autograd needs. Work on "
                       "a new tensor instead (torch.where, masked_fill without the underscore, "
                       f"x = x + ...){line}. Error: {text}", "inplace")
    return Problem(f"your code raised {text}{line}", "error")


def _grad_problem(out, leaves, case: Case, names: Sequence[str]) -> Problem | None:
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return Problem("the result is not connected to the inputs, so autograd cannot "
                       "differentiate it (a .item(), float(), .numpy(), .detach() or "
                       "torch.tensor(...) of a result cuts the graph; a degenerate batch needs "
                       "a zero that still depends on the input)", "grad")
    try:
        grads = torch.autograd.grad(out, leaves, allow_unused=True)
    except Exception as exc:
        return _error_problem(exc)
    for name, g, e in zip(names, grads, case.expected_grads):
        g = torch.zeros_like(e) if g is None else g.detach().double()
        if bool(torch.isnan(g).any()):
            return Problem(f"the gradient d(result)/d{name} contains NaN (a log, sqrt or "
                           "log-sum-exp of an empty set, or 0 * inf, on the way?)", "nan")
        close = torch.isclose(g, e.double(), rtol=case.rtol, atol=case.atol)
        if not bool(close.all()):
            gap = torch.where(close, 0.0, (g - e).abs())
            idx = tuple(torch.nonzero(gap == gap.max())[0].tolist())
            return Problem(f"the value is right but the gradient d(result)/d{name} is wrong at "
                           f"{int((~close).sum())} entries, e.g. at {idx}: yours "
                           f"{_number(float(g[idx]))}, expected {_number(float(e[idx]))} "
                           "(a .detach() or a non-differentiable step on the way?)", "grad")
    return None


@dataclass
class _Outcome:
    out: Any = None
    problem: Problem | None = None


def _run_case(fn, ex: Exercise, case: Case, names: Sequence[str]) -> _Outcome:
    try:
        out, _args, leaves, changed = _call(ex, fn, case, grad=bool(case.grad_args))
    except _Raised as r:
        if isinstance(r.exc, NotImplementedError):
            return _Outcome(problem=Problem("NotImplementedError", "todo"))
        return _Outcome(problem=_error_problem(r.exc))
    if changed:
        which = ", ".join(names[i] if i < len(names) else f"argument {i + 1}" for i in changed)
        return _Outcome(out, Problem(f"your function changed its input {which} in place; the "
                                     "caller's tensors must stay as they were (work on a "
                                     "copy, or use torch.where / masked_fill without the "
                                     "underscore)", "inplace"))
    problem = ex.compare(out, case)
    if problem is None and case.grad_args:
        problem = _grad_problem(out, leaves, case, [names[i] for i in case.grad_args])
    return _Outcome(out, problem)


def _mistake_matches(mistake, ex: Exercise, case: Case, student_out) -> bool:
    """Whether the catalogue's mistake gives what the student gave on ``case``."""
    try:
        with torch.enable_grad(), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            theirs = _apply(ex, mistake, [_clone(a) for a in case.args],
                            {k: _clone(v) for k, v in case.kwargs.items()})
    except Exception:
        return False
    probe = Case(case.label, case.args, theirs, case.kwargs, rtol=max(case.rtol, 1e-6),
                 atol=max(case.atol, 1e-9), extra=case.extra)
    try:
        return ex.compare(student_out, probe) is None
    except Exception:
        return False


def _diagnose(ex: Exercise, cases: list[Case], outcomes: list[_Outcome], first: int) -> str | None:
    """The catalogue's mistake that reproduces the student's output on the first failing case
    and on the most other cases (None when none does)."""
    if outcomes[first].out is None:
        return None
    best, best_score = None, -1
    for what, mistake in ex.mistakes.items():
        if not _mistake_matches(mistake, ex, cases[first], outcomes[first].out):
            continue
        score = sum(_mistake_matches(mistake, ex, c, o.out)
                    for i, (c, o) in enumerate(zip(cases, outcomes))
                    if i != first and o.out is not None and o.problem is not None
                    and o.problem.kind == "value")
        if score > best_score:
            best, best_score = what, score
    return best


def _signature_problem(fn, ex: Exercise, case: Case) -> str | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*case.args, **case.kwargs)
    except TypeError as exc:
        return (f"your function cannot be called as {ex.call}: its signature is "
                f"{fn.__name__ if hasattr(fn, '__name__') else 'it'}{sig} ({exc})")
    return None


def _names(ex: Exercise) -> list[str]:
    inside = ex.call[ex.call.find("(") + 1:ex.call.rfind(")")]
    return [p.split("=")[0].strip() for p in inside.split(",") if p.strip()]


def run_check(ex: Exercise, answer) -> Feedback:
    """Check ``answer`` for ``ex`` (see the module docstring); never raises on the answer."""
    if ex.kind == "predict":
        return _check_prediction(ex, answer)
    if ex.kind == "experiment":
        return _check_experiment(ex, answer)
    head = f"{ex.name}:"
    if answer is None or answer is Ellipsis:
        return Feedback(ex.name, TODO, f"{head} not implemented yet (define the function, then "
                        f"run this cell; hint: exercises.hint({ex.name!r}, 1)).")
    if not callable(answer):
        return Feedback(ex.name, FAIL, f"✗ {head} expected a function called as {ex.call}, "
                        f"got {describe_value(answer)}. Pass the function itself, without "
                        "calling it.")
    cases = ex.all_cases()
    probe = (Case("", tuple([None] * len(_names(ex))), None) if ex.runner is not None
             else cases[0])
    sig = _signature_problem(answer, ex, probe)
    if sig:
        return Feedback(ex.name, FAIL, f"✗ {head} {sig}.")
    names = _names(ex)
    outcomes = [_run_case(answer, ex, c, names) for c in cases]
    first = next((i for i, o in enumerate(outcomes) if o.problem is not None), None)
    if first is None:
        kinds = ", ".join(dict.fromkeys(c.label.split(":")[0] for c in cases))
        grads = " and its gradient matches" if any(c.grad_args for c in cases) else ""
        return Feedback(ex.name, PASS, f"✓ {head} correct on all {len(cases)} cases "
                        f"({kinds}){grads}.")
    case, problem = cases[first], outcomes[first].problem
    if problem.kind == "todo":
        if first == 0:
            return Feedback(ex.name, TODO, f"{head} not implemented yet (replace the `raise "
                            f"NotImplementedError` with your code; hint: "
                            f"exercises.hint({ex.name!r}, 1)).")
        problem = Problem("your code raised NotImplementedError on this case", "error")
    lines = [f"✗ {head} {problem.what}", f"  on case {first + 1} of {len(cases)}: {case.label}"]
    if case.show:
        lines.append(case.show)
    elif case.kwargs:
        lines.append(format_input(**case.kwargs) + "  (the input is too large to print)")
    mistake = _diagnose(ex, cases, outcomes, first) if problem.kind in ("value", "nan") else None
    if mistake:
        lines.append(f"  Looks like: {mistake}.")
    passed = sum(o.problem is None for o in outcomes)
    lines.append(f"  ({passed} of {len(cases)} cases right; more help: "
                 f"exercises.hint({ex.name!r}, 1))")
    return Feedback(ex.name, FAIL, "\n".join(lines))


def _unanswered(answer) -> bool:
    return answer is None or answer is Ellipsis or (isinstance(answer, str) and
                                                   not answer.strip())


def _check_prediction(ex: Exercise, answer) -> Feedback:
    if _unanswered(answer):
        return Feedback(ex.name, TODO, f"{ex.name}: not answered yet: write your prediction "
                        "first, then run this cell.")
    try:
        nudge = ex.judge(answer)
    except Exception as exc:
        nudge = f"could not read your answer ({type(exc).__name__}: {exc})"
    if nudge is None:
        return Feedback(ex.name, PASS, f"✓ {ex.name}: right. {ex.after}")
    return Feedback(ex.name, FAIL, f"✗ {ex.name}: not quite: {nudge} "
                    f"(more help: exercises.hint({ex.name!r}, 1))")


def _check_experiment(ex: Exercise, answer) -> Feedback:
    if _unanswered(answer):
        return Feedback(ex.name, TODO, f"{ex.name}: write what you expect (and then what you "
                        "saw) as a string first; it is not graded.")
    if not isinstance(answer, str):
        return Feedback(ex.name, FAIL, f"✗ {ex.name}: expected your explanation as a string, "
                        f"got {describe_value(answer)}.")
    return Feedback(ex.name, NOTED, f"{ex.name}: noted (not graded). What should happen: "
                    f"{ex.reveal}")
