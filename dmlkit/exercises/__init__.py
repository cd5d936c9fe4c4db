"""Exercises for the notebooks, checked automatically against dmlkit's own implementations.

Three kinds: *implement* (write a function: a loss on S and the masks, a miner, a metric, one
step of an algorithm), *predict* (commit to an answer before the cell that shows it) and
*experiment* (turn a knob, write what you expect; the expected direction is revealed after).

* :func:`available` lists the exercise names (of one notebook with ``notebook="01"``);
* :func:`describe` gives an exercise's statement;
* :func:`check` runs an answer: a function on random, degenerate (one class, singletons, no
  valid triplet, ties) and half-precision inputs against dmlkit's reference, its value, type,
  shape and gradient, and reports the first failing case in words with the input printed,
  naming the typical mistake it looks like; a short confirmation when everything passes. It
  never prints the solution and never raises on a student's answer: a placeholder raising
  ``NotImplementedError`` is "not implemented yet";
* :func:`hint` gives graded hints (level 1, 2, 3: from a nudge to the recipe);
* :func:`solution` returns the reference solution (:mod:`dmlkit.exercises.solutions`), which
  the notebooks fill in when run with ``SOLUTIONS = True``.

>>> from dmlkit import exercises
>>> "contrastive_loss" in exercises.available("01")
True
>>> def contrastive_loss(S, pos, neg, lam=0.5):
...     raise NotImplementedError
>>> exercises.check("contrastive_loss", contrastive_loss).status
'not implemented'
>>> exercises.check("contrastive_loss", exercises.solution("contrastive_loss")).passed
True
>>> exercises.check("triplet_categories", ["hard", "easy", "easy"]).passed
False
"""

from __future__ import annotations

from . import adversarial, losses, metrics, mining, predictions, soft_mining, streaming
from .engine import Exercise, Feedback

__all__ = ["EXERCISES", "Exercise", "Feedback", "available", "check", "describe", "get", "hint",
           "solution"]

#: every exercise, by name, in notebook order
EXERCISES: dict[str, Exercise] = {
    ex.name: ex for ex in sorted(losses.EXERCISES + mining.EXERCISES + metrics.EXERCISES
                                 + soft_mining.EXERCISES + adversarial.EXERCISES
                                 + streaming.EXERCISES
                                 + predictions.EXERCISES, key=lambda e: e.notebook)}


def available(notebook: str | None = None) -> list[str]:
    """The exercise names, in notebook order; ``notebook="08"``: that notebook's only."""
    return [name for name, ex in EXERCISES.items()
            if notebook is None or ex.notebook == str(notebook)[:2]]


def _unknown(name) -> Feedback:
    return Feedback(str(name), "failed", f"✗ no exercise called {name!r}; available: "
                    f"{', '.join(EXERCISES)}")


def get(name: str) -> Exercise:
    """The :class:`Exercise` ``name`` (KeyError with the list when unknown)."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise called {name!r}; available: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def describe(name: str) -> Feedback:
    """The statement of an exercise (its call, kind and expected time)."""
    if name not in EXERCISES:
        return _unknown(name)
    ex = EXERCISES[name]
    call = f"\n  Your function: {ex.call}" if ex.call else ""
    return Feedback(name, "info", f"{name}: {ex.title} ({ex.kind}, ~{ex.minutes} min, notebook "
                    f"{ex.notebook}){call}\n  {ex.statement}")


def check(name: str, answer) -> Feedback:
    """Check an answer (a function, a value or a string, by the exercise's kind); returns a
    :class:`Feedback` (shown by a notebook cell; ``.passed``, ``.status``). Never raises on
    the answer."""
    from .engine import run_check

    if name not in EXERCISES:
        return _unknown(name)
    return run_check(EXERCISES[name], answer)


def hint(name: str, level: int = 1) -> Feedback:
    """Hint number ``level`` (1 = a nudge, the last = the recipe; never the code)."""
    if name not in EXERCISES:
        return _unknown(name)
    hints = EXERCISES[name].hints
    try:
        level = max(1, int(level))
    except (TypeError, ValueError):
        level = 1
    text = hints[min(level, len(hints)) - 1]
    more = (f" (more: exercises.hint({name!r}, {level + 1}))" if level < len(hints)
            else " (that is the last hint)")
    return Feedback(name, "info", f"Hint {min(level, len(hints))}/{len(hints)} for {name}: "
                    f"{text}{more}")


def solution(name: str):
    """The reference solution of ``name`` (:mod:`dmlkit.exercises.solutions`): a function, a
    value, or an example explanation for an experiment."""
    from . import solutions

    if name not in solutions.ANSWERS:
        raise KeyError(f"no solution for {name!r}; exercises: {', '.join(EXERCISES)}")
    return solutions.ANSWERS[name]
