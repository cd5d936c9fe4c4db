"""The entry points of adversarial training: :func:`fit_adversarial` (cached features, or any
inputs with a trainable trunk) and :func:`fit_adversarial_images` (end to end: a trainable CNN
trunk on a data set's images), with the named presets of :mod:`dmlkit.adversarial.presets`.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.nn.functional.normalize(torch.randn(48, 8, generator=g), dim=1)
>>> y = torch.arange(48) % 6
>>> res = fit_adversarial(x, y, "triplet", "daml", preset="official", epochs=3,
...                       warmup_epochs=1, P=4, K=3, embedding_dim=4, generator_hidden=(16,))
>>> [row["phase"] for row in res.history]            # no generator-only phase
['warmup', 'joint', 'joint']
>>> res.config["routing"], res.config["lr"], res.config["preset"]
('full', 0.0001, 'official')
>>> res = fit_adversarial(x, y, "triplet", "daml", preset="official", lr=1e-3, epochs=1,
...                       warmup_epochs=1, P=4, K=3, embedding_dim=4)
>>> res.config["lr"]                                   # explicit arguments win
0.001
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .._checks import check_labels
from .diagnostics import TrainingDiagnostics
from .generators import (
    HardNegativeGenerator,
    IdentityGenerator,
    InterpolationGenerator,
    LinearEmbedding,
    MetricHead,
    SyntheticPositiveGenerator,
)
from .presets import PRESET_KEYS, resolve_settings
from .recorder import NegativeRecorder
from .training import (
    METHODS,
    AdversarialResult,
    AdversarialTrainer,
    _check_inputs,
    phase_schedule,
)

__all__ = ["PRESET", "fit_adversarial", "fit_adversarial_images"]


class _FromPreset:
    """The default of every preset-controlled argument: "take the preset's value"."""

    def __repr__(self) -> str:
        return "PRESET"


#: default of the preset-controlled arguments of :func:`fit_adversarial`
PRESET = _FromPreset()


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


def fit_adversarial(features, labels, loss: str | nn.Module = "triplet", method: str = "daml", *,
                    preset: str = "dmlkit", loss_kwargs: dict | None = None,
                    head=PRESET, embedding_dim: int = 64, head_hidden=PRESET,
                    head_init=PRESET, trunk: nn.Module | None = None, feature_trunk=PRESET,
                    space: str = "feature", generator: str = "mlp", generator_hidden=PRESET,
                    generator_out=PRESET, generator_init_std=PRESET,
                    normalize_synthetic=PRESET, epochs: int = 30,
                    warmup_epochs: int = 10, generator_epochs=PRESET, lr=PRESET,
                    generator_lr_factor=PRESET, trunk_lr_factor=PRESET, weight_decay=PRESET,
                    weight_decay_on=PRESET, lambda1=PRESET, lambda2=PRESET, lam=PRESET,
                    alpha=PRESET, alpha_sign=PRESET, negatives_per_anchor=PRESET,
                    keep_real_negatives=PRESET, generator_metric_grad=PRESET, routing=PRESET,
                    warmup=PRESET, metric_triples=PRESET, warmup_triples=PRESET,
                    real_weight=PRESET,
                    generator_weight=PRESET, interpolation: float = 0.5,
                    generator_terms: bool = False, triplet_scheme: str = "auto", P: int = 8,
                    K: int = 4, batches_per_epoch: int | None = None, seed: int = 0,
                    recorder: NegativeRecorder | None = None, diagnostics: bool = False,
                    eval_features=None, eval_labels=None, eval_every: int | None = None,
                    eval_kwargs: dict | None = None, device: str | torch.device = "cpu",
                    progress: bool = False) -> AdversarialResult:
    """Train a metric (head, and a trunk if given) with metric-only, DAML or DAML+SP.

    features: (N, D) float (cached backbone features), or any (N, ...) float inputs such as
    images (N, C, H, W) when ``trunk`` reads them (end to end; see
    :func:`fit_adversarial_images`); labels: (N,) int. loss: a registered pair-based loss
    name (``losses.available()``) or a PairLoss. method: "metric" (the loss alone, the
    baseline), "daml" (Duan et al. 2018) or "daml+sp" (Zou et al. n.d.).

    preset: whose design the run follows, "dmlkit" (default: dmlkit's own choice, the
    behaviour before presets, number for number), "official" (the authors' Chainer code) or
    "pml" (pytorch-metric-learning's DAML trainer); every argument whose default is
    ``PRESET`` takes the preset's value unless passed explicitly (the table and each
    preset's deviations: :mod:`dmlkit.adversarial.presets`). An unknown preset raises
    ValueError listing the known ones. With "official" and ``loss="triplet"`` without
    ``loss_kwargs`` the loss is the official squared-distance triplet (margin 1, raw
    embeddings, mean over the triplets).

    Schedule (:func:`phase_schedule`): ``warmup_epochs`` warm-up epochs (warmup="head": the
    head, and a trunk at its lr factor, on the metric loss; warmup="trunk": the trunk alone
    at ``lr``, the head unused), then ``generator_epochs`` of generator alone (metric
    frozen), then joint training, for ``epochs + generator_epochs`` epochs in all: ``epochs``
    counts the warm-up and joint epochs, the generator-only epochs come on top. For "metric"
    every epoch after the warm-up is a metric epoch. An epoch is ``ceil(N / (P K))`` PK
    batches unless ``batches_per_epoch``.

    Networks: head "mlp" / "linear" or a module (``head_hidden``: its hidden width, or
    "embedding_dim"; ``head_init``: "default" or "identity"); trunk: a trainable module
    before the head (its output is where the generator reads, ``space="feature"``), or, with
    ``feature_trunk="linear"`` and no trunk, :class:`LinearEmbedding` ``D -> embedding_dim``;
    generator "mlp" (DAML's: ``generator_hidden`` widths, ``generator_out`` None / "relu",
    ``generator_init_std``, ``normalize_synthetic``) or "identity"
    (:class:`IdentityGenerator`: ``G(a, p, n) = n``, and ``g+ = p`` for DAML+SP, without
    parameters or generator objective: the fair control, which runs the method's schedule,
    triples, ``J_m``, routing and optimisers with the real negative where DAML puts the
    synthetic one; :mod:`dmlkit.adversarial.comparison`) or "interpolate"
    (:class:`InterpolationGenerator`: the fixed point ``a + interpolation (n - a)``, and
    ``a + interpolation (p - a)`` for DAML+SP's positive, through the preset's output
    activation; no parameters, but its generator objective is computed and routed like a
    learned generator's: the ablation's parameter-free generator, :mod:`~dmlkit.adversarial.
    ablation`). generator_terms: give the identity generator its generator objective too
    (``J_gen`` at ``G = identity``, routed as ``routing`` says: the ablation's "control +
    regulariser"). Optimisation: Adam, head at ``lr``,
    generator at ``lr * generator_lr_factor``, trunk at ``lr * trunk_lr_factor``,
    ``weight_decay`` on the head's optimiser ("head") or on every one ("all"). Objective:
    ``lambda1``, ``lambda2``, ``alpha``, ``alpha_sign``, ``lam``, ``generator_weight``,
    ``real_weight``, ``routing``, ``metric_triples``, ``warmup_triples``,
    ``negatives_per_anchor`` (synthetic
    negatives per anchor; "auto" = 1 for triplet / contrastive losses, all of the anchor's
    batch negatives otherwise), ``keep_real_negatives``, ``generator_metric_grad``: see
    :class:`AdversarialTrainer` and the package docstring.

    recorder: a :class:`NegativeRecorder`; diagnostics: add the per-epoch diagnostics of
    :class:`~dmlkit.adversarial.diagnostics.TrainingDiagnostics` to ``history`` (collapse,
    probe accuracy, output norms, hardness; they do not change the run).
    eval_features / eval_labels: evaluated with :func:`dmlkit.evaluate.evaluate` every
    ``eval_every`` epochs (default: at the end only) into ``history``.
    Returns an :class:`AdversarialResult` (``config``: every setting used).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    given = {k: v for k, v in locals().items() if k in PRESET_KEYS}
    st = resolve_settings(preset, method, given, PRESET)
    x_all = _check_inputs(features, "features", trunk is not None)
    y_all = check_labels(labels, x_all.shape[0], "labels", device=x_all.device)
    x_all = x_all.float()
    if (loss_kwargs is None and st["triplet_loss_kwargs"] and isinstance(loss, str)
            and loss == "triplet"):
        loss_kwargs = dict(st["triplet_loss_kwargs"])
    loss_mod, loss_cls = _resolve_loss(loss, loss_kwargs)
    loss_name = loss if isinstance(loss, str) else loss_cls.__name__
    if eval_features is not None:
        ex = _check_inputs(eval_features, "eval_features", trunk is not None)
        if eval_labels is None:
            raise ValueError("eval_features given without eval_labels")
        check_labels(eval_labels, ex.shape[0], "eval_labels")
        if ex.shape[1:] != x_all.shape[1:]:
            what = (f"dimension {ex.shape[1]}" if ex.dim() == 2 else
                    f"shape {tuple(ex.shape[1:])} per sample")
            raise ValueError(f"eval_features have {what} but the training features have "
                             f"{tuple(x_all.shape[1:]) if x_all.dim() > 2 else x_all.shape[1]}")
    if not (0 <= warmup_epochs <= epochs) or st["generator_epochs"] < 0:
        raise ValueError(f"need 0 <= warmup_epochs ({warmup_epochs}) <= epochs ({epochs}) and "
                         f"generator_epochs >= 0")
    y_np = y_all.cpu().numpy()
    counts = np.unique(y_np, return_counts=True)[1]
    if P < 2 or K < 2:
        raise ValueError(f"P and K must be >= 2 (got P={P}, K={K})")
    if len(counts) < P:
        raise ValueError(f"P={P} classes per batch but the data has only {len(counts)} classes")
    npa = st["negatives_per_anchor"]
    if npa == "auto":
        npa = _auto_negatives(loss_name)
    if st["feature_trunk"] not in (None, "linear"):
        raise ValueError(f"feature_trunk must be None or 'linear', got {st['feature_trunk']!r}")
    torch.manual_seed(seed)
    if trunk is None and st["feature_trunk"] == "linear":
        trunk = LinearEmbedding(x_all.shape[1], embedding_dim)
    head_mod = _build_head(st, x_all, trunk, embedding_dim)
    gen_dim = (head_mod.in_dim if hasattr(head_mod, "in_dim") else x_all.shape[1]) \
        if space == "feature" else embedding_dim
    if generator not in ("mlp", "identity", "interpolate"):
        raise ValueError(f"unknown generator {generator!r}; known: 'mlp', 'identity', "
                         "'interpolate'")
    if generator != "mlp" and method == "metric":
        raise ValueError(f"generator={generator!r} belongs to 'daml' / 'daml+sp' (the "
                         "'metric' method has no generator)")
    if generator_terms and generator != "identity":
        raise ValueError("generator_terms=True gives the identity generator an objective; "
                         f"the {generator!r} generator has its own")
    gen_net = positive_generator = None
    gen_kw = dict(out_activation=st["generator_out"], init_std=st["generator_init_std"],
                  normalize_output=st["normalize_synthetic"])
    if generator == "identity":
        gen_net = IdentityGenerator(gen_dim)
        if method == "daml+sp":
            positive_generator = IdentityGenerator(gen_dim, role="positive")
    elif generator == "interpolate":
        fixed = dict(t=interpolation, out_activation=st["generator_out"])
        gen_net = InterpolationGenerator(gen_dim, **fixed)
        if method == "daml+sp":
            positive_generator = InterpolationGenerator(gen_dim, role="positive", **fixed)
    elif method in ("daml", "daml+sp"):
        gen_net = HardNegativeGenerator(gen_dim, st["generator_hidden"], **gen_kw)
        if method == "daml+sp":
            positive_generator = SyntheticPositiveGenerator(gen_dim, st["generator_hidden"],
                                                            **gen_kw)
    dev = torch.device(device)
    for m in (head_mod, gen_net, positive_generator, trunk, loss_mod):
        if m is not None:
            m.to(dev)
    margin = next((float(getattr(loss_mod, k)) for k in ("margin", "lam")
                   if isinstance(getattr(loss_mod, k, None), (int, float))), None)
    if recorder is not None:
        recorder.margin = margin
    diag = None
    if diagnostics:
        diag = TrainingDiagnostics(x_all, y_all, margin=margin or 0.0, seed=seed,
                                   squared=getattr(loss_mod, "form", "") == "squared_distance")
    trainer = AdversarialTrainer(
        loss_mod, head_mod, gen_net, positive_generator, trunk, space=space, lr=st["lr"],
        generator_lr_factor=st["generator_lr_factor"], trunk_lr_factor=st["trunk_lr_factor"],
        lambda1=st["lambda1"], lambda2=st["lambda2"], lam=st["lam"], alpha=st["alpha"],
        alpha_sign=st["alpha_sign"], negatives_per_anchor=npa,
        keep_real_negatives=st["keep_real_negatives"],
        generator_metric_grad=st["generator_metric_grad"], weight_decay=st["weight_decay"],
        recorder=recorder, seed=seed, triplet_scheme=triplet_scheme, routing=st["routing"],
        metric_triples=st["metric_triples"], warmup_triples=st["warmup_triples"],
        real_weight=st["real_weight"],
        generator_weight=st["generator_weight"], weight_decay_on=st["weight_decay_on"],
        generator_terms=generator_terms, diagnostics=diag)
    phases = phase_schedule(method, epochs, warmup_epochs, st["generator_epochs"],
                            st["warmup"])
    if "warmup" in phases and trunk is None:
        raise ValueError("warmup='trunk' trains the trunk alone: give a trunk or "
                         "feature_trunk='linear'")
    n_batches = batches_per_epoch or max(1, math.ceil(len(y_all) / (P * K)))
    config = {"loss": loss_name, "loss_kwargs": dict(loss_kwargs or {}), "method": method,
              "preset": preset, "generator": generator, "epochs": epochs,
              "generator_terms": bool(generator_terms or generator != "identity"),
              **({"interpolation": interpolation} if generator == "interpolate" else {}),
              "warmup_epochs": warmup_epochs,
              "embedding_dim": embedding_dim, "space": space, "P": P, "K": K, "seed": seed,
              "trunk": type(trunk).__name__ if trunk is not None else None,
              **{k: v for k, v in st.items() if k != "triplet_loss_kwargs"},
              "negatives_per_anchor": npa, "batches_per_epoch": n_batches,
              "steps": n_batches * len(phases)}
    result = AdversarialResult(head_mod, gen_net, positive_generator, trunk, loss_mod,
                               config=config, recorder=recorder,
                               use_head=any(p != "warmup" for p in phases))
    return trainer.fit(x_all, y_all, phases, P=P, K=K, batches_per_epoch=n_batches, seed=seed,
                       result=result, eval_features=eval_features, eval_labels=eval_labels,
                       eval_every=eval_every, eval_kwargs=eval_kwargs, device=dev,
                       progress=progress, desc=f"{method}/{loss_name}")


def _build_head(st: dict, x_all: torch.Tensor, trunk: nn.Module | None,
                embedding_dim: int) -> nn.Module:
    head = st["head"]
    if not isinstance(head, str):
        return head
    in_dim = x_all.shape[1] if trunk is None else _out_dim(trunk, x_all)
    hidden = embedding_dim if st["head_hidden"] == "embedding_dim" else st["head_hidden"]
    return MetricHead(in_dim, embedding_dim, head, hidden, init=st["head_init"])


def _out_dim(trunk: nn.Module, x_all: torch.Tensor) -> int:
    with torch.no_grad():
        p = next(trunk.parameters(), None)
        z = torch.zeros_like(x_all[:2], dtype=p.dtype if p is not None else torch.float32)
        was = trunk.training
        trunk.eval()
        out = int(trunk(z).shape[1])
        trunk.train(was)
        return out


def fit_adversarial_images(dataset: str = "glyphs", loss: str | nn.Module = "triplet",
                           method: str = "daml", *, preset: str = "dmlkit",
                           backbone: str = "small_cnn", pretrained: bool = False,
                           embedding_dim: int = 64, dataset_kwargs: dict | None = None,
                           data_root: str | None = None, evaluate: bool = True,
                           **settings) -> AdversarialResult:
    """End to end: :func:`fit_adversarial` with a trainable CNN trunk on a data set's images.

    The trunk is :func:`dmlkit.models.build_model` ``(backbone, embedding_dim,
    normalize=True)`` (backbone + linear embedding + L2 normalisation, the papers' embedding
    network; official: GoogLeNet + fc), the generator reads its output and the metric head
    follows it; the training loop is the engine's (:class:`dmlkit.train.Trainer` stages, as
    :func:`dmlkit.train.fit`), so every preset trains the network itself rather than a head on
    frozen features. The training split's images are held in memory as one (N, C, H, W)
    tensor (no augmentation; meant for glyphs / digits on a CPU, or small runs on a GPU);
    ``evaluate``: the test split is evaluated into ``history`` (``eval_every`` as in
    fit_adversarial). ``settings``: any other argument of fit_adversarial (``epochs``, ``P``,
    ``lr``, ``trunk_lr_factor``, ...). Note that "dmlkit" and "pml" keep the trunk at
    ``lr * trunk_lr_factor`` (1/1000) in every phase: pass ``trunk_lr_factor=1`` for a trunk
    that learns as fast as the head. Returns an :class:`AdversarialResult` whose ``embed``
    takes images.
    """
    from .. import data, models

    kw = dict(dataset_kwargs or {})
    if data_root is not None:
        kw.setdefault("root", data_root)
    images = {}
    for split in ("train", "test") if evaluate else ("train",):
        ds = data.load_dataset(dataset, split, **kw)
        if isinstance(getattr(ds, "images", None), torch.Tensor) and ds.transform is None:
            xs = ds.images.float()                       # in-memory images: no per-item copy
        else:
            xs = torch.stack([torch.as_tensor(ds[i][0]) for i in range(len(ds))]).float()
        images[split] = (xs, torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64))
    x_tr, y_tr = images["train"]
    torch.manual_seed(int(settings.get("seed", 0)))
    trunk = models.build_model(backbone, embedding_dim, pretrained=pretrained, normalize=True,
                               in_channels=int(x_tr.shape[1]))
    if evaluate:
        settings.setdefault("eval_features", images["test"][0])
        settings.setdefault("eval_labels", images["test"][1])
    res = fit_adversarial(x_tr, y_tr, loss, method, preset=preset, trunk=trunk,
                          embedding_dim=embedding_dim, **settings)
    res.config.update(dataset=dataset, backbone=backbone, pretrained=pretrained,
                      dataset_kwargs=kw)
    return res
