"""Named settings of :func:`dmlkit.adversarial.fit_adversarial`: whose design a run follows.

Three presets (``PRESETS``), each a dict of fit_adversarial keyword arguments; an argument
passed explicitly to fit_adversarial overrides its preset's value.

``"dmlkit"`` (the default, dmlkit's own choice, unchanged since before presets existed):
    a 2-layer metric head on the features, the generator reading the features (linear output,
    torch initialisation); warm-up trains the head; one generator-only epoch; gradient routing
    *separated*: the generator gets ``J_gen`` only, the head (and a trunk) ``lam * J_m`` only
    with the synthetic negatives as constants; ``J_m`` and ``J_adv`` with the loss's own
    settings (unit-norm embeddings for most losses); every real positive of an anchor in
    ``J_m``; one synthetic negative per anchor for triplet / contrastive, all negatives
    otherwise; Adam without weight decay; lr 1e-3, generator lr/10, trunk lr/1000.

``"official"`` (the authors' Chainer code, docs/formulas.md#the-authors-code): the generator
reads the trunk's L2-normalised output *before* a metric head ``E -> E -> ReLU -> E``
initialised to the identity (:class:`MetricHead` ``init="identity"``;
on cached features the trainable trunk is :class:`LinearEmbedding` ``D -> E``, the analogue of
GoogLeNet's fc + normalisation, unless a ``trunk`` is given); *full* routing (one backward of
``J_gen + lam J_m``: G also receives ``lam J_m``, the head ``J_adv``, the trunk everything);
warm-up trains the trunk alone at the full lr with the loss on sampled real triplets (the head
unused); no generator-only phase; triplet loss on squared Euclidean distances of the raw head
outputs, margin 1, mean over the triplets, and the official ``/ 2`` of ``J_m`` and ``J_adv``
written as ``lam = lambda2 = 0.5`` (``J_adv = [d^2(a, syn) - d^2(a, p) - 1]_+ / 2``);
``J_hard`` / ``J_reg`` means of squared feature distances; generator ``3E -> 512 -> ReLU ->
E -> ReLU`` initialised N(0, 0.02); Adam with weight decay 1.09e-3 on every optimiser;
lr 1e-4 (the top of the official log-uniform range [1e-5, 1e-4]); random triplets, one
negative per anchor, in ``J_m`` as in the warm-up. With ``method="metric"`` the same schedule
runs with the real negative in place of the synthetic one (the trunk-only warm-up, then head at
lr and trunk at lr/1000 on real triplets): the control that changes nothing but the generator.
Deviations kept: the triplets are drawn inside P x K batches (every sample an anchor, its
positive and negative drawn at random in the batch) rather than as independent random
triplets; the Adam state of the trunk carries over from warm-up to joint training (its lr is
changed); the number of warm-up epochs stays a run setting (official 20, on Cars196); the
official evaluation's best-test-NMI selection is not reproduced (no selection on test).
For losses other than triplet the loss keeps its own defaults.

``"pml"`` (pytorch-metric-learning's DAML trainer, its example weights 1 / 0.1 / 0.1 / 0.1 /
0.1): the metric loss on the real batch (every in-batch negative) with weight
``real_weight = 1`` ("metric_loss"), the metric loss on the sampled (anchor, positive,
synthetic negative) triples with ``lam = 0.1`` ("synth_loss"), and the generator's
``J_adv``, ``J_hard``, ``J_reg`` with weight 0.1 each (``generator_weight = 0.1`` times
``J_hard + lambda1 J_reg + lambda2 J_adv``, lambda1 = lambda2 = 1: "g_adv_loss",
"g_hard_loss", "g_reg_loss"); one backward of the weighted sum (full routing); the
warm-up ("metric alone" epochs) on the loss of the real batch (``warmup_triples="batch"``),
as PML's ``metric_alone_epochs`` train ``metric_loss`` alone; the rest as ``"dmlkit"``.
Read in PML 2.9's ``trainers/deep_adversarial_metric_learning.py``. Deviations: PML's
``g_hard_loss`` / ``g_reg_loss`` are the mean squared errors of the L2-normalised synthetic
negative and anchor / negative, dmlkit keeps DAML's squared distances; PML's ``g_adv_loss``
is any loss the user configures, dmlkit uses DAML's hinge; PML draws its triples with
``convert_to_triplets(t_per_anchor=...)``, dmlkit with :func:`sample_triplets` (one per
anchor); PML has no warm-up by default (``metric_alone_epochs=0``), the warm-up epochs stay
a run setting here.

DAML+SP (``method="daml+sp"``): the same presets, with the ``+ alpha`` hinge of Zou et al. n.d.
(``alpha_sign=+1``) in "official" and "pml"; "dmlkit" keeps ``alpha_sign=-1`` for both methods
(its behaviour before presets). The report's own code (alternating head / generator updates,
lambda2 = 50, J_hard measured to the positive) is not a preset.

>>> preset_settings("official", "daml")["routing"], preset_settings("dmlkit", "daml")["routing"]
('full', 'separate')
>>> preset_settings("official", "daml+sp")["alpha_sign"]
1
>>> preset_settings("paper", "daml")
Traceback (most recent call last):
    ...
ValueError: unknown preset 'paper'; known presets: dmlkit, official, pml
"""

from __future__ import annotations

__all__ = ["PRESETS", "PRESET_KEYS", "preset_settings", "resolve_settings"]

_DMLKIT = {
    "head": "mlp", "head_hidden": 512, "head_init": "default", "feature_trunk": None,
    "generator_hidden": (512,), "generator_out": None, "generator_init_std": None,
    "normalize_synthetic": False, "generator_epochs": 1, "lr": 1e-3,
    "generator_lr_factor": 0.1, "trunk_lr_factor": 1e-3, "weight_decay": 0.0,
    "weight_decay_on": "head", "lambda1": 1.0, "lambda2": 1.0, "lam": 1.0, "alpha": 1.0,
    "alpha_sign": -1, "negatives_per_anchor": "auto", "keep_real_negatives": False,
    "generator_metric_grad": False, "routing": "separate", "warmup": "head",
    "metric_triples": "batch", "warmup_triples": "batch", "real_weight": 0.0,
    "generator_weight": 1.0,
    "triplet_loss_kwargs": None,
}

#: the settings of each preset (see the module docstring); "daml+sp" adjustments are applied
#: by :func:`preset_settings`
PRESETS: dict[str, dict] = {
    "dmlkit": dict(_DMLKIT),
    "official": dict(
        _DMLKIT, head_hidden="embedding_dim", head_init="identity", feature_trunk="linear",
        generator_out="relu", generator_init_std=0.02, generator_epochs=0, lr=1e-4,
        weight_decay=1.09e-3, weight_decay_on="all", lam=0.5, lambda2=0.5,
        negatives_per_anchor=1, routing="full", warmup="trunk", metric_triples="sampled",
        warmup_triples="sampled",
        triplet_loss_kwargs={"margin": 1.0, "form": "squared_distance", "mining": "all",
                             "reduction": "mean", "normalize": False}),
    "pml": dict(_DMLKIT, lam=0.1, generator_weight=0.1, real_weight=1.0, routing="full",
                metric_triples="sampled"),
}
#: the keyword arguments of fit_adversarial a preset sets
PRESET_KEYS = tuple(_DMLKIT)


def preset_settings(preset: str, method: str = "daml") -> dict:
    """A copy of ``PRESETS[preset]`` for ``method`` (the ``+ alpha`` of Zou et al. n.d. for
    "daml+sp" in "official" and "pml"). Unknown presets raise ValueError listing the known ones."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    out = dict(PRESETS[preset])
    if method == "daml+sp" and preset != "dmlkit":
        out["alpha_sign"] = 1
    return out


def resolve_settings(preset: str, method: str, given: dict, unset: object) -> dict:
    """The preset's settings with every value of ``given`` that is not ``unset`` replacing
    the preset's (explicit arguments win)."""
    out = preset_settings(preset, method)
    out.update({k: v for k, v in given.items() if v is not unset})
    return out
