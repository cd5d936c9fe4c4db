"""Training with synthetic negatives: :class:`AdversarialTrainer`, a specialisation of the
training engine (:class:`dmlkit.train.Trainer`), and the phase schedule of
:func:`dmlkit.adversarial.fit_adversarial` (:mod:`~dmlkit.adversarial.fitting`).

The trainer overrides the engine's loss computation (:meth:`AdversarialTrainer.compute_loss`:
the metric loss alone, or triples -> synthetic positives / negatives -> ``J+_gen``, ``J_gen``
and ``J_m``), its backward pass (the gradient routing of :mod:`dmlkit.adversarial`) and its
optimiser steps (separate Adam optimisers for the metric head, the trunk and the generators,
stepped according to the phase); batches, epochs and history rows are the engine's stages.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.nn.functional.normalize(torch.randn(48, 8, generator=g), dim=1)
>>> y = torch.arange(48) % 6
>>> from dmlkit.adversarial import fit_adversarial
>>> res = fit_adversarial(x, y, "triplet", "daml", epochs=3, warmup_epochs=1, P=4, K=3,
...                       embedding_dim=4, head_hidden=16, generator_hidden=(16,))
>>> [row["phase"] for row in res.history]
['metric', 'generator', 'joint', 'joint']
>>> res.embed(x).shape
torch.Size([48, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_embeddings
from ..train.engine import Trainer
from .generators import HardNegativeGenerator, SyntheticPositiveGenerator
from .objectives import (
    _pairs_by_labels,
    generator_objective,
    metric_loss_with_synthetic,
    synthetic_positive_objective,
)
from .recorder import NegativeRecorder
from .triplets import sample_triplets

__all__ = ["METHODS", "PHASES", "AdversarialResult", "AdversarialTrainer", "phase_schedule"]

#: "metric": the loss alone (the baseline); "daml": Duan et al. 2018; "daml+sp": Zou et al. n.d.
METHODS = ("metric", "daml", "daml+sp")
#: what one step trains: the trunk alone ("warmup", official: the head unused, the trunk at the
#: full lr), the metric alone, the generator(s) alone, or both
PHASES = ("warmup", "metric", "generator", "joint")


def phase_schedule(method: str, epochs: int, warmup_epochs: int,
                   generator_epochs: int, warmup: str = "head") -> list[str]:
    """The phase of every epoch: ``warmup_epochs`` warm-up, then ``generator_epochs``
    "generator", then "joint" up to ``epochs`` warm-up + joint epochs, so the run has
    ``epochs + generator_epochs`` epochs. warmup="head": the warm-up epochs are "metric" (the
    head, and a trunk at its lr factor, on the metric loss) and ``method="metric"`` is
    "metric" throughout; warmup="trunk" (official): the warm-up epochs are "warmup" (the trunk
    alone at the full lr) and ``method="metric"`` continues with "metric" epochs. The
    "metric" method has no generator epochs.

    >>> phase_schedule("daml", epochs=3, warmup_epochs=1, generator_epochs=1)
    ['metric', 'generator', 'joint', 'joint']
    >>> phase_schedule("metric", epochs=3, warmup_epochs=1, generator_epochs=0, warmup="trunk")
    ['warmup', 'metric', 'metric']
    """
    if warmup not in ("head", "trunk"):
        raise ValueError(f"warmup must be 'head' or 'trunk', got {warmup!r}")
    first = "metric" if warmup == "head" else "warmup"
    total = epochs + (generator_epochs if method != "metric" else 0)
    return [first if e < warmup_epochs else
            "metric" if method == "metric" else
            "generator" if e < warmup_epochs + generator_epochs else "joint"
            for e in range(total)]


@dataclass
class AdversarialResult:
    """What :func:`fit_adversarial` returns. history: one dict per epoch (phase, mean losses,
    the diagnostics when asked for, and the evaluation metrics at the epochs where they were
    computed). use_head: False when no epoch used the head (an official-preset run that never
    left the trunk-only warm-up): the test embedding is then the trunk's output. trainer:
    the :class:`AdversarialTrainer` that ran (its optimisers, ``step`` and stages, e.g. to
    inspect one more step)."""

    head: nn.Module
    generator: HardNegativeGenerator | None
    positive_generator: SyntheticPositiveGenerator | None
    trunk: nn.Module | None
    loss: nn.Module
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    recorder: NegativeRecorder | None = None
    use_head: bool = True
    trainer: AdversarialTrainer | None = field(default=None, repr=False)

    @torch.no_grad()
    def embed(self, features, batch_size: int = 4096) -> torch.Tensor:
        """Test-time embeddings (N, E) of features (N, D) (or of images (N, C, H, W) when the
        trunk reads images): trunk + head, no generator; L2-normalised when the loss
        normalises."""
        x = _check_inputs(features, "features", self.trunk is not None)
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
            if self.use_head:
                z = self.head(z)
            if getattr(self.loss, "normalize", True):
                z = F.normalize(z, dim=1)
            outs.append(z.cpu())
        for m, mode in zip(modules, modes):
            m.train(mode)
        return torch.cat(outs)


def _check_inputs(x, name: str, any_shape: bool) -> torch.Tensor:
    """(N, D) features, or any (N, ...) float tensor (images) when a trunk reads them."""
    if not any_shape:
        return check_embeddings(x, name)
    t = torch.as_tensor(x)
    if t.dim() < 2 or t.shape[0] == 0 or not t.is_floating_point():
        raise ValueError(f"{name} must be a non-empty float tensor (N, ...), got "
                         f"{tuple(t.shape)} {t.dtype}")
    return t


def _set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


class AdversarialTrainer(Trainer):
    """The engine specialised to metric-only, DAML or DAML+SP training on batches of
    features (or of images, with a trainable trunk).

    :func:`fit_adversarial` is the usual entry point (it runs :meth:`fit`); ``step(x, y,
    phase)`` is one training step, usable from a notebook, with phase "warmup" (the trunk
    alone), "metric" (metric loss alone), "generator" (generator alone) or "joint"; it
    returns a dict of floats (the batch's objective terms). triplet_scheme: how the
    generator's triples are drawn (:func:`sample_triplets`): "auto" = "npair" (Sohn's
    pairing) for the N-pair losses, "random" otherwise.

    Design knobs (the presets of :mod:`dmlkit.adversarial.presets` set them):
    routing="separate" (dmlkit: the generator(s) get ``generator_weight * J_gen`` (+
    ``J+_gen``), plus ``lam * J_m`` with ``generator_metric_grad``; the head and trunk get
    ``lam * J_m + real_weight * J_m_real`` with the synthetic negatives and the generator's
    inputs as constants), "full" (official, PML: one backward of ``generator_weight *
    (J_gen + J+_gen) + lam * J_m + real_weight * J_m_real``, nothing detached: the trunk
    and head also receive ``J_hard``, ``J_reg`` and ``J_adv``) or "split" (the ablation of
    "full": ``J_m`` (+ ``J_m_real``) flows everywhere as in "full", generator included,
    but ``J_gen`` (+ ``J+_gen``) reaches the generator(s) only, never the trunk or head);
    generator_terms: compute the generator objective for an identity generator too (the
    ablation's "control + regulariser": ``J_hard`` and ``J_reg`` with ``G(a, p, n) = n``,
    routed as ``routing`` says); by default an identity generator has no objective;
    metric_triples="batch" (``J_m`` keeps every real positive of an anchor) or "sampled"
    (``J_m`` on the sampled (anchor, positive, negative) triples only); warmup_triples: what
    the warm-up and metric-only phases train on, "batch" (the loss of the real batch) or
    "sampled" (the sampled real triples), default: as ``metric_triples``; real_weight:
    weight of ``J_m_real``, the loss on the real batch (PML's "metric_loss"; 0: not
    computed); weight_decay_on: "head" (the metric optimiser only) or "all" (every optimiser,
    official).

    Overridden stages: :meth:`zero_grad`, :meth:`compute_loss`, :meth:`backward`,
    :meth:`step_optimizers` and :meth:`after_step` (recorder, diagnostics) for the step;
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
                 seed: int = 0, triplet_scheme: str = "auto", routing: str = "separate",
                 metric_triples: str = "batch", warmup_triples: str | None = None,
                 real_weight: float = 0.0,
                 generator_weight: float = 1.0, weight_decay_on: str = "head",
                 generator_terms: bool = False, diagnostics=None):
        if space not in ("feature", "embedding"):
            raise ValueError(f"space must be 'feature' or 'embedding', got {space!r}")
        if alpha_sign not in (-1, 1):
            raise ValueError(f"alpha_sign must be -1 (DAML) or +1 (DAML+SP's hinge), got "
                             f"{alpha_sign}")
        if positive_generator is not None and generator is None:
            raise ValueError("a positive generator needs a negative generator")
        for name, value, known in (("routing", routing, ("separate", "full", "split")),
                                   ("metric_triples", metric_triples, ("batch", "sampled")),
                                   ("warmup_triples", warmup_triples,
                                    (None, "batch", "sampled")),
                                   ("weight_decay_on", weight_decay_on, ("head", "all"))):
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; known: {', '.join(known)}")
        if real_weight < 0 or generator_weight < 0:
            raise ValueError(f"real_weight ({real_weight}) and generator_weight "
                             f"({generator_weight}) must be >= 0")
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
        self.routing, self.metric_triples = routing, metric_triples
        self.generator_terms = bool(generator_terms)
        self.warmup_triples = warmup_triples or metric_triples
        self.real_weight, self.generator_weight = float(real_weight), float(generator_weight)
        self.recorder, self.diagnostics = recorder, diagnostics
        self.normalize = bool(getattr(loss, "normalize", True))
        self.rng = torch.Generator().manual_seed(int(seed))
        self.lr, self.trunk_lr_factor = float(lr), float(trunk_lr_factor)
        wd_all = weight_decay if weight_decay_on == "all" else 0.0
        metric_params = list(head.parameters()) + list(loss.parameters())
        self.opt_metric = torch.optim.Adam(metric_params, lr=lr, weight_decay=weight_decay)
        self.metric_params = metric_params
        self.trunk_params = list(trunk.parameters()) if trunk is not None else []
        self.opt_trunk = (torch.optim.Adam(self.trunk_params, lr=lr * trunk_lr_factor,
                                           weight_decay=wd_all)
                          if self.trunk_params else None)
        gens = [g for g in (generator, positive_generator) if g is not None]
        self.generator_params = [p for g in gens for p in g.parameters()]
        self.opt_generator = (torch.optim.Adam(self.generator_params, lr=lr * generator_lr_factor,
                                               weight_decay=wd_all)
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
            raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
        if phase in ("generator", "joint") and self.generator is None:
            raise ValueError(f"phase {phase!r} needs a generator (method 'daml' or 'daml+sp')")
        self._set_phase(phase)
        return self.train_step((features, labels))

    def _set_phase(self, phase: str) -> None:
        if phase == "warmup" and self.opt_trunk is None:
            raise ValueError("the 'warmup' phase trains the trunk alone and needs a trunk")
        self.phase = phase
        if self.opt_trunk is not None:  # the trunk at the full lr in its own warm-up
            lr = self.lr if phase == "warmup" else self.lr * self.trunk_lr_factor
            for group in self.opt_trunk.param_groups:
                group["lr"] = lr

    # ------------------------------------------------------------------------- step stages
    def zero_grad(self) -> None:
        for p in self.metric_params + self.trunk_params + self.generator_params:
            p.grad = None

    def _sampled_triples(self, labels: torch.Tensor):
        return sample_triplets(labels, self.negatives_per_anchor, self.rng, self.triplet_scheme)

    def compute_loss(self, features: torch.Tensor, labels: torch.Tensor) -> dict | None:
        """The phase's objective terms, in logging order: ``J_m`` alone in the warm-up and
        metric phases; else ``J+_gen`` (DAML+SP), ``J_gen``, ``J_hard``, ``J_reg``, ``J_adv``,
        ``J_m`` on the synthetic negatives (and ``J_m_real`` with ``real_weight``). None when
        the batch has no (anchor, positive, negative)."""
        x = features if self.trunk is None else self.trunk(features)
        emb = x if self.phase == "warmup" else self.head(x)
        full = self.routing in ("full", "split")   # nothing detached (split: see backward)
        if self.phase in ("warmup", "metric"):
            if self.warmup_triples == "batch":   # PML's "metric_loss" when it has a weight
                return {"J_m_real" if self.real_weight > 0 else "J_m": self.loss(emb, labels)}
            a, p, n = self._sampled_triples(labels)
            if a.numel() == 0:
                return None
            return {"J_m": metric_loss_with_synthetic(self.loss, emb, labels, emb[n], labels[n],
                                                      a, self.keep_real_negatives, positive=p)}
        a, p, n = self._sampled_triples(labels)
        if a.numel() == 0:
            return None
        base = x if self.space == "feature" else emb
        if not full:
            base = base.detach()
        xa, xp, xn = base[a], base[p], base[n]
        terms: dict[str, torch.Tensor] = {}
        gen_objective = 0.0
        pos_for_neg = xp
        g_pos = None
        # the fair control: an identity generator has no objective unless asked for
        no_terms = getattr(self.generator, "is_identity", False) and not self.generator_terms
        if self.positive_generator is not None:
            g_pos = self.positive_generator(xa, xp, xn)
            if not no_terms:
                jp = synthetic_positive_objective(xa, xp, g_pos, lambda1=self.lambda1)
                gen_objective = jp["total"]
                terms["J+_gen"] = jp["total"]
            pos_for_neg = g_pos if full else g_pos.detach()
        syn = self.generator(xa, pos_for_neg, xn)
        if not no_terms:
            jg = generator_objective(xa, pos_for_neg, xn, syn, self._metric,
                                     lambda1=self.lambda1, lambda2=self.lambda2,
                                     alpha=self.alpha, alpha_sign=self.alpha_sign)
            gen_objective = gen_objective + jg["total"]
            if self.generator_weight != 1.0:
                gen_objective = self.generator_weight * gen_objective
            terms.update({name: jg[key] for name, key in
                          (("J_gen", "total"), ("J_hard", "hard"), ("J_reg", "reg"),
                           ("J_adv", "adv"))})
        through = full or (self.phase == "joint" and self.generator_metric_grad)
        syn_in = syn if through else syn.detach()
        syn_emb = self.head(syn_in) if self.space == "feature" else syn_in
        terms["J_m"] = metric_loss_with_synthetic(
            self.loss, emb, labels, syn_emb, labels[n], a, self.keep_real_negatives,
            positive=p if self.metric_triples == "sampled" else None)
        if self.real_weight > 0:
            terms["J_m_real"] = self.loss(emb, labels)
        self._triples = {"generator_objective": gen_objective, "syn_in": syn, "a": a, "n": n,
                         "anchor": xa, "positive": xp, "negative": xn, "synthetic": syn,
                         "synthetic_positive": g_pos, "grad_through_synthetic":
                         syn_in.requires_grad}
        return terms

    def _metric_objective(self, terms: dict) -> torch.Tensor:
        jm = self.lam * terms["J_m"] if "J_m" in terms else 0.0
        if "J_m_real" in terms:
            jm = jm + self.real_weight * terms["J_m_real"]
        return jm

    def backward(self, terms: dict) -> None:
        """Gradient routing (class docstring): "full" backpropagates the whole objective
        into every parameter; "split" the metric objective into every parameter and the
        generator objective into the generator(s) only; "separate" gives the metric ``lam *
        J_m`` (+ ``real_weight * J_m_real``) only, never ``J_adv``, and the generator(s)
        ``J_gen`` (+ ``J+_gen``), plus ``lam * J_m`` with ``generator_metric_grad``."""
        jm = self._metric_objective(terms)
        if self.phase in ("warmup", "metric"):
            jm.backward()
            return
        t = self._triples
        if self.routing == "full":
            (t["generator_objective"] + jm).backward()
            return
        if self.routing == "split":
            gen = t["generator_objective"]
            if self.generator_params and torch.is_tensor(gen) and gen.requires_grad:
                grads = torch.autograd.grad(gen, self.generator_params, retain_graph=True,
                                            allow_unused=True)
                _set_grads(self.generator_params, grads)
            jm.backward()
            return
        if self.generator_params:
            gen_total = t["generator_objective"] + (self.lam * terms["J_m"]
                                                    if t["grad_through_synthetic"] else 0.0)
            gen_grads = torch.autograd.grad(gen_total, self.generator_params,
                                            retain_graph=True, allow_unused=True)
            _set_grads(self.generator_params, gen_grads)
        if self.phase == "joint":
            mparams = [q for q in self.metric_params + self.trunk_params if q.requires_grad]
            m_grads = torch.autograd.grad(jm, mparams, allow_unused=True)
            _set_grads(mparams, m_grads)

    def step_optimizers(self) -> None:
        """warmup: the trunk alone; metric: head (and trunk); generator: the generator(s)
        alone; joint: all."""
        if self.phase in ("metric", "joint"):
            self.opt_metric.step()
        if self.opt_trunk is not None and self.phase != "generator":
            self.opt_trunk.step()
        if self.phase in ("generator", "joint") and self.opt_generator is not None:
            self.opt_generator.step()

    def after_step(self, inputs: tuple, terms: dict) -> dict[str, float]:
        values = super().after_step(inputs, terms)
        adversarial = self.phase in ("generator", "joint") and bool(terms)
        wants_record = (adversarial and self.recorder is not None
                        and self.recorder.wants(self.epoch))
        if wants_record or (adversarial and self.diagnostics is not None):
            t, labels = self._triples, inputs[1]
            with torch.no_grad():
                embs = {k + "_emb": self._metric(t[k])
                        for k in ("anchor", "positive", "negative", "synthetic")}
                if wants_record:
                    self.recorder.record(
                        self.epoch, anchor=t["anchor"], positive=t["positive"],
                        negative=t["negative"], synthetic=t["synthetic"], **embs,
                        labels=labels[t["a"]], negative_labels=labels[t["n"]],
                        synthetic_positive=t["synthetic_positive"])
                if self.diagnostics is not None:
                    self.diagnostics.update(negative=t["negative"], synthetic=t["synthetic"],
                                            **embs)
        return values

    # ------------------------------------------------------------------------- the schedule
    def fit(self, features: torch.Tensor, labels: torch.Tensor, phases: Sequence[str], *,
            P: int, K: int, batches_per_epoch: int, seed: int, result: AdversarialResult,
            eval_features=None, eval_labels=None, eval_every: int | None = None,
            eval_kwargs: dict | None = None, device: torch.device | None = None,
            progress: bool = False, desc: str = "") -> AdversarialResult:
        """Run one epoch per entry of ``phases`` (:func:`phase_schedule`) of
        ``batches_per_epoch`` P x K batches of (features (N, D) or images (N, C, H, W),
        labels (N,)); the history rows go to ``result.history``."""
        self.x_all, self.y_all, self.y_np = features, labels, labels.cpu().numpy()
        self.phases, self.P, self.K, self.n_batches = list(phases), P, K, batches_per_epoch
        self.batch_rng = np.random.default_rng(seed)
        self.result, self.history = result, result.history
        result.trainer = self
        self.eval_features, self.eval_labels = eval_features, eval_labels
        self.eval_every, self.eval_kwargs = eval_every, eval_kwargs
        self.device, self.progress, self.desc = device, progress, desc
        return self.run()

    def epochs(self):
        from tqdm.auto import tqdm

        return tqdm(range(len(self.phases)), disable=not self.progress, desc=self.desc)

    def start_epoch(self, epoch: int) -> None:
        self._set_phase(self.phases[epoch])
        if self.diagnostics is not None:
            self.diagnostics.start_epoch()
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
        row = {"epoch": epoch, "phase": self.phase,
               **{k: v / self.steps for k, v in self.sums.items()}}
        if self.diagnostics is not None:
            row.update(self.diagnostics.epoch_row(self.result))
        return row

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


def _evaluate(result: AdversarialResult, features, labels, eval_kwargs: dict | None) -> dict:
    from .. import evaluate as _evaluate_mod

    for m in (result.head, result.trunk):
        if m is not None:
            m.eval()
    emb = result.embed(features)
    metrics = _evaluate_mod.evaluate(emb, labels, **(eval_kwargs or {}))
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
