"""Training with synthetic negatives: :class:`AdversarialTrainer`, a specialisation of the
training engine (:class:`dmlkit.train.Trainer`), and :func:`fit_adversarial`, its schedule.

The trainer overrides the engine's loss computation (:meth:`AdversarialTrainer.compute_loss`:
the metric loss alone, or triples -> synthetic positives / negatives -> ``J+_gen``, ``J_gen``
and ``J_m``), its backward pass (the gradient routing of :mod:`dmlkit.adversarial`) and its
optimiser steps (separate Adam optimisers for the metric head, the trunk and the generators,
stepped according to the phase); batches, epochs and history rows are the engine's stages.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.nn.functional.normalize(torch.randn(48, 8, generator=g), dim=1)
>>> y = torch.arange(48) % 6
>>> res = fit_adversarial(x, y, "triplet", "daml", epochs=3, warmup_epochs=1, P=4, K=3,
...                       embedding_dim=4, head_hidden=16, generator_hidden=(16,))
>>> [row["phase"] for row in res.history]
['metric', 'generator', 'joint', 'joint']
>>> res.embed(x).shape
torch.Size([48, 4])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_embeddings, check_embeddings_labels, check_labels
from ..train.engine import Trainer
from .generators import HardNegativeGenerator, MetricHead, SyntheticPositiveGenerator
from .objectives import (
    _pairs_by_labels,
    generator_objective,
    metric_loss_with_synthetic,
    synthetic_positive_objective,
)
from .recorder import NegativeRecorder
from .triplets import sample_triplets

__all__ = ["METHODS", "PHASES", "AdversarialResult", "AdversarialTrainer", "fit_adversarial",
           "phase_schedule"]

#: "metric": the loss alone (the baseline); "daml": seed 000; "daml+sp": seed 001
METHODS = ("metric", "daml", "daml+sp")
#: what one step trains: the metric alone, the generator(s) alone, or both
PHASES = ("metric", "generator", "joint")


def _resolve_loss(loss, loss_kwargs: dict | None):
    if isinstance(loss, str):
        from .. import losses as _losses

        return _losses.build(loss, **(loss_kwargs or {})), _losses.get(loss)
    if loss_kwargs:
        raise ValueError("loss_kwargs only apply when loss is given by name")
    if not hasattr(loss, "compute"):
        raise ValueError(f"loss must be a registered loss name or a dmlkit PairLoss, got "
                         f"{type(loss).__name__}")
    return loss, type(loss)


def _auto_negatives(loss_name: str) -> int | None:
    """1 synthetic negative per anchor for triplet / contrastive (official code), all for the
    losses that look at every negative of an anchor (lifted structure, N-pair, ...)."""
    key = loss_name.lower()
    return 1 if ("triplet" in key or "contrastive" in key) else None


def phase_schedule(method: str, epochs: int, warmup_epochs: int,
                   generator_epochs: int) -> list[str]:
    """The phase of every epoch: ``warmup_epochs`` "metric", then ``generator_epochs``
    "generator", then "joint" up to ``epochs`` joint + warm-up epochs; all "metric" for
    ``method="metric"`` (which has no generator epochs).

    >>> phase_schedule("daml", epochs=3, warmup_epochs=1, generator_epochs=1)
    ['metric', 'generator', 'joint', 'joint']
    """
    total = epochs + (generator_epochs if method != "metric" else 0)
    return ["metric" if method == "metric" or e < warmup_epochs else
            "generator" if e < warmup_epochs + generator_epochs else "joint"
            for e in range(total)]


@dataclass
class AdversarialResult:
    """What :func:`fit_adversarial` returns. history: one dict per epoch (phase, mean losses,
    and the evaluation metrics at the epochs where they were computed)."""

    head: nn.Module
    generator: HardNegativeGenerator | None
    positive_generator: SyntheticPositiveGenerator | None
    trunk: nn.Module | None
    loss: nn.Module
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    recorder: NegativeRecorder | None = None

    @torch.no_grad()
    def embed(self, features, batch_size: int = 4096) -> torch.Tensor:
        """Test-time embeddings (N, E) of features (N, D): trunk + head, no generator;
        L2-normalised when the loss normalises."""
        x = check_embeddings(features, "features")
        p = next(self.head.parameters())
        modules = [m for m in (self.trunk, self.head) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        outs = []
        for i in range(0, x.shape[0], batch_size):
            z = x[i:i + batch_size].to(device=p.device, dtype=p.dtype)
            if self.trunk is not None:
                z = self.trunk(z)
            z = self.head(z)
            if getattr(self.loss, "normalize", True):
                z = F.normalize(z, dim=1)
            outs.append(z.cpu())
        for m, mode in zip(modules, modes):
            m.train(mode)
        return torch.cat(outs)


def _set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


class AdversarialTrainer(Trainer):
    """The engine specialised to metric-only, DAML or DAML+SP training on feature batches.

    :func:`fit_adversarial` is the usual entry point (it runs :meth:`fit`); ``step(x, y,
    phase)`` is one training step, usable from a notebook, with phase "metric" (metric loss
    alone), "generator" (generator alone) or "joint"; it returns a dict of floats (the batch's
    objective terms). triplet_scheme: how the generator's triples are drawn
    (:func:`sample_triplets`): "auto" = "npair" (Sohn's pairing) for the N-pair losses,
    "random" otherwise.

    Overridden stages: :meth:`zero_grad`, :meth:`compute_loss`, :meth:`backward`,
    :meth:`step_optimizers` and :meth:`after_step` (the recorder) for the step;
    :meth:`epochs`, :meth:`start_epoch`, :meth:`batches`, :meth:`epoch_row`,
    :meth:`evaluate` for the schedule.
    """

    def __init__(self, loss: nn.Module, head: nn.Module, generator: HardNegativeGenerator | None,
                 positive_generator: SyntheticPositiveGenerator | None = None,
                 trunk: nn.Module | None = None, *, space: str = "feature", lr: float = 1e-3,
                 generator_lr_factor: float = 0.1, trunk_lr_factor: float = 1e-3,
                 lambda1: float = 1.0, lambda2: float = 1.0, lam: float = 1.0,
                 alpha: float = 1.0, alpha_sign: int = -1, negatives_per_anchor: int | None = 1,
                 keep_real_negatives: bool = False, generator_metric_grad: bool = False,
                 weight_decay: float = 0.0, recorder: NegativeRecorder | None = None,
                 seed: int = 0, triplet_scheme: str = "auto"):
        if space not in ("feature", "embedding"):
            raise ValueError(f"space must be 'feature' or 'embedding', got {space!r}")
        if alpha_sign not in (-1, 1):
            raise ValueError(f"alpha_sign must be -1 (seed 000) or +1 (seed 001), got {alpha_sign}")
        if positive_generator is not None and generator is None:
            raise ValueError("a positive generator needs a negative generator")
        self.head, self.trunk = head, trunk
        self.generator, self.positive_generator = generator, positive_generator
        self.space, self.lam = space, float(lam)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        self.alpha, self.alpha_sign = float(alpha), int(alpha_sign)
        self.negatives_per_anchor = negatives_per_anchor
        if triplet_scheme == "auto":
            triplet_scheme = "npair" if _pairs_by_labels(loss) else "random"
        if triplet_scheme not in ("random", "npair"):
            raise ValueError(f"unknown triplet_scheme {triplet_scheme!r}; known: 'auto', "
                             "'random', 'npair'")
        self.triplet_scheme = triplet_scheme
        self.keep_real_negatives = bool(keep_real_negatives)
        self.generator_metric_grad = bool(generator_metric_grad)
        self.recorder = recorder
        self.normalize = bool(getattr(loss, "normalize", True))
        self.rng = torch.Generator().manual_seed(int(seed))
        metric_params = list(head.parameters()) + list(loss.parameters())
        self.opt_metric = torch.optim.Adam(metric_params, lr=lr, weight_decay=weight_decay)
        self.metric_params = metric_params
        self.trunk_params = list(trunk.parameters()) if trunk is not None else []
        self.opt_trunk = (torch.optim.Adam(self.trunk_params, lr=lr * trunk_lr_factor)
                          if self.trunk_params else None)
        gens = [g for g in (generator, positive_generator) if g is not None]
        self.generator_params = [p for g in gens for p in g.parameters()]
        self.opt_generator = (torch.optim.Adam(self.generator_params, lr=lr * generator_lr_factor)
                              if self.generator_params else None)
        if (generator is not None and space == "feature" and hasattr(head, "in_dim")
                and generator.dim != head.in_dim):
            raise ValueError(f"the generator works on {generator.dim}-d vectors but the "
                             f"metric head reads {head.in_dim}-d features")
        super().__init__(head, loss, self.opt_metric)
        self.phase = "joint"

    # the metric D: generator space -> embedding space
    def _metric(self, z: torch.Tensor) -> torch.Tensor:
        e = self.head(z) if self.space == "feature" else z
        return F.normalize(e, dim=1) if self.normalize else e

    def step(self, features: torch.Tensor, labels: torch.Tensor, phase: str = "joint") -> dict:
        """One step of ``phase`` on a batch: features (B, D), labels (B,)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; known: 'metric', 'generator', 'joint'")
        if phase != "metric" and self.generator is None:
            raise ValueError(f"phase {phase!r} needs a generator (method 'daml' or 'daml+sp')")
        self.phase = phase
        return self.train_step((features, labels))

    # ------------------------------------------------------------------------- step stages
    def zero_grad(self) -> None:
        for p in self.metric_params + self.trunk_params + self.generator_params:
            p.grad = None

    def compute_loss(self, features: torch.Tensor, labels: torch.Tensor) -> dict | None:
        """The phase's objective terms, in logging order: ``J_m`` alone in the metric phase;
        else ``J+_gen`` (DAML+SP), ``J_gen``, ``J_hard``, ``J_reg``, ``J_adv`` and ``J_m`` on
        the synthetic negatives. None when the batch has no (anchor, positive, negative)."""
        x = features if self.trunk is None else self.trunk(features)
        emb = self.head(x)
        if self.phase == "metric":
            return {"J_m": self.loss(emb, labels)}
        a, p, n = sample_triplets(labels, self.negatives_per_anchor, self.rng,
                                  self.triplet_scheme)
        if a.numel() == 0:
            return None
        base = x.detach() if self.space == "feature" else emb.detach()
        xa, xp, xn = base[a], base[p], base[n]
        terms: dict[str, torch.Tensor] = {}
        gen_objective = 0.0
        pos_for_neg = xp
        g_pos = None
        if self.positive_generator is not None:
            g_pos = self.positive_generator(xa, xp, xn)
            jp = synthetic_positive_objective(xa, xp, g_pos, lambda1=self.lambda1)
            gen_objective = jp["total"]
            terms["J+_gen"] = jp["total"]
            pos_for_neg = g_pos.detach()
        syn = self.generator(xa, pos_for_neg, xn)
        jg = generator_objective(xa, pos_for_neg, xn, syn, self._metric, lambda1=self.lambda1,
                                 lambda2=self.lambda2, alpha=self.alpha,
                                 alpha_sign=self.alpha_sign)
        gen_objective = gen_objective + jg["total"]
        terms.update({name: jg[key] for name, key in
                      (("J_gen", "total"), ("J_hard", "hard"), ("J_reg", "reg"),
                       ("J_adv", "adv"))})
        syn_in = syn if (self.phase == "joint" and self.generator_metric_grad) else syn.detach()
        syn_emb = self.head(syn_in) if self.space == "feature" else syn_in
        terms["J_m"] = metric_loss_with_synthetic(self.loss, emb, labels, syn_emb, labels[n], a,
                                                  self.keep_real_negatives)
        self._triples = {"generator_objective": gen_objective, "syn_in": syn, "a": a, "n": n,
                         "anchor": xa, "positive": xp, "negative": xn, "synthetic": syn,
                         "synthetic_positive": g_pos, "grad_through_synthetic":
                         syn_in.requires_grad}
        return terms

    def backward(self, terms: dict) -> None:
        """Gradient routing: the metric gets ``lam * J_m`` only (never ``J_adv``); the
        generator(s) ``J_gen`` (+ ``J+_gen``), plus ``lam * J_m`` with
        ``generator_metric_grad``."""
        jm = terms["J_m"]
        if self.phase == "metric":
            (self.lam * jm).backward()
            return
        t = self._triples
        gen_total = t["generator_objective"] + (self.lam * jm if t["grad_through_synthetic"]
                                                else 0.0)
        gen_grads = torch.autograd.grad(gen_total, self.generator_params, retain_graph=True,
                                        allow_unused=True)
        _set_grads(self.generator_params, gen_grads)
        if self.phase == "joint":
            mparams = [q for q in self.metric_params + self.trunk_params if q.requires_grad]
            m_grads = torch.autograd.grad(self.lam * jm, mparams, allow_unused=True)
            _set_grads(mparams, m_grads)

    def step_optimizers(self) -> None:
        """The metric (and trunk) except in the generator phase; the generator(s) except in
        the metric phase."""
        if self.phase != "generator":
            self.opt_metric.step()
            if self.opt_trunk is not None:
                self.opt_trunk.step()
        if self.phase != "metric":
            self.opt_generator.step()

    def after_step(self, inputs: tuple, terms: dict) -> dict[str, float]:
        values = super().after_step(inputs, terms)
        if (self.phase != "metric" and terms and self.recorder is not None
                and self.recorder.wants(self.epoch)):
            t, labels = self._triples, inputs[1]
            with torch.no_grad():
                self.recorder.record(
                    self.epoch, anchor=t["anchor"], positive=t["positive"],
                    negative=t["negative"], synthetic=t["synthetic"],
                    anchor_emb=self._metric(t["anchor"]),
                    positive_emb=self._metric(t["positive"]),
                    negative_emb=self._metric(t["negative"]),
                    synthetic_emb=self._metric(t["synthetic"]), labels=labels[t["a"]],
                    negative_labels=labels[t["n"]], synthetic_positive=t["synthetic_positive"])
        return values

    # ------------------------------------------------------------------------- the schedule
    def fit(self, features: torch.Tensor, labels: torch.Tensor, phases: Sequence[str], *,
            P: int, K: int, batches_per_epoch: int, seed: int, result: AdversarialResult,
            eval_features=None, eval_labels=None, eval_every: int | None = None,
            eval_kwargs: dict | None = None, device: torch.device | None = None,
            progress: bool = False, desc: str = "") -> AdversarialResult:
        """Run one epoch per entry of ``phases`` (:func:`phase_schedule`) of
        ``batches_per_epoch`` P x K batches of (features (N, D), labels (N,)); the history
        rows go to ``result.history``."""
        self.x_all, self.y_all, self.y_np = features, labels, labels.cpu().numpy()
        self.phases, self.P, self.K, self.n_batches = list(phases), P, K, batches_per_epoch
        self.batch_rng = np.random.default_rng(seed)
        self.result, self.history = result, result.history
        self.eval_features, self.eval_labels = eval_features, eval_labels
        self.eval_every, self.eval_kwargs = eval_every, eval_kwargs
        self.device, self.progress, self.desc = device, progress, desc
        return self.run()

    def epochs(self):
        from tqdm.auto import tqdm

        return tqdm(range(len(self.phases)), disable=not self.progress, desc=self.desc)

    def start_epoch(self, epoch: int) -> None:
        self.phase = self.phases[epoch]
        super().start_epoch(epoch)

    def train_mode(self) -> None:
        for m in (self.head, self.generator, self.positive_generator, self.trunk):
            if m is not None:
                m.train()

    def batches(self, epoch: int):
        for idx in _pk_batches(self.y_np, self.P, self.K, self.batch_rng, self.n_batches):
            ib = torch.from_numpy(idx)
            yield self.x_all[ib].to(self.device), self.y_all[ib].to(self.device)

    def epoch_row(self, epoch: int) -> dict:
        return {"epoch": epoch, "phase": self.phase,
                **{k: v / self.steps for k, v in self.sums.items()}}

    def should_evaluate(self, epoch: int) -> bool:
        last = epoch == len(self.phases) - 1
        return self.eval_features is not None and (
            last or bool(self.eval_every and (epoch + 1) % self.eval_every == 0))

    def evaluate(self, epoch: int, row: dict) -> None:
        row.update(_evaluate(self.result, self.eval_features, self.eval_labels,
                             self.eval_kwargs))

    def finish(self) -> AdversarialResult:
        return self.result


def _pk_batches(labels: np.ndarray, P: int, K: int, rng: np.random.Generator, n_batches: int):
    """PK batches of indices: P classes, K samples each (with replacement when a class is
    smaller than K)."""
    classes = np.unique(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in classes}
    for _ in range(n_batches):
        chosen = rng.choice(classes, size=P, replace=False)
        idx = [rng.choice(by_class[c], size=K, replace=len(by_class[c]) < K) for c in chosen]
        yield np.concatenate(idx)


def fit_adversarial(features, labels, loss: str | nn.Module = "triplet", method: str = "daml", *,
                    loss_kwargs: dict | None = None, head: str | nn.Module = "mlp",
                    embedding_dim: int = 64, head_hidden: int = 512,
                    trunk: nn.Module | None = None, space: str = "feature",
                    generator_hidden: Sequence[int] = (512,), normalize_synthetic: bool = False,
                    epochs: int = 30, warmup_epochs: int = 10, generator_epochs: int = 1,
                    lr: float = 1e-3, generator_lr_factor: float = 0.1,
                    trunk_lr_factor: float = 1e-3, weight_decay: float = 0.0,
                    lambda1: float = 1.0, lambda2: float = 1.0, lam: float = 1.0,
                    alpha: float = 1.0, alpha_sign: int = -1,
                    negatives_per_anchor: int | str | None = "auto",
                    keep_real_negatives: bool = False, generator_metric_grad: bool = False,
                    triplet_scheme: str = "auto", P: int = 8, K: int = 4,
                    batches_per_epoch: int | None = None, seed: int = 0,
                    recorder: NegativeRecorder | None = None, eval_features=None,
                    eval_labels=None, eval_every: int | None = None,
                    eval_kwargs: dict | None = None,
                    device: str | torch.device = "cpu", progress: bool = False
                    ) -> AdversarialResult:
    """Train a metric head on cached features with metric-only, DAML or DAML+SP.

    features: (N, D) float (cached backbone features); labels: (N,) int. loss: a registered
    pair-based loss name (``losses.available()``) or a PairLoss. method: "metric" (the loss
    alone, the baseline), "daml" (seed 000) or "daml+sp" (seed 001).
    Schedule: epochs [0, warmup_epochs) metric alone; then ``generator_epochs`` of generator
    alone (metric frozen); then joint training until ``epochs`` (total, warm-up included). For
    "metric" every epoch is metric-only. An epoch is ``ceil(N / (P K))`` PK batches unless
    ``batches_per_epoch``. negatives_per_anchor: synthetic negatives per anchor; "auto" = 1 for
    triplet / contrastive losses (official code), all of the anchor's batch negatives otherwise.
    Other knobs: see the module docstring (defaults: lambda1 = lambda2 = 1, alpha = 1,
    alpha_sign = -1, generator lr = lr / 10, trunk lr = lr / 1000).
    eval_features / eval_labels: evaluated with :func:`dmlkit.evaluate.evaluate` every
    ``eval_every`` epochs (default: at the end only) into ``history``.
    Returns an :class:`AdversarialResult`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    x_all, y_all = check_embeddings_labels(features, labels)
    x_all = x_all.float()
    loss_mod, loss_cls = _resolve_loss(loss, loss_kwargs)
    loss_name = loss if isinstance(loss, str) else loss_cls.__name__
    if eval_features is not None:
        ex = check_embeddings(eval_features, "eval_features")
        if eval_labels is None:
            raise ValueError("eval_features given without eval_labels")
        check_labels(eval_labels, ex.shape[0], "eval_labels")
        if ex.shape[1] != x_all.shape[1]:
            raise ValueError(f"eval_features have dimension {ex.shape[1]} but the training "
                             f"features have {x_all.shape[1]}")
    if not (0 <= warmup_epochs <= epochs) or generator_epochs < 0:
        raise ValueError(f"need 0 <= warmup_epochs ({warmup_epochs}) <= epochs ({epochs}) and "
                         f"generator_epochs >= 0")
    y_np = y_all.cpu().numpy()
    counts = np.unique(y_np, return_counts=True)[1]
    if P < 2 or K < 2:
        raise ValueError(f"P and K must be >= 2 (got P={P}, K={K})")
    if len(counts) < P:
        raise ValueError(f"P={P} classes per batch but the data has only {len(counts)} classes")
    if negatives_per_anchor == "auto":
        negatives_per_anchor = _auto_negatives(loss_name)
    torch.manual_seed(seed)
    D = x_all.shape[1]
    if isinstance(head, str):
        head_mod = MetricHead(D if trunk is None else _out_dim(trunk, D), embedding_dim, head,
                              head_hidden)
    else:
        head_mod = head
    gen_dim = (head_mod.in_dim if hasattr(head_mod, "in_dim") else D) if space == "feature" \
        else embedding_dim
    generator = positive_generator = None
    if method in ("daml", "daml+sp"):
        generator = HardNegativeGenerator(gen_dim, generator_hidden,
                                          normalize_output=normalize_synthetic)
    if method == "daml+sp":
        positive_generator = SyntheticPositiveGenerator(gen_dim, generator_hidden,
                                                        normalize_output=normalize_synthetic)
    dev = torch.device(device)
    for m in (head_mod, generator, positive_generator, trunk, loss_mod):
        if m is not None:
            m.to(dev)
    if recorder is not None:
        recorder.margin = next((float(getattr(loss_mod, k)) for k in ("margin", "lam")
                                if isinstance(getattr(loss_mod, k, None), (int, float))), None)
    trainer = AdversarialTrainer(
        loss_mod, head_mod, generator, positive_generator, trunk, space=space, lr=lr,
        generator_lr_factor=generator_lr_factor, trunk_lr_factor=trunk_lr_factor,
        lambda1=lambda1, lambda2=lambda2, lam=lam, alpha=alpha, alpha_sign=alpha_sign,
        negatives_per_anchor=negatives_per_anchor, keep_real_negatives=keep_real_negatives,
        generator_metric_grad=generator_metric_grad, weight_decay=weight_decay,
        recorder=recorder, seed=seed, triplet_scheme=triplet_scheme)
    result = AdversarialResult(head_mod, generator, positive_generator, trunk, loss_mod,
                               config={"loss": loss_name, "method": method, "epochs": epochs,
                                       "warmup_epochs": warmup_epochs,
                                       "generator_epochs": generator_epochs, "lr": lr,
                                       "lambda1": lambda1, "lambda2": lambda2, "lam": lam,
                                       "alpha": alpha, "alpha_sign": alpha_sign, "space": space,
                                       "negatives_per_anchor": negatives_per_anchor, "P": P,
                                       "K": K, "seed": seed},
                               recorder=recorder)
    phases = phase_schedule(method, epochs, warmup_epochs, generator_epochs)
    n_batches = batches_per_epoch or max(1, math.ceil(len(y_all) / (P * K)))
    return trainer.fit(x_all, y_all, phases, P=P, K=K, batches_per_epoch=n_batches, seed=seed,
                       result=result, eval_features=eval_features, eval_labels=eval_labels,
                       eval_every=eval_every, eval_kwargs=eval_kwargs, device=dev,
                       progress=progress, desc=f"{method}/{loss_name}")


def _out_dim(trunk: nn.Module, in_dim: int) -> int:
    with torch.no_grad():
        p = next(trunk.parameters(), None)
        z = torch.zeros(2, in_dim, dtype=p.dtype if p is not None else torch.float32)
        return int(trunk(z).shape[1])


def _evaluate(result: AdversarialResult, features, labels, eval_kwargs: dict | None) -> dict:
    from .. import evaluate as _evaluate_mod

    for m in (result.head, result.trunk):
        if m is not None:
            m.eval()
    emb = result.embed(features)
    metrics = _evaluate_mod.evaluate(emb, labels, **(eval_kwargs or {}))
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
