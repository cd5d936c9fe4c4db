"""Adversarial hard-negative generation: DAML (Duan et al. 2018) and its synthetic-positive
extension (Zou et al. n.d.), for every pair-based loss of :mod:`dmlkit.losses`.

A generator ``G`` reads an (anchor, positive, negative) triple of features and writes a
synthetic negative ``x~-_i = G([x_i, x+_i, x-_i])`` (docs/formulas.md#hard-negative-generation)::

    J_gen = J_hard + lambda1 J_reg + lambda2 J_adv
    J_hard = ||x~- - x||^2          (near the anchor, in the generator's space)
    J_reg  = ||x~- - x-||^2         (not too far from the real negative)
    J_adv  = [ D(x~-, x)^2 - D(x+, x)^2 + alpha_sign * alpha ]_+   (hard for the current metric)
    J = J_gen + lam * J_m           (J_m: any dmlkit pair-based loss on the synthetic negatives)

``D`` is the learned metric: the Euclidean distance between the metric head's embeddings
(L2-normalised when the loss normalises). Sign of the hinge: Duan et al. 2018 (DAML, the official
code) write ``- alpha``; Zou et al. n.d. write ``+ alpha``. Default here: ``alpha_sign=-1``
(DAML) for both methods; ``alpha_sign=+1`` gives Zou et al.'s eq. 4 exactly.

Synthetic positive (Zou et al. n.d., ``method="daml+sp"``): a second generator writes
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

Presets (:mod:`~dmlkit.adversarial.presets`, ``fit_adversarial(..., preset=...)``): whose
design a run follows. ``"dmlkit"`` (the default, dmlkit's own choice and the behaviour before
presets): the routing below, a head trained in the warm-up, a generator-only epoch, ``J_m`` and
``J_adv`` with the loss's own settings. ``"official"``: the authors' Chainer code (the
generator on the trunk's output before an identity-initialised head, nothing detached, a
trunk-only warm-up, the squared-distance triplet with margin 1 and the ``/ 2``, ReLU generator,
weight decay on every optimiser, random triplets). ``"pml"``: pytorch-metric-learning's DAML
trainer (the metric loss on the real batch plus 0.1 x the loss on synthetic triples, 0.1 x each
generator term). Every preset value can be overridden by an explicit argument.

Gradient routing of "dmlkit" (``routing="separate"``; the official code and PML use
``routing="full"``, one backward of the whole objective into every parameter): the
generator(s) are updated with ``J_gen`` (and ``J+_gen``) only; the metric head (and a
trainable trunk) with ``lam * J_m`` only, the synthetic negatives entering ``J_m`` as
constants. The metric never minimises ``J_adv`` (that would help the generator instead of
resisting it; the official code does let the head receive it). With
``generator_metric_grad=True`` the generator also receives ``lam * dJ_m/dtheta_g``. Under
Adam ``lam`` then barely matters in this routing: it only rescales the metric's gradient.

Schedule: ``warmup_epochs`` of metric loss alone (the head, or with ``warmup="trunk"`` the
trunk alone at the full lr), then ``generator_epochs`` of generator alone ("dmlkit" and
"pml": 1; official: none), then joint training with separate Adam optimisers: head at
``lr``, generator at ``lr * generator_lr_factor`` (official 1/10), trunk at
``lr * trunk_lr_factor`` (official 1/1000). The run has ``epochs + generator_epochs``
epochs. The generator is not used at test time (:meth:`AdversarialResult.embed`).

End to end: :func:`fit_adversarial_images` trains a CNN trunk on a data set's images
(glyphs on a CPU) with the same trainer, so a comparison is about metric learning rather
than a head on frozen features. Diagnostics (:mod:`~dmlkit.adversarial.diagnostics`,
``diagnostics=True``): raw and centred cosines of the real embeddings and their shared
offset, a linear probe telling synthetic from real, output norms and hardness, per epoch.

Scale notes. ``J_hard`` / ``J_reg`` are measured in the generator's space and (in "dmlkit")
``J_adv`` on unit-norm embeddings (``D^2 <= 4``): with ``alpha_sign=-1, alpha=1`` the hinge
is inactive whenever ``D(x~, x)^2 < D(x+, x)^2 + 1``, which is common on the unit sphere, and
the generator then just interpolates between anchor and negative. With only synthetic
negatives in ``J_m`` the metric can learn to tell synthetic from real features instead of
the classes (see the diagnostics); ``keep_real_negatives=True`` or the "pml" preset keep real
negatives in the metric loss.

Modules: :mod:`~dmlkit.adversarial.generators` (the networks),
:mod:`~dmlkit.adversarial.objectives` (``J_gen``, ``J+_gen``, ``J_m``),
:mod:`~dmlkit.adversarial.triplets` (the generator's triples),
:mod:`~dmlkit.adversarial.recorder` (synthetic negatives kept for plots),
:mod:`~dmlkit.adversarial.training` (:class:`AdversarialTrainer`, a specialisation of the
training engine :class:`dmlkit.train.Trainer`), :mod:`~dmlkit.adversarial.fitting`
(:func:`fit_adversarial`, :func:`fit_adversarial_images`),
:mod:`~dmlkit.adversarial.presets`, :mod:`~dmlkit.adversarial.diagnostics`,
:mod:`~dmlkit.adversarial.comparison` (each design next to its control, the same run with
``generator="identity"``: comparisons over seeds with paired intervals, and the saved
benchmark table), :mod:`~dmlkit.adversarial.ablation` (what in DAML's objective carries a
gain: the generator, ``J_adv``, the generator terms routed into the trunk, a parameter-free
midpoint; the saved ablation table),
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

from .diagnostics import TrainingDiagnostics, collapse, hardness, output_norm, separability
from .fitting import PRESET, fit_adversarial, fit_adversarial_images
from .generators import (
    HardNegativeGenerator,
    IdentityGenerator,
    InterpolationGenerator,
    LinearEmbedding,
    MetricHead,
    SyntheticPositiveGenerator,
)
from .objectives import (
    generator_objective,
    metric_loss_with_synthetic,
    synthetic_positive_objective,
)
from .presets import PRESETS, preset_settings
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
    phase_schedule,
)
from .triplets import sample_triplets

__all__ = [
    "METHODS",
    "PHASES",
    "PRESET",
    "PRESETS",
    "AdversarialResult",
    "AdversarialRun",
    "AdversarialTrainer",
    "HardNegativeGenerator",
    "IdentityGenerator",
    "InterpolationGenerator",
    "LinearEmbedding",
    "MetricHead",
    "NegativeRecorder",
    "SyntheticPositiveGenerator",
    "TrainingDiagnostics",
    "collapse",
    "fit_adversarial",
    "fit_adversarial_images",
    "fit_adversarial_run",
    "generator_objective",
    "hardness",
    "hardness_summary",
    "metric_loss_with_synthetic",
    "output_norm",
    "parse_loss_spec",
    "phase_schedule",
    "preset_settings",
    "sample_triplets",
    "separability",
    "synthetic_positive_objective",
    "test_embeddings",
    "total_iterations",
]
