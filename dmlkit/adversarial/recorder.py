"""Recording the synthetic negatives of a run, and how hard they are.

:class:`NegativeRecorder` keeps (anchor, positive, real negative, synthetic negative) triples
during training; :func:`hardness_summary` condenses its :meth:`~NegativeRecorder.hardness_frame`
per epoch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["NegativeRecorder", "hardness_summary"]


class NegativeRecorder:
    """Keeps (anchor, positive, real negative, synthetic negative) triples during training.

    Called by :class:`dmlkit.adversarial.AdversarialTrainer` once per joint step; keeps at
    most ``max_per_epoch`` triples per epoch (the first ones seen), every ``every`` epochs.
    Stores the generator-space vectors and the metric's embeddings (L2-normalised when the loss
    normalises) at record time, the labels and the epoch. ``margin``: the loss margin, kept
    for hardness plots.

    >>> import torch
    >>> rec = NegativeRecorder(max_per_epoch=4)
    >>> e = torch.eye(2)                          # anchors (1, 0), (0, 1); negatives swapped
    >>> rec.record(0, anchor=e, positive=e, negative=e.flip(0), synthetic=0.5 * e.flip(0),
    ...            anchor_emb=e, positive_emb=e, negative_emb=e.flip(0),
    ...            synthetic_emb=0.5 * e.flip(0), labels=torch.tensor([0, 1]),
    ...            negative_labels=torch.tensor([1, 0]))
    >>> rec.hardness_frame()[["d_ap", "d_an", "d_asyn"]].astype(float).round(3).values.tolist()
    [[0.0, 1.414, 1.118], [0.0, 1.414, 1.118]]
    >>> X, meta = rec.points("embedding")    # stacked points for UMAP / t-SNE
    >>> X.shape, meta.kind.tolist()[::2]
    ((8, 2), ['anchor', 'positive', 'negative', 'synthetic'])
    """

    KINDS = ("anchor", "positive", "negative", "synthetic")

    def __init__(self, max_per_epoch: int = 256, every: int = 1):
        if max_per_epoch < 1 or every < 1:
            raise ValueError("max_per_epoch and every must be >= 1")
        self.max_per_epoch, self.every = int(max_per_epoch), int(every)
        self.records: list[dict[str, np.ndarray]] = []
        self._count: dict[int, int] = {}
        self.margin: float | None = None

    def wants(self, epoch: int) -> bool:
        return epoch % self.every == 0 and self._count.get(epoch, 0) < self.max_per_epoch

    def record(self, epoch: int, *, anchor, positive, negative, synthetic, anchor_emb,
               positive_emb, negative_emb, synthetic_emb, labels, negative_labels,
               synthetic_positive=None) -> None:
        """All arrays (T, ...) aligned by triple; ``labels``: anchor labels (T,)."""
        if not self.wants(epoch):
            return
        take = min(self.max_per_epoch - self._count.get(epoch, 0), int(anchor.shape[0]))

        def np_(t):
            return t[:take].detach().float().cpu().numpy()

        rec = {"epoch": np.full(take, epoch), "label": np_(labels.float()).astype(np.int64),
               "negative_label": np_(negative_labels.float()).astype(np.int64),
               "anchor": np_(anchor), "positive": np_(positive), "negative": np_(negative),
               "synthetic": np_(synthetic), "anchor_emb": np_(anchor_emb),
               "positive_emb": np_(positive_emb), "negative_emb": np_(negative_emb),
               "synthetic_emb": np_(synthetic_emb)}
        if synthetic_positive is not None:
            rec["synthetic_positive"] = np_(synthetic_positive)
        self.records.append(rec)
        self._count[epoch] = self._count.get(epoch, 0) + take

    def __len__(self) -> int:
        return sum(len(r["epoch"]) for r in self.records)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every recorded field concatenated over records (fields absent somewhere dropped)."""
        if not self.records:
            raise ValueError("nothing recorded yet (the recorder only sees joint-training steps)")
        keys = set.intersection(*(set(r) for r in self.records))
        return {k: np.concatenate([r[k] for r in self.records]) for k in sorted(keys)}

    def hardness_frame(self):
        """pandas DataFrame, one row per triple: epoch, label, negative_label, d_ap, d_an,
        d_asyn (Euclidean distances between the metric's embeddings), the same in the
        generator's space (f_d_ap, f_d_an, f_d_asyn), and ``margin``."""
        a = self.arrays()

        def d(x, y):
            return np.linalg.norm(a[x] - a[y], axis=1)

        return pd.DataFrame({
            "epoch": a["epoch"], "label": a["label"], "negative_label": a["negative_label"],
            "d_ap": d("anchor_emb", "positive_emb"), "d_an": d("anchor_emb", "negative_emb"),
            "d_asyn": d("anchor_emb", "synthetic_emb"), "f_d_ap": d("anchor", "positive"),
            "f_d_an": d("anchor", "negative"), "f_d_asyn": d("anchor", "synthetic"),
            "margin": np.full(len(a["epoch"]), np.nan if self.margin is None else self.margin),
        })

    def points(self, space: str = "embedding", epoch: int | None = None):
        """Stacked points for UMAP / t-SNE: returns (X (4T, dim), meta DataFrame with kind,
        label (the class of the point: anchor label for anchor/positive, negative label for
        negative/synthetic), epoch, triple)."""
        if space not in ("embedding", "feature"):
            raise ValueError(f"space must be 'embedding' or 'feature', got {space!r}")
        a = self.arrays()
        keep = np.ones(len(a["epoch"]), bool) if epoch is None else a["epoch"] == epoch
        suffix = "_emb" if space == "embedding" else ""
        xs, metas = [], []
        for kind in self.KINDS:
            xs.append(a[kind + suffix][keep])
            lab = a["label"] if kind in ("anchor", "positive") else a["negative_label"]
            metas.append(pd.DataFrame({"kind": kind, "label": lab[keep],
                                       "epoch": a["epoch"][keep],
                                       "triple": np.nonzero(keep)[0]}))
        return np.concatenate(xs), pd.concat(metas, ignore_index=True)


def hardness_summary(frame: pd.DataFrame, by: str | None = "epoch") -> pd.DataFrame:
    """Hardness statistics of recorded triples (:meth:`NegativeRecorder.hardness_frame`).

    Per group (``by``; None: one row for all): ``n`` triples, mean ``d_ap``, ``d_an`` (real
    negative) and ``d_asyn`` (synthetic negative) in the metric's embedding space,
    ``harder`` = share of triples whose synthetic negative is closer to the anchor than the
    real one, ``violating_real`` / ``violating_synthetic`` = share with
    ``d_an < d_ap + margin`` / ``d_asyn < d_ap + margin`` (triples the triplet loss still
    penalises; ``margin`` 0 when the recorder had none).
    """
    need = {"d_ap", "d_an", "d_asyn"}
    if not need <= set(frame.columns):
        raise ValueError(f"frame needs columns {sorted(need)}, got {list(frame.columns)}")
    margin = frame["margin"].fillna(0.0) if "margin" in frame else 0.0
    f = frame.assign(harder=frame["d_asyn"] < frame["d_an"],
                     violating_real=frame["d_an"] < frame["d_ap"] + margin,
                     violating_synthetic=frame["d_asyn"] < frame["d_ap"] + margin)
    agg = {"n": ("d_ap", "size"), "d_ap": ("d_ap", "mean"), "d_an": ("d_an", "mean"),
           "d_asyn": ("d_asyn", "mean"), "harder": ("harder", "mean"),
           "violating_real": ("violating_real", "mean"),
           "violating_synthetic": ("violating_synthetic", "mean")}
    if by is None:
        return f.assign(_all="all").groupby("_all").agg(**agg).reset_index(drop=True)
    return f.groupby(by).agg(**agg).reset_index()
