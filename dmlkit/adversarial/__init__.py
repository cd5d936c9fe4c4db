"""Adversarial hard-negative generation: DAML (seed 000) and its synthetic-positive extension
(seed 001), for every pair-based loss of :mod:`dmlkit.losses`.

A generator ``G`` reads an (anchor, positive, negative) triple of features and writes a
synthetic negative ``x~-_i = G([x_i, x+_i, x-_i])`` (FORMULAS.md section 3)::

    J_gen = J_hard + lambda1 J_reg + lambda2 J_adv
    J_hard = ||x~- - x||^2          (near the anchor, in the generator's space)
    J_reg  = ||x~- - x-||^2         (not too far from the real negative)
    J_adv  = [ D(x~-, x)^2 - D(x+, x)^2 + alpha_sign * alpha ]_+   (hard for the current metric)
    J = J_gen + lam * J_m           (J_m: any dmlkit pair-based loss on the synthetic negatives)

``D`` is the learned metric: the Euclidean distance between the metric head's embeddings
(L2-normalised when the loss normalises). Sign of the hinge: seed 000 (DAML, the official
code) writes ``- alpha``; seed 001 writes ``+ alpha``. Default here: ``alpha_sign=-1`` (seed 000)
for both methods; ``alpha_sign=+1`` gives seed 001's eq. 4 exactly.

Synthetic positive (seed 001, ``method="daml+sp"``): a second generator writes
``g+ = G+([x, x+, x-])`` trained on ``J+_gen = ||g+ - x||^2 + lambda1 ||g+ - x+||^2``; the
negative generator then reads ``[x, g+, x-]`` and uses ``D(g+, x)`` in ``J_adv``.

How the synthetic negatives enter a loss (:func:`metric_loss_with_synthetic`): one
query-vs-reference similarity matrix. Queries are the batch (anchors); references are the
batch itself followed by the synthetic negatives. Row ``i`` keeps its real positives (same label,
not itself) and, as negatives, ONLY the synthetic negatives generated for anchor ``i`` (its real
negatives are replaced; ``keep_real_negatives=True`` keeps them too). The loss's own
``compute(PairBatch)`` then runs unchanged, so every loss built on ``batch.S`` and the masks works:
triplet / contrastive see (anchor, positive, synthetic negative) triplets / pairs, lifted
structure and N-pair see each anchor's negatives replaced by negatives generated from them.
A synthetic negative carries the label of the real negative it was generated from. The N-pair
losses pair samples by label rather than by mask, so they are evaluated anchor by anchor on
Sohn's pairing: anchor ``x_i``, positive ``x_i^+`` and synthetic negatives ``G(x_i, x_i^+, x_j^+)``.

Gradient routing (an implementation choice, the papers do not spell it out): the generator(s)
are updated with ``J_gen`` (and ``J+_gen``) only; the metric head (and an optional trainable
trunk) with ``lam * J_m`` only, the synthetic negatives entering ``J_m`` as constants. The metric
never minimises ``J_adv`` (that would help the generator instead of resisting it). With
``generator_metric_grad=True`` the generator also receives ``lam * dJ_m/dtheta_g`` (the literal
``min_theta_g J_gen + lam J_m``). Under Adam ``lam`` then barely matters in the default routing:
it only rescales the metric's gradient.

Schedule (official code): ``warmup_epochs`` of metric loss alone, then (optionally)
``generator_epochs`` of generator alone ("initialise the generator adversarial to the
pre-trained metric"), then joint training with separate Adam optimisers: head at ``lr``,
generator at ``lr * generator_lr_factor`` (official 1/10), trunk at ``lr * trunk_lr_factor``
(official 1/1000). The generator is not used at test time (:meth:`AdversarialResult.embed`).

Scale notes. ``J_hard`` / ``J_reg`` are measured in the generator's space and ``J_adv`` on
unit-norm embeddings (``D^2 <= 4``): feed L2-normalised features (as the official code does) so
the three terms are comparable. With ``alpha_sign=-1, alpha=1`` the hinge is inactive whenever
``D(x~, x)^2 < D(x+, x)^2 + 1``, which is common on the unit sphere, and the generator then
just interpolates between anchor and negative. On small CPU benchmarks (benchmarks/adversarial.py)
the metric can learn to tell synthetic from real features instead of learning the classes;
``normalize_synthetic=True`` and ``keep_real_negatives=True`` are the knobs to try.

Modules: :mod:`~dmlkit.adversarial.generators` (the networks),
:mod:`~dmlkit.adversarial.objectives` (``J_gen``, ``J+_gen``, ``J_m``),
:mod:`~dmlkit.adversarial.triplets` (the generator's triples),
:mod:`~dmlkit.adversarial.recorder` (synthetic negatives kept for plots),
:mod:`~dmlkit.adversarial.training` (:class:`AdversarialTrainer`, a specialisation of the
training engine :class:`dmlkit.train.Trainer`, and :func:`fit_adversarial`),
:mod:`~dmlkit.adversarial.runs` (runs on frozen backbone features, shaped like ``fit``'s).

>>> import torch
>>> from dmlkit import adversarial
>>> g = torch.Generator().manual_seed(0)
>>> features = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
>>> labels = torch.arange(60) % 5
>>> rec = adversarial.NegativeRecorder()
>>> res = adversarial.fit_adversarial(features, labels, "triplet", "daml", recorder=rec,
...                                   warmup_epochs=1, epochs=3, P=4, K=3, embedding_dim=4)
>>> res.embed(features).shape, sorted(set(rec.hardness_frame().epoch))  # generator + joint
(torch.Size([60, 4]), [1, 2, 3])
"""

from .generators import HardNegativeGenerator, MetricHead, SyntheticPositiveGenerator
from .objectives import (
    generator_objective,
    metric_loss_with_synthetic,
    synthetic_positive_objective,
)
from .recorder import NegativeRecorder, hardness_summary
from .runs import (
    AdversarialRun,
    fit_adversarial_run,
    parse_loss_spec,
    test_embeddings,
    total_iterations,
)
from .training import (
    METHODS,
    PHASES,
    AdversarialResult,
    AdversarialTrainer,
    fit_adversarial,
    phase_schedule,
)
from .triplets import sample_triplets

__all__ = [
    "METHODS",
    "PHASES",
    "AdversarialResult",
    "AdversarialRun",
    "AdversarialTrainer",
    "HardNegativeGenerator",
    "MetricHead",
    "NegativeRecorder",
    "SyntheticPositiveGenerator",
    "fit_adversarial",
    "fit_adversarial_run",
    "generator_objective",
    "hardness_summary",
    "metric_loss_with_synthetic",
    "parse_loss_spec",
    "phase_schedule",
    "sample_triplets",
    "synthetic_positive_objective",
    "test_embeddings",
    "total_iterations",
]
