"""The reality check (Musgrave et al. 2020): every loss under one protocol, tuned on validation
classes, retrained over seeds, compared with paired intervals.

Musgrave et al. 2020 found that with the same network, embedding size, optimiser, batch and
budget, and hyper-parameters tuned on held-out *training* classes, most of the gains the papers
reported shrink or vanish. The protocol here, on an in-memory task
(:func:`dmlkit.tasks.image_task`: glyphs, digits, Fashion-MNIST):

1. **One protocol** (:class:`Protocol`): network, embedding size, Adam and its learning rate,
   P x K batches and steps are the same for every loss; only the loss and its own
   hyper-parameters differ.
2. **Class-disjoint validation on the training classes** (:func:`class_folds`,
   :func:`fold_tasks`): fold ``i`` trains on the other groups of training classes and scores
   retrieval on group ``i``; the test classes are never looked at while tuning.
3. **An Optuna study per loss** (:func:`tune`): TPE, seeded; objective the mean validation
   MAP@R over the folds; search spaces (:data:`SEARCH_SPACES`) in the papers' symbols
   (``alpha``, ``beta``, ``lam``, ``margin``, ``epsilon``, ``delta``, ...); the paper's default
   setting is the first trial, so the tuned one is never worse on validation.
4. **Retraining over seeds** (:func:`retrain`): the best trial's setting on all training
   classes, one run per seed (:func:`dmlkit.tasks.run_ablation`: a seed gives every loss the
   same initial network and batches), scored on the unseen test classes.
5. **Reading it**: :func:`compare` (:func:`dmlkit.paired.paired_differences`: paired 95 % t
   intervals, "better / worse / cannot tell with n = 5"), :func:`summarize` (each loss's mean
   with a 95 % t interval), :func:`orderings` and :func:`claim_pairs` (the papers' claimed
   ordering beside the measured one; in :mod:`dmlkit.leaderboard`, re-exported here).

>>> from dmlkit import reality, tasks
>>> task = tasks.image_task("glyphs", num_classes=8, num_test_classes=4, images_per_class=4,
...                         size=12)
>>> [len(c) for c in reality.class_folds(task.y, folds=2)]
[4, 4]
>>> sorted(reality.search_space("multi_similarity"))
['alpha', 'beta', 'epsilon', 'lam']

Search ranges: wide, around each paper's default (log-uniform for scales and temperatures), in
the spirit of Musgrave et al. 2020's Bayesian search; they are dmlkit's choice, not copied from
that paper. A range whose edge a saved run's best setting reached was widened (a best value
at an edge says the optimum may lie outside): multi-similarity's, see :data:`SEARCH_SPACES`.
Where a loss has a trainable part (the proxies of Proxy-Anchor and ProxyNCA) it gets
``Protocol.loss_lr_mult`` times the network's learning rate (100, the official Proxy-Anchor
recipe); the losses without parameters are not affected by it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from . import paired as _paired
from . import tasks as _tasks
from .leaderboard import (CLAIMS, MUSGRAVE_METHODS, claim_pairs, claim_sentence,
                          claimed_ordering, orderings)

__all__ = ["CLAIMS", "DEFAULT_LOSSES", "LABELS", "MUSGRAVE_METHODS", "Protocol",
           "RealityCheck", "SAVED", "SAVED_RUNS", "SEARCH_SPACES", "SYMBOLS", "Range",
           "batch_shape", "claim_pairs", "claim_sentence", "claimed_ordering", "class_folds",
           "compare", "fold_tasks", "load_saved", "orderings", "paper_defaults",
           "require_optuna", "retrain", "run", "save", "search_space", "suggest", "summarize",
           "trials_frame", "tune"]

#: The package resources of the saved larger runs (per-seed rows, configuration beside each):
#: glyphs (notebook 13) and Fashion-MNIST (notebook 10).
SAVED = "resources/reality_check.csv"
SAVED_RUNS = {"glyphs": SAVED, "fashion_mnist": "resources/reality_check_fashion_mnist.csv"}


class Range(NamedTuple):
    """A hyper-parameter's search range: uniform on [low, high], or log-uniform with ``log``."""

    low: float
    high: float
    log: bool = False


#: The losses of the reality check, in the order its tables show them.
DEFAULT_LOSSES: tuple[str, ...] = ("contrastive", "triplet", "lifted_structure", "npair",
                                   "binomial_deviance", "multi_similarity", "proxy_nca",
                                   "proxy_anchor")

#: Display names.
LABELS: dict[str, str] = {
    "contrastive": "contrastive", "triplet": "triplet", "lifted_structure": "lifted structure",
    "npair": "N-pair", "binomial_deviance": "binomial deviance",
    "multi_similarity": "multi-similarity", "proxy_nca": "ProxyNCA",
    "proxy_anchor": "Proxy-Anchor",
}

#: The searched parameters as a reader sees them: the papers' symbols (others by name).
SYMBOLS: dict[str, str] = {"alpha": "α", "beta": "β", "lam": "λ", "epsilon": "ε", "delta": "δ",
                           "l2_reg": "L2 weight"}

#: Search space per loss, in the losses' own parameter names (the papers' symbols); every other
#: parameter keeps its default (e.g. contrastive's squared hinges, triplet over all triplets).
SEARCH_SPACES: dict[str, dict[str, Range]] = {
    # distances of unit vectors lie in [0, 2]
    "contrastive": {"margin": Range(0.1, 2.0)},
    "triplet": {"margin": Range(0.01, 1.0)},
    "lifted_structure": {"margin": Range(0.1, 2.0)},
    "npair": {"l2_reg": Range(1e-4, 1e-1, log=True)},
    "binomial_deviance": {"alpha": Range(0.5, 20.0, log=True),
                          "beta": Range(1.0, 100.0, log=True), "lam": Range(0.0, 1.0)},
    # widened after a glyph run (alpha 0.5-20, beta 1-100, epsilon 0-0.5) tuned beta to 1.45,
    # epsilon to 0.497 (both at an edge) and alpha to 15.3: beta now reaches 0.1 (a nearly
    # linear, averaging negative term), epsilon 2 (cosines of unit vectors differ by at most 2:
    # VTHM keeps every pair, no mining), alpha 50
    "multi_similarity": {"alpha": Range(0.5, 50.0, log=True),
                         "beta": Range(0.1, 100.0, log=True), "lam": Range(0.0, 1.0),
                         "epsilon": Range(0.0, 2.0)},
    "proxy_nca": {"scale": Range(1.0, 64.0, log=True)},
    "proxy_anchor": {"alpha": Range(1.0, 64.0, log=True), "delta": Range(0.0, 0.5)},
}


@dataclass(frozen=True)
class Protocol:
    """What every loss shares. ``steps`` Adam steps at ``lr`` on P x K batches, a
    :func:`dmlkit.tasks.build_net` of ``width`` to ``embedding_dim``; ``folds`` class-disjoint
    validation folds, ``trials`` Optuna trials per loss (TPE, seeded with ``study_seed``, the
    first ``startup_trials`` random; None: half the trials, at most 10); the best setting
    retrained for each of ``seeds``. ``objective``: the validation metric maximised
    (``"map@r"`` or ``"recall@1"``). ``loss_lr_mult``: learning-rate factor of a loss's own
    parameters (proxies)."""

    steps: int = 60
    P: int = 8
    K: int = 4
    lr: float = 2e-3
    embedding_dim: int = 32
    width: int = 16
    loss_lr_mult: float = 100.0
    folds: int = 3
    trials: int = 8
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    study_seed: int = 0
    startup_trials: int | None = None
    objective: str = "map@r"
    start_from_defaults: bool = True

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.objective not in ("map@r", "recall@1"):
            raise ValueError(f"objective must be 'map@r' or 'recall@1', got {self.objective!r}")
        if int(self.folds) < 2:
            raise ValueError(f"folds must be >= 2 (class-disjoint k-fold), got {self.folds}")
        if int(self.trials) < 1 or int(self.steps) < 1:
            raise ValueError(f"trials and steps must be >= 1, got {self.trials}, {self.steps}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")

    def n_startup(self) -> int:
        if self.startup_trials is not None:
            return int(self.startup_trials)
        return max(1, min(10, int(self.trials) // 2))

    def train_kwargs(self, num_classes: int) -> dict:
        """The :func:`dmlkit.train.train_embedding` options for a task of ``num_classes``
        training classes (P and K by :func:`batch_shape`)."""
        P, K = batch_shape(num_classes, self.P, self.K)
        return dict(steps=int(self.steps), P=P, K=K, lr=float(self.lr),
                    loss_lr_mult=float(self.loss_lr_mult),
                    embedding_dim=int(self.embedding_dim), width=int(self.width))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return d


def batch_shape(num_classes: int, P: int, K: int) -> tuple[int, int]:
    """``(P, K)`` for a task of ``num_classes`` classes: P x K when there are at least P
    classes; else every class per batch and K raised so that the batch keeps about P x K images
    (e.g. Fashion-MNIST's 5 training classes: 5 x 7 for 8 x 4).

    >>> batch_shape(20, 8, 4), batch_shape(5, 8, 4)
    ((8, 4), (5, 7))
    """
    if num_classes >= P:
        return int(P), int(K)
    if num_classes < 2:
        raise ValueError(f"a P x K batch needs at least 2 classes, got {num_classes}")
    return int(num_classes), math.ceil(P * K / num_classes)


# ---------------------------------------------------------------------------- search spaces


def _check_loss(loss: str, spaces: Mapping[str, Mapping] | None = None) -> None:
    from . import losses as _losses

    spaces = SEARCH_SPACES if spaces is None else spaces
    if loss not in _losses.available():
        raise ValueError(f"unknown loss {loss!r}; the reality check knows "
                         f"{sorted(spaces)} (dmlkit.losses.available() lists every loss)")
    if loss not in spaces:
        raise ValueError(f"no search space for loss {loss!r}; give one with "
                         f"spaces={{{loss!r}: {{'param': Range(low, high)}}}} (known: "
                         f"{sorted(spaces)})")


def search_space(loss: str, spaces: Mapping[str, Mapping] | None = None) -> dict[str, Range]:
    """The search space of ``loss`` (``{parameter: Range}``); a clear error for an unknown
    loss or one without a space."""
    spaces = SEARCH_SPACES if spaces is None else spaces
    _check_loss(loss, spaces)
    return {k: Range(*v) for k, v in spaces[loss].items()}


def paper_defaults(loss: str, spaces: Mapping[str, Mapping] | None = None) -> dict[str, float]:
    """The loss's default values (its paper's) of the searched parameters."""
    import inspect

    from . import losses as _losses

    space = search_space(loss, spaces)
    cls = type(_losses.build(loss, **({"num_classes": 2, "embedding_dim": 2}
                                      if loss.startswith("proxy") else {})))
    sig = inspect.signature(cls.__init__).parameters
    return {k: float(sig[k].default) for k in space}


def suggest(trial, loss: str, spaces: Mapping[str, Mapping] | None = None) -> dict[str, float]:
    """One setting of ``loss``'s search space drawn by an Optuna ``trial``."""
    return {k: float(trial.suggest_float(k, r.low, r.high, log=r.log))
            for k, r in search_space(loss, spaces).items()}


def require_optuna():
    """The ``optuna`` module, or an ImportError with the install command."""
    try:
        import optuna
    except ImportError:
        raise ImportError("the reality check tunes with Optuna, which is not installed: "
                          "pip install optuna (or pip install -e '.[notebooks]')") from None
    return optuna


# ---------------------------------------------------------------------------- folds


def class_folds(labels, folds: int = 3, seed: int = 0) -> list[np.ndarray]:
    """The validation classes of each of ``folds`` class-disjoint folds: the classes of
    ``labels``, shuffled with ``seed`` and cut into ``folds`` groups as equal as possible
    (sorted within a group). Every validation group needs at least 2 classes (a retrieval
    query needs a class besides its own) and so does every training part."""
    classes = np.unique(np.asarray(labels))
    if int(folds) < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if len(classes) < 2 * int(folds):
        raise ValueError(f"{folds} class-disjoint folds need at least {2 * int(folds)} training "
                         f"classes (2 per validation fold), the task has {len(classes)}: use "
                         f"folds <= {max(len(classes) // 2, 1)} or more training classes")
    order = np.random.default_rng(seed).permutation(classes)
    return [np.sort(part) for part in np.array_split(order, int(folds))]


def fold_tasks(task: _tasks.ImageTask, folds: int = 3, seed: int = 0
               ) -> list[_tasks.ImageTask]:
    """One :class:`~dmlkit.tasks.ImageTask` per fold, built from the *training* images only:
    ``X`` / ``y`` the classes outside the fold, ``X_test`` / ``y_test`` the fold's classes
    (labels renumbered 0..C-1 in both). ``task.X_test`` is never used."""
    out = []
    for i, val in enumerate(class_folds(task.y, folds, seed)):
        held = torch.as_tensor(np.isin(task.y.numpy(), val))
        relabel = [torch.unique(y, return_inverse=True)[1] for y in (task.y[~held], task.y[held])]
        out.append(_tasks.ImageTask(task.X[~held], relabel[0], task.X[held], relabel[1],
                                    name=f"{task.name} fold {i}"))
    return out


# ---------------------------------------------------------------------------- tuning


def tune(task: _tasks.ImageTask, loss: str, protocol: Protocol = Protocol(), *,
         spaces: Mapping[str, Mapping] | None = None, progress: bool = False):
    """An Optuna study (maximised, TPE seeded with ``protocol.study_seed``) of ``loss``'s
    hyper-parameters on the class-disjoint validation folds of ``task``'s training classes.

    Each trial trains ``protocol.steps`` steps on every fold (seed ``study_seed``) and scores
    ``protocol.objective`` on the fold's held-out classes; the trial's value is the mean over
    the folds (a non-finite score, a diverged run, counts as 0 and is marked in the trial's
    ``diverged`` attribute). With ``start_from_defaults`` the paper's defaults are trial 0.
    Returns the study (``study.best_params`` is the setting :func:`run` retrains).
    """
    from .train import train_embedding

    optuna = require_optuna()
    space = search_space(loss, spaces)
    tasks_ = fold_tasks(task, protocol.folds, protocol.study_seed)
    sampler = optuna.samplers.TPESampler(seed=int(protocol.study_seed),
                                         n_startup_trials=protocol.n_startup())
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", sampler=sampler,
                                    study_name=f"reality_check:{loss}")
        if protocol.start_from_defaults:
            defaults = paper_defaults(loss, spaces)
            study.enqueue_trial({k: min(max(v, space[k].low), space[k].high)
                                 for k, v in defaults.items()})

        def objective(trial) -> float:
            params = suggest(trial, loss, spaces)
            values = [float(train_embedding(t, loss, loss_params=params,
                                            seed=int(protocol.study_seed),
                                            **protocol.train_kwargs(t.num_classes)
                                            ).scores[protocol.objective]) for t in tasks_]
            trial.set_user_attr("fold_values", values)
            trial.set_user_attr("diverged", not all(math.isfinite(v) for v in values))
            return float(np.mean([v if math.isfinite(v) else 0.0 for v in values]))

        study.optimize(objective, n_trials=int(protocol.trials), show_progress_bar=progress)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


def trials_frame(study, loss: str) -> pd.DataFrame:
    """One row per trial: loss, trial, value, params (JSON), fold_values, diverged."""
    rows = [{"loss": loss, "trial": t.number, "value": t.value,
             "params": json.dumps(t.params, sort_keys=True),
             "fold_values": json.dumps(t.user_attrs.get("fold_values", [])),
             "diverged": bool(t.user_attrs.get("diverged", False))} for t in study.trials]
    return pd.DataFrame(rows)


def retrain(task: _tasks.ImageTask, loss: str, params: Mapping[str, float],
            protocol: Protocol = Protocol()) -> pd.DataFrame:
    """``loss`` with ``params`` trained on all of ``task``'s training classes once per seed of
    ``protocol.seeds`` (:func:`dmlkit.tasks.run_ablation`) and scored on its unseen test
    classes; one row per seed with a ``params`` column (JSON)."""
    df = _tasks.run_ablation(task, {loss: (loss, dict(params))}, seeds=protocol.seeds,
                             progress=False, **protocol.train_kwargs(task.num_classes))
    df.insert(2, "params", json.dumps(dict(params), sort_keys=True))
    return df


# ---------------------------------------------------------------------------- the whole check


@dataclass
class RealityCheck:
    """What :func:`run` returns: ``frame`` one row per (loss, seed) (loss, seed, params,
    untrained_recall@1, untrained_map@r, recall@1, map@r, seconds, validation: the best trial's
    mean validation score), ``trials`` one row per Optuna trial, ``best`` ``{loss: params}``
    and the ``config`` (protocol, data set, versions)."""

    frame: pd.DataFrame
    trials: pd.DataFrame
    best: dict
    config: dict = field(default_factory=dict)


def _one_loss(task, loss, protocol, spaces):
    study = tune(task, loss, protocol, spaces=spaces)
    best = {k: float(v) for k, v in study.best_params.items()}
    df = retrain(task, loss, best, protocol)
    df["validation"] = float(study.best_value)
    return trials_frame(study, loss), best, df


def run(task: _tasks.ImageTask, losses: Sequence[str] = DEFAULT_LOSSES,
        protocol: Protocol = Protocol(), *, spaces: Mapping[str, Mapping] | None = None,
        workers: int = 1, log: Callable[[str], None] | None = None,
        dataset: Mapping | None = None) -> RealityCheck:
    """The reality check of ``losses`` on ``task``: per loss :func:`tune`, then
    :func:`retrain` of the best setting over ``protocol.seeds``. ``workers``: losses handled
    at once (processes; every study and run is seeded on its own, so the results do not depend
    on it). ``log``: called with a line per finished loss. ``dataset``: what built ``task``
    (name and options), kept in the config."""
    losses = list(losses)
    if not losses:
        raise ValueError("give at least one loss")
    if len(set(losses)) != len(losses):
        raise ValueError(f"losses must be distinct, got {losses}")
    for loss in losses:
        _check_loss(loss, SEARCH_SPACES if spaces is None else spaces)
    optuna = require_optuna()
    class_folds(task.y, protocol.folds, protocol.study_seed)   # too few classes: fail now
    jobs = [(task, loss, protocol, spaces) for loss in losses]
    pool = None
    if int(workers) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawned, not forked: a child forked from a parent whose torch thread pool is up can
        # hang at its first parallel operation (it did, after loading Fashion-MNIST)
        pool = ProcessPoolExecutor(int(workers), mp_context=mp.get_context("spawn"),
                                   initializer=torch.set_num_threads,
                                   initargs=(torch.get_num_threads(),))
    results = []
    try:
        for res in (pool.map if pool else map)(_one_loss, *zip(*jobs)):
            results.append(res)
            _log_loss(log, res)
    finally:
        if pool is not None:
            pool.shutdown()
    trials = pd.concat([r[0] for r in results], ignore_index=True)
    best = {loss: r[1] for loss, r in zip(losses, results)}
    frame = pd.concat([r[2] for r in results], ignore_index=True)
    config = {"protocol": protocol.as_dict(), "losses": losses,
              "dataset": dict(dataset or {"name": task.name}),
              "train_classes": int(task.num_classes),
              "test_classes": len(torch.unique(task.y_test)),
              "train_images": len(task.y), "test_images": len(task.y_test),
              "best_params": best,
              "best_validation": {loss: float(r[2]["validation"].iloc[0])
                                  for loss, r in zip(losses, results)},
              "search_spaces": {loss: {k: list(v) for k, v in search_space(
                  loss, spaces).items()} for loss in losses},
              "versions": {"optuna": optuna.__version__, "torch": torch.__version__}}
    return RealityCheck(frame=frame, trials=trials, best=best, config=config)


def _log_loss(log, result) -> None:
    if log is None:
        return
    trials, best, df = result
    loss = df["loss"].iloc[0]
    log(f"{LABELS.get(loss, loss):18s} best validation {100 * df['validation'].iloc[0]:.1f} "
        f"({len(trials)} trials) {json.dumps({k: round(v, 4) for k, v in best.items()})}; "
        f"test MAP@R {100 * df['map@r'].mean():.1f}, R@1 {100 * df['recall@1'].mean():.1f} "
        f"over {len(df)} seeds")


# ---------------------------------------------------------------------------- reading it


def summarize(frame: pd.DataFrame, metrics: Sequence[str] = ("map@r", "recall@1"),
              confidence: float = 0.95, scale: float = 100.0) -> pd.DataFrame:
    """Each loss's mean over the seeds with a ``confidence`` t interval
    (:func:`dmlkit.paired.interval` of the values), times ``scale``: columns ``n``,
    ``<metric>``, ``<metric>_low``, ``<metric>_high`` per metric, losses in the frame's order."""
    missing = [c for c in ("loss", *metrics) if c not in frame]
    if missing:
        raise ValueError(f"columns {missing} not in the frame; it has {list(frame.columns)}")
    rows = []
    for loss, part in frame.groupby("loss", sort=False):
        row = {"loss": loss, "n": len(part)}
        for m in metrics:
            v = scale * part[m].to_numpy(float)
            v = v[np.isfinite(v)]
            low, high = _paired.interval(v, confidence) if len(v) else (math.nan, math.nan)
            row.update({m: float(v.mean()) if len(v) else math.nan,
                        f"{m}_low": low, f"{m}_high": high})
        rows.append(row)
    return pd.DataFrame(rows).set_index("loss")


def compare(frame: pd.DataFrame, baseline: str = "contrastive",
            metrics: Sequence[str] = ("map@r", "recall@1"), scale: float = 100.0,
            **kwargs) -> pd.DataFrame:
    """Every loss against ``baseline``, paired by seed:
    :func:`dmlkit.paired.paired_differences` (95 % t intervals, verdicts) on the frame."""
    if baseline not in set(frame["loss"]):
        raise ValueError(f"baseline {baseline!r} is not among the losses "
                         f"{list(dict.fromkeys(frame['loss']))}")
    return _paired.paired_differences(frame, baseline=baseline, metrics=list(metrics),
                                      run="loss", scale=scale, **kwargs)


# ---------------------------------------------------------------------------- saved run


def save(result: RealityCheck, path: str | Path, **extra) -> tuple[Path, Path]:
    """Write the per-seed frame to ``path`` (CSV) and the configuration (``result.config`` and
    ``extra``) beside it as ``<path>.json`` (same stem); returns both paths."""
    from .atomic import atomic_write_text

    path = Path(path)
    cols = [c for c in ("loss", "seed", "params", "map@r", "recall@1", "untrained_map@r",
                        "untrained_recall@1", "validation", "seconds") if c in result.frame]
    atomic_write_text(path, result.frame[cols].to_csv(index=False, float_format="%.6g"))
    config_path = path.with_suffix(".json")
    atomic_write_text(config_path, json.dumps({**result.config, **extra}, indent=2,
                                              sort_keys=True) + "\n")
    return path, config_path


def load_saved(path: str | Path | None = None, dataset: str = "glyphs"
               ) -> tuple[pd.DataFrame, dict]:
    """A saved run: ``(frame, config)`` of ``path`` and its ``.json``; default the package's
    run on ``dataset`` (:data:`SAVED_RUNS`: ``dmlkit/resources/reality_check*.csv``)."""
    if path is None and dataset not in SAVED_RUNS:
        raise ValueError(f"no saved run on {dataset!r}; saved: {sorted(SAVED_RUNS)}")
    files = resources.files("dmlkit")
    csv = files.joinpath(SAVED_RUNS[dataset]) if path is None else Path(path)
    config = (files.joinpath(SAVED_RUNS[dataset].replace(".csv", ".json")) if path is None
              else Path(path).with_suffix(".json"))
    with csv.open() as fh:
        return pd.read_csv(fh), json.loads(config.read_text())
