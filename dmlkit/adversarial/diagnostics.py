"""Descriptions of an adversarial run: the geometry of the real embeddings (same- and
different-class cosines, raw and after centring, and the shared offset), how well a linear
probe tells synthetic from real features, the generator's output norm, and how hard the
synthetic negatives are; as functions of tensors and recorded per epoch
(``fit_adversarial(..., diagnostics=True)`` adds them to every history row). They describe a
run; attributing a difference between runs to one of them takes a run that changes that one
thing (:mod:`dmlkit.adversarial.ablation`).

>>> import torch
>>> emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
>>> collapse(emb, torch.tensor([0, 0, 1, 1]))
{'same': 1.0, 'different': 0.0}
>>> shift = emb * 0.01 + torch.tensor([6.0, 0.0])     # a shared offset, a small residual
>>> c = collapse(shift, torch.tensor([0, 0, 1, 1]), centred=True)
>>> round(c["same"], 4), round(c["different"], 4)         # raw cosines: all alike
(1.0, 1.0)
>>> c["same_centred"], c["different_centred"]             # the classes apart once centred
(1.0, -1.0)
>>> round(c["offset"], 3), round(c["spread"], 4)
(6.005, 0.0071)
>>> a, p, s = torch.zeros(2, 2), torch.tensor([[1.0, 0.0]] * 2), torch.tensor([[0.0, 2.0]] * 2)
>>> hardness(a, p, s, margin=0.5)
{'d_ap': 1.0, 'd_asyn': 2.0, 'violating': 0.0}
>>> output_norm(s)
2.0
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_embeddings, check_embeddings_labels

__all__ = ["TrainingDiagnostics", "collapse", "hardness", "output_norm", "separability"]


def collapse(embeddings: torch.Tensor, labels: torch.Tensor,
             centred: bool = False) -> dict[str, float]:
    """Mean cosine similarity of same-class pairs (``i != j``) and of different-class pairs.

    embeddings: (N, E); labels: (N,). Both raw cosines close to 1 mean the embeddings point
    the same way, which is *not* by itself a loss of retrieval: a shared offset (every
    embedding = one common vector + a small residual that still separates the classes)
    gives raw cosines near 1 and an intact ranking, since ranking by cosine depends on the
    residuals. centred: also ``same_centred`` / ``different_centred`` (the cosines after
    subtracting the mean embedding), ``offset`` (norm of the mean embedding) and ``spread``
    (root mean square norm of the residuals). Retrieval is lost only when the centred
    cosines do not separate the classes either (and the retrieval metrics say so). A value is
    NaN when no pair exists.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    x = emb.detach().double()
    same = lab[:, None] == lab[None, :]
    off = ~torch.eye(len(lab), dtype=torch.bool, device=lab.device)

    def means(v):
        z = F.normalize(v, dim=1)
        cos = z @ z.T
        return [float(cos[m].mean()) if bool(m.any()) else float("nan")
                for m in (same & off, ~same)]

    out = dict(zip(("same", "different"), means(x)))
    if centred:
        mu = x.mean(dim=0, keepdim=True)
        out.update(zip(("same_centred", "different_centred"), means(x - mu)))
        out["offset"] = float(mu.norm())
        out["spread"] = float((x - mu).pow(2).sum(1).mean().sqrt())
    return out


def separability(real: torch.Tensor, synthetic: torch.Tensor, *, test_fraction: float = 0.5,
                 seed: int = 0, max_iter: int = 1000) -> float:
    """Held-out accuracy of a linear probe telling synthetic from real vectors.

    real: (N, D), synthetic: (M, D). Both are pooled, standardised with the training part's
    mean and standard deviation, split at random (``seed``) into train / test
    (``test_fraction`` held out) and a scikit-learn ``LogisticRegression`` (lbfgs,
    ``max_iter``) is fit on the training part; returns its accuracy on the held-out part.
    0.5 for balanced classes means "indistinguishable"; near 1 means the metric can learn to
    tell synthetic from real instead of learning the classes.
    """
    from sklearn.linear_model import LogisticRegression

    r = check_embeddings(real, "real").detach().double().cpu().numpy()
    s = check_embeddings(synthetic, "synthetic").detach().double().cpu().numpy()
    if r.shape[1] != s.shape[1]:
        raise ValueError(f"real ({r.shape[1]}) and synthetic ({s.shape[1]}) dimensions differ")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    X = np.concatenate([r, s])
    y = np.concatenate([np.zeros(len(r)), np.ones(len(s))])
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    if n_test == 0 or len(np.unique(y[train])) < 2:
        raise ValueError("the split leaves no test points or one class only in training; "
                         "pass more vectors")
    mu, sd = X[train].mean(0), X[train].std(0)
    sd[sd == 0] = 1.0
    Xs = (X - mu) / sd
    probe = LogisticRegression(max_iter=max_iter).fit(Xs[train], y[train])
    return float((probe.predict(Xs[test]) == y[test]).mean())


def output_norm(x: torch.Tensor) -> float:
    """Mean L2 norm of the rows of x (T, D) (e.g. the generator's outputs)."""
    return float(check_embeddings(x, "x").detach().double().norm(dim=1).mean())


def hardness(anchor: torch.Tensor, positive: torch.Tensor, synthetic: torch.Tensor,
             margin: float = 0.0, squared: bool = False) -> dict[str, float]:
    """How hard synthetic negatives are for the metric: mean ``d_ap = D(a, p)``, mean
    ``d_asyn = D(a, syn)`` and the share ``violating`` of triples with ``d_asyn < d_ap +
    margin`` (those a triplet loss with this margin still penalises). anchor, positive,
    synthetic: (T, E) embeddings. squared: D is the squared Euclidean distance (the official
    triplet) instead of the Euclidean one."""
    for name, t in (("anchor", anchor), ("positive", positive), ("synthetic", synthetic)):
        check_embeddings(t, name)
    if not (anchor.shape == positive.shape == synthetic.shape):
        raise ValueError(f"shape mismatch: {tuple(anchor.shape)}, {tuple(positive.shape)}, "
                         f"{tuple(synthetic.shape)}")
    a, p, s = (t.detach().double() for t in (anchor, positive, synthetic))
    d_ap, d_as = (p - a).pow(2).sum(1), (s - a).pow(2).sum(1)
    if not squared:
        d_ap, d_as = d_ap.sqrt(), d_as.sqrt()
    return {"d_ap": float(d_ap.mean()), "d_asyn": float(d_as.mean()),
            "violating": float((d_as < d_ap + float(margin)).double().mean())}


class TrainingDiagnostics:
    """The diagnostics of every epoch of a run (used by :class:`AdversarialTrainer`).

    features, labels: the real training inputs; at every epoch's end the first
    ``max_points`` (a fixed random subset, ``seed``) are embedded for :func:`collapse`.
    During the generator / joint steps it keeps the first ``probe_points`` real and synthetic
    negatives (generator space) for :func:`separability`, and running means of the output
    norms and of :func:`hardness` (``margin``, ``squared``: the loss's). :meth:`epoch_row`
    returns ``collapse_same``, ``collapse_different``, their centred versions
    ``centred_same`` / ``centred_different``, ``offset`` and ``spread`` (:func:`collapse`
    with ``centred=True``, on the test-time embeddings) and, after adversarial steps,
    ``probe_accuracy``, ``synthetic_norm``, ``negative_norm``, ``d_ap``, ``d_asyn``,
    ``violating``. Uses its own random generator: the run's numbers do not change.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, *, max_points: int = 512,
                 probe_points: int = 256, margin: float = 0.0, squared: bool = False,
                 seed: int = 0):
        n = len(labels)
        keep = np.sort(np.random.default_rng(seed).permutation(n)[:min(n, max_points)])
        idx = torch.from_numpy(keep)
        self.features, self.labels = features[idx], labels[idx]
        self.probe_points, self.margin, self.squared = int(probe_points), margin, squared
        self.seed = seed
        self.start_epoch()

    def start_epoch(self) -> None:
        self.neg, self.syn = [], []
        self.sums: dict[str, float] = {}
        self.count = 0

    def update(self, *, negative, synthetic, anchor_emb, positive_emb, synthetic_emb,
               **_unused) -> None:
        kept = sum(len(t) for t in self.syn)
        if kept < self.probe_points:
            self.neg.append(negative[:self.probe_points - kept].detach().cpu())
            self.syn.append(synthetic[:self.probe_points - kept].detach().cpu())
        values = hardness(anchor_emb, positive_emb, synthetic_emb, self.margin, self.squared)
        values["synthetic_norm"] = output_norm(synthetic)
        values["negative_norm"] = output_norm(negative)
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def epoch_row(self, result) -> dict[str, float]:
        emb = result.embed(self.features)
        c = collapse(emb, self.labels, centred=True)
        row = {"collapse_same": c["same"], "collapse_different": c["different"],
               "centred_same": c["same_centred"], "centred_different": c["different_centred"],
               "offset": c["offset"], "spread": c["spread"]}
        if self.count:
            row["probe_accuracy"] = separability(torch.cat(self.neg), torch.cat(self.syn),
                                                 seed=self.seed)
            row.update({k: v / self.count for k, v in self.sums.items()})
        return row
