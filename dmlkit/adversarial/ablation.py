"""Where DAML's gain comes from: the standard ablation of the generator and of the terms it
adds to the metric network.

Under ``routing="full"`` (the authors' Chainer code and pytorch-metric-learning's trainer:
one backward, nothing detached) the metric network receives not only the metric loss ``J_m``
on the synthetic negatives but also the generator objective ``J_gen = J_hard + lambda1 J_reg
+ lambda2 J_adv``: ``J_hard = ||x~ - x||^2`` and ``J_reg = ||x~ - x-||^2`` reach the trunk
through the generator's inputs and pull each anchor and its negative together, and ``J_adv``
reaches the head. The control of :mod:`~dmlkit.adversarial.comparison` (the identity
generator, no generator objective) removes all of that at once, so "DAML minus control" mixes
the learned generator with these extra terms. The runs of :func:`ablation_runs` take them
apart, each one setting away from DAML (per design, i.e. preset):

======================  ======================================================================
variant                 what the metric network trains on
======================  ======================================================================
``control``             ``J_m`` on the real negative (identity generator, no ``J_gen``)
``daml``                DAML as the design runs it
``daml no-adv``         DAML with ``lambda2 = 0`` (no ``J_adv``)
``daml split``          DAML with ``J_gen`` sent to the generator only (``routing="split"``):
                        the trunk and head get ``J_m`` alone (only under full routing)
``midpoint``            no generator parameters: the fixed negative ``a + (n - a) / 2``
                        (through the design's output ReLU) with DAML's ``J_gen`` computed and
                        routed as in DAML (:class:`~dmlkit.adversarial.generators.
                        InterpolationGenerator`)
``control+reg``         the control plus ``J_hard + lambda1 J_reg`` at ``G = identity``
                        (``||n - a||^2``, the pull of anchor and negative) routed as in DAML,
                        ``lambda2 = 0`` (only under full routing)
======================  ======================================================================

With the "dmlkit" design (``routing="separate"``) ``J_gen`` never reaches the metric
network, so ``daml split`` and ``control+reg`` would repeat ``daml`` and ``control``; they
are left out (:func:`ablation_runs` says so in ``skipped``). DAML+SP gets the same variants
(``daml+sp``, ``daml+sp no-adv``, ``daml+sp split``, ``midpoint+sp``: the positive fixed at
``(a + p) / 2``, the minimiser of its objective for ``lambda1 = 1``), compared with the same
control. ``own_trunk_lr``: the designs also run at their own trunk learning rate
(``trunk_lr_factor`` of the preset, 1/1000 after the warm-up, for a pretrained trunk) next
to the benchmark's shared override, DAML and its control, named ``... @ preset trunk lr``.

:func:`run_ablation` trains every run on the same batches and seeds
(:func:`~dmlkit.adversarial.comparison.run_comparison`); :func:`ablation_table` gives every
run's paired difference to its control per metric with a 95 % interval and the verdict
(:mod:`dmlkit.paired`). ``benchmarks/adversarial.py --ablation`` runs it and saves the
table as the package resource ``adversarial_ablation.csv`` (:func:`load_ablation`).

>>> runs, skipped = ablation_runs(designs=("official",), sp_designs=())
>>> [r.name for r in runs]                                         # doctest: +NORMALIZE_WHITESPACE
['control/official', 'daml/official', 'daml no-adv/official', 'daml split/official',
 'midpoint/official', 'control+reg/official', 'control/official @ preset trunk lr',
 'daml/official @ preset trunk lr']
>>> runs[3].settings, runs[4].generator, runs[5].settings["generator_terms"]
({'routing': 'split'}, 'interpolate', True)
>>> [r.name for r in ablation_runs(designs=("dmlkit",), sp_designs=(),
...                                own_trunk_lr=())[0]]
['control/dmlkit', 'daml/dmlkit', 'daml no-adv/dmlkit', 'midpoint/dmlkit']
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from .. import paired
from .comparison import RunSpec, run_comparison
from .presets import PRESETS, preset_settings

__all__ = ["ABLATION_RESOURCE", "CONTRASTS", "VARIANTS", "ablation_runs", "ablation_table",
           "contrasts", "load_ablation", "run_ablation"]

#: what each variant of :func:`ablation_runs` is (display text)
VARIANTS = {
    "control": "control: real negative, J_m only",
    "daml": "DAML",
    "daml no-adv": "DAML without J_adv (lambda2 = 0)",
    "daml split": "DAML, J_gen to the generator only",
    "midpoint": "fixed midpoint, DAML's J_gen, no generator parameters",
    "control+reg": "control + J_hard + lambda1 J_reg on the trunk",
    "daml+sp": "DAML+SP",
    "daml+sp no-adv": "DAML+SP without J_adv",
    "daml+sp split": "DAML+SP, J_gen and J+_gen to the generators only",
    "midpoint+sp": "fixed midpoints (negative and positive), the generators' terms",
}
#: file name of the saved ablation table in ``dmlkit/resources``
ABLATION_RESOURCE = "adversarial_ablation.csv"
#: suffix of the runs at the design's own trunk learning rate
OWN_TRUNK_LR = " @ preset trunk lr"


def _variants(design: str, method: str) -> list[tuple[str, str, dict]]:
    """(variant, generator, settings) of one design and method, without the control."""
    full = preset_settings(design, method)["routing"] == "full"
    sp = "+sp" if method == "daml+sp" else ""
    out = [(f"daml{sp}", "mlp", {}), (f"daml{sp} no-adv", "mlp", {"lambda2": 0.0})]
    if full:
        out.append((f"daml{sp} split", "mlp", {"routing": "split"}))
    out.append((f"midpoint{sp}", "interpolate", {}))
    if full and not sp:
        out.append(("control+reg", "identity", {"generator_terms": True, "lambda2": 0.0}))
    return out


def ablation_runs(designs: Sequence[str] = ("official", "pml", "dmlkit"),
                  sp_designs: Sequence[str] = ("official",),
                  own_trunk_lr: Sequence[str] = ("official",)
                  ) -> tuple[list[RunSpec], list[str]]:
    """The ablation's runs (module docstring) and the list of variants left out because
    they would repeat another run (with the reason). designs: DAML's variants per preset;
    sp_designs: the presets whose DAML+SP variants run too; own_trunk_lr: the presets whose
    control and DAML also run at the preset's own ``trunk_lr_factor``."""
    known = set(PRESETS)
    bad = [d for d in (*designs, *sp_designs, *own_trunk_lr) if d not in known]
    if bad:
        raise ValueError(f"unknown design(s) {bad}; known presets: {', '.join(PRESETS)}")
    runs: list[RunSpec] = []
    skipped: list[str] = []
    for design in dict.fromkeys((*designs, *sp_designs)):
        control = f"control/{design}"
        runs.append(RunSpec(control, design, "daml", generator="identity"))
        methods = (["daml"] if design in designs else []) + \
            (["daml+sp"] if design in sp_designs else [])
        for method in methods:
            for variant, gen, settings in _variants(design, method):
                runs.append(RunSpec(f"{variant}/{design}", design, method, generator=gen,
                                    settings=settings, control=control))
            if preset_settings(design, method)["routing"] != "full":
                sp = "+sp" if method == "daml+sp" else ""
                skipped.append(f"daml{sp} split/{design} and control+reg/{design}: the "
                               f"design's separate routing already keeps J_gen out of the "
                               "metric network (they would repeat daml and control)")
        if design in own_trunk_lr:
            factor = PRESETS[design]["trunk_lr_factor"]
            own = {"trunk_lr_factor": factor}
            runs.append(RunSpec(control + OWN_TRUNK_LR, design, "daml", generator="identity",
                                settings=own))
            runs.append(RunSpec(f"daml/{design}{OWN_TRUNK_LR}", design, "daml", settings=own,
                                control=control + OWN_TRUNK_LR))
    return runs, list(dict.fromkeys(skipped))


def run_ablation(designs: Sequence[str] = ("official", "pml", "dmlkit"),
                 sp_designs: Sequence[str] = ("official",),
                 own_trunk_lr: Sequence[str] = ("official",), **kwargs) -> pd.DataFrame:
    """Train every run of :func:`ablation_runs` for every seed (``kwargs``: those of
    :func:`~dmlkit.adversarial.comparison.run_comparison`, e.g. ``seeds``, ``dataset``,
    ``epochs``, ``workers``) and return one row per run and seed."""
    runs, _ = ablation_runs(designs, sp_designs, own_trunk_lr)
    return run_comparison(runs, **kwargs)


def ablation_table(frame: pd.DataFrame, metrics: Sequence[str] = ("recall@1", "map@r", "nmi"),
                   scale: float = 100.0, method: str = "t") -> pd.DataFrame:
    """Every compared run's paired difference to its control (:mod:`dmlkit.paired`, ``x
    scale``), one row per (run, metric), with ``variant`` and ``design`` columns and the
    runs in the frame's order."""
    runs = frame.drop_duplicates("run")
    base_of = {r: c for r, c in zip(runs["run"], runs["control"]) if isinstance(c, str)}
    table = paired.paired_differences(frame, baseline=base_of, metrics=metrics, scale=scale,
                                      method=method)
    name = table["run"].str.split(OWN_TRUNK_LR).str[0]
    table.insert(1, "variant", name.str.split("/").str[0])
    table.insert(2, "design", name.str.split("/").str[1]
                 + table["run"].str.contains(OWN_TRUNK_LR, regex=False).map(
                     {True: OWN_TRUNK_LR, False: ""}))
    return table


#: the questions the ablation answers: (question, run, baseline) with ``{d}`` the design
CONTRASTS = (
    ("DAML vs its control", "daml/{d}", "control/{d}"),
    ("the learned generator over a fixed midpoint (same terms, same routing)",
     "daml/{d}", "midpoint/{d}"),
    ("J_gen reaching the metric network (full vs split routing)", "daml/{d}",
     "daml split/{d}"),
    ("J_adv (lambda2 = 1 vs 0)", "daml/{d}", "daml no-adv/{d}"),
    ("the pull terms alone on the control", "control+reg/{d}", "control/{d}"),
    ("DAML+SP vs DAML", "daml+sp/{d}", "daml/{d}"),
    ("the learned generators over fixed midpoints, DAML+SP", "daml+sp/{d}",
     "midpoint+sp/{d}"),
    ("DAML vs its control at the design's own trunk lr", "daml/{d}" + OWN_TRUNK_LR,
     "control/{d}" + OWN_TRUNK_LR),
)


def contrasts(frame: pd.DataFrame, metrics: Sequence[str] = ("recall@1", "map@r", "nmi"),
              scale: float = 100.0) -> pd.DataFrame:
    """The paired comparisons of :data:`CONTRASTS` that the frame's runs allow, per design
    (the frame's presets, in order), one row per (question, design, metric): the
    :func:`dmlkit.paired.paired_differences` columns plus ``question`` and ``design``."""
    present = set(frame["run"])
    designs = list(dict.fromkeys(r.split("/")[1].split(OWN_TRUNK_LR)[0]
                                 for r in frame["run"] if "/" in r))
    parts = []
    for question, run, base in CONTRASTS:
        for d in designs:
            r, b = run.format(d=d), base.format(d=d)
            if r in present and b in present:
                t = paired.paired_differences(frame, baseline={r: b}, metrics=metrics,
                                              runs=[r], scale=scale)
                t.insert(0, "question", question)
                t.insert(1, "design", d)
                parts.append(t)
    if not parts:
        raise ValueError("the frame holds none of the ablation's contrasts; run "
                         "ablation_runs() first")
    return pd.concat(parts, ignore_index=True)


def load_ablation(path: str | Path | None = None) -> pd.DataFrame:
    """The saved per-seed table of ``benchmarks/adversarial.py --ablation`` (one row per run
    and seed), from ``path`` or the package resource :data:`ABLATION_RESOURCE`. Raises
    ValueError saying how to make it when absent."""
    if path is None:
        ref = resources.files("dmlkit") / "resources" / ABLATION_RESOURCE
        if not ref.is_file():
            raise ValueError(f"dmlkit/resources/{ABLATION_RESOURCE} is missing: run "
                             "`python benchmarks/adversarial.py --ablation --save` from the "
                             "repository")
        with resources.as_file(ref) as p:
            return pd.read_csv(p)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no ablation table at {path}: run `python benchmarks/adversarial.py "
                         f"--ablation --save {path}`")
    return pd.read_csv(path)
