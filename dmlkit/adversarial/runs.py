"""Adversarial runs on frozen backbone features, in the shape of :func:`dmlkit.train.fit`'s
results (notebook 09 trains them next to ``fit`` runs and tabulates both).

>>> parse_loss_spec("daml+sp:triplet")
('daml+sp', 'triplet')
>>> parse_loss_spec("triplet")
('metric', 'triplet')
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .fitting import fit_adversarial
from .training import METHODS

__all__ = ["AdversarialRun", "fit_adversarial_run", "parse_loss_spec", "test_embeddings",
           "total_iterations"]


def parse_loss_spec(spec: str) -> tuple[str, str]:
    """``"triplet"`` -> ``("metric", "triplet")``; ``"daml:triplet"`` -> ``("daml", "triplet")``;
    ``"daml+sp:npair"`` -> ``("daml+sp", "npair")``. Unknown methods or losses raise ValueError
    listing the known ones."""
    from .. import losses

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"loss must be a non-empty string, got {spec!r}")
    method, _, loss = spec.strip().rpartition(":")
    method = method.lower() or "metric"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} in {spec!r}; known: "
                         f"{', '.join(METHODS)} (write '<method>:<loss>')")
    if loss not in losses.available():
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(losses.available())}")
    return method, loss


@dataclass
class AdversarialRun:
    """A DAML / DAML+SP run of notebook 09, with the attributes of
    :class:`dmlkit.train.FitResult` the notebook and :func:`run_row` read: ``history``
    (DataFrame: epoch, phase, loss (= J_m), objective terms, ``test_<metric>`` logged at every
    epoch, never used for selection), ``test_metrics`` (last epoch), ``initial_test_metrics``
    (the frozen backbone features themselves), ``best_epoch`` (= epochs: no selection),
    ``config`` (a :class:`dmlkit.train.TrainConfig`), ``device``, ``result``
    (:class:`dmlkit.adversarial.AdversarialResult`), ``test_embeddings`` / ``test_labels``."""

    history: pd.DataFrame
    test_metrics: dict
    initial_test_metrics: dict
    best_epoch: int
    config: object
    device: object
    result: object
    test_embeddings: np.ndarray
    test_labels: np.ndarray
    iterations: int


def fit_adversarial_run(method: str = "daml", *, dataset: str = "glyphs",
                        backbone: str = "small_cnn", pretrained: bool = True,
                        loss: str = "triplet", loss_params: dict | None = None,
                        embedding_dim: int = 64, epochs: int = 10,
                        iterations_per_epoch: int | None = None, P: int = 16, K: int = 4,
                        lr: float = 1e-3, image_size: int = 224, device: str = "auto",
                        dataset_kwargs: dict | None = None, data_root: str | None = None,
                        seed: int = 0, warmup_epochs: int | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        **train_settings) -> AdversarialRun:
    """DAML (``method="daml"``) or DAML+SP on frozen ``backbone`` features of ``dataset``.

    The backbone's features of the train and test splits are extracted once
    (:func:`dmlkit.train.extract_features`; In-shop: queries searched in the gallery), then
    :func:`dmlkit.adversarial.fit_adversarial` trains a 2-layer metric head to
    ``embedding_dim`` and the generator(s) for ``epochs`` epochs of ``iterations_per_epoch``
    P x K batches (default one pass), the first ``warmup_epochs`` (default a third) with the
    metric loss alone; the other knobs are fit_adversarial's defaults. ``train_settings``: the
    remaining :class:`dmlkit.train.TrainConfig` fields (recorded in ``config``, e.g. amp).
    """
    from .. import data, evaluate, train

    if method not in ("daml", "daml+sp"):
        raise ValueError(f"method must be 'daml' or 'daml+sp', got {method!r}")
    kw = dict(dataset_kwargs or {})
    if data_root is not None and "root" in (data.DATASETS.parameters(dataset) or ()):
        kw.setdefault("root", data_root)
    dev = train.select_device(device)
    info = data.dataset_info(dataset)
    inshop = info.protocol == "query_gallery"
    splits = ("train", "query", "gallery") if inshop else ("train", "test")
    feats = {}
    for split in splits:
        torch.manual_seed(seed)  # the same backbone (random or pretrained head-less) each split
        feats[split] = train.extract_features(backbone, dataset, device=str(dev), split=split,
                                              pretrained=pretrained, cache_dir=cache_dir,
                                              dataset_kwargs=kw, image_size=image_size,
                                              progress=False)
    (x_tr, y_tr) = feats["train"]
    (x_te, y_te) = feats["query" if inshop else "test"]
    gallery = feats.get("gallery")
    eval_kw = {"ks": info.recall_ks}
    if gallery is not None:
        eval_kw["gallery"] = gallery
        eval_kw["metrics"] = ["recall", "map@r", "r_precision"]
    batches = iterations_per_epoch or max(1, math.ceil(len(y_tr) / (P * K)))
    warm = max(1, epochs // 3) if warmup_epochs is None else int(warmup_epochs)
    res = fit_adversarial(
        x_tr, y_tr, loss, method, loss_kwargs=loss_params or None, embedding_dim=embedding_dim,
        epochs=epochs, warmup_epochs=min(warm, epochs), generator_epochs=1, lr=lr, P=P, K=K,
        batches_per_epoch=batches, seed=seed, eval_features=x_te, eval_labels=y_te,
        eval_every=1, eval_kwargs=eval_kw, device=dev)
    if gallery is not None:  # the metric head embeds the gallery as well
        g_emb = res.embed(gallery[0])
        eval_kw["gallery"] = (g_emb, gallery[1])
    history = pd.DataFrame(res.history)
    metric_cols = [c for c in history.columns if c not in ("epoch", "phase")
                   and not c.startswith("J")]
    history = history.rename(columns={c: f"test_{c}" for c in metric_cols})
    history["loss"] = history.get("J_m")
    history["epoch"] = history["epoch"] + 1
    emb = res.embed(x_te)
    final = evaluate.evaluate(emb, y_te, seed=seed, **eval_kw)
    base_kw = dict(eval_kw)
    if gallery is not None:
        base_kw["gallery"] = gallery
    initial = evaluate.evaluate(x_te, y_te, seed=seed, **base_kw)
    fields = {f for f in train.TrainConfig.__dataclass_fields__}
    cfg = train.TrainConfig(**{k: v for k, v in dict(
        train_settings, dataset=dataset, backbone=backbone, pretrained=pretrained,
        loss=f"{method}:{loss}", loss_params=dict(loss_params or {}),
        embedding_dim=embedding_dim, epochs=epochs, iterations_per_epoch=batches, P=P, K=K,
        lr=lr, image_size=image_size, device=str(dev), data_root=data_root,
        dataset_kwargs=kw, seed=seed, val_fraction=0.0).items() if k in fields})
    return AdversarialRun(history=history, test_metrics={k: float(v) for k, v in final.items()},
                          initial_test_metrics={k: float(v) for k, v in initial.items()},
                          best_epoch=int(epochs), config=cfg, device=dev, result=res,
                          test_embeddings=emb.numpy(), test_labels=y_te.numpy(),
                          iterations=int(batches * (epochs + 1)))


def total_iterations(result) -> int | None:
    """Optimiser steps of a run: ``epochs x iterations_per_epoch`` (None when an epoch was
    one pass of the sampler and its length is unknown here)."""
    if isinstance(result, AdversarialRun):
        return result.iterations
    cfg = result.config
    if cfg.iterations_per_epoch is None:
        return None
    return int(cfg.epochs) * int(cfg.iterations_per_epoch)


def test_embeddings(result, max_points: int | None = 2000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Test-class embeddings of a run (a random sample of at most ``max_points``).

    :class:`dmlkit.train.FitResult`: the best model embeds the test split (In-shop: the
    queries) with evaluation transforms; :class:`AdversarialRun`: its stored embeddings.
    Returns ``(embeddings (n, D) float32, labels (n,) int64)``.
    """
    from .. import data

    rng = np.random.default_rng(seed)
    if isinstance(result, AdversarialRun):
        emb, lab = result.test_embeddings, result.test_labels
        keep = np.arange(len(lab))
        if max_points is not None and len(lab) > max_points:
            keep = np.sort(rng.choice(len(lab), max_points, replace=False))
        return emb[keep], lab[keep]
    cfg = result.config
    if not isinstance(cfg.dataset, str):
        raise ValueError("test_embeddings needs a run on a named data set")
    kw = dict(cfg.dataset_kwargs)
    info = data.dataset_info(cfg.dataset)
    if info.image_files:
        kw.setdefault("transform", data.get_transforms(False, image_size=cfg.image_size,
                                                       resize=cfg.resize))
    ds = data.load_dataset(cfg.dataset, "query" if info.protocol == "query_gallery" else "test",
                           root=cfg.data_root, **kw)
    idx = np.arange(len(ds))
    if max_points is not None and len(ds) > max_points:
        idx = np.sort(rng.choice(len(ds), max_points, replace=False))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()),
                                         batch_size=cfg.batch_size_eval, shuffle=False)
    model = result.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    embs, labs = [], []
    with torch.no_grad():
        for x, y in loader:
            embs.append(model(x.to(device)).float().cpu())
            labs.append(torch.as_tensor(y, dtype=torch.int64))
    model.train(was_training)
    return torch.cat(embs).numpy(), torch.cat(labs).numpy()
