"""Experiments the notebooks share: small embedding runs, mining statistics, closed-form pair
weights, label noise, OSM / CAA breakdowns, ablation tables.

Everything here is small-scale by design (a few hundred glyph images, a four-block CNN, a few
hundred steps on a CPU) so that a notebook can compare several losses x seeds in seconds:

>>> from dmlkit import analysis
>>> task = analysis.image_task("glyphs", num_classes=60, num_test_classes=40)
>>> run = analysis.train_embedding(task, "multi_similarity", steps=120, track_mining=True)
>>> run.scores                       # {"recall@1": ..., "map@r": ...} on the unseen classes
>>> table = analysis.run_ablation(task, ["binomial", "multi_similarity"], seeds=(0, 1))

The test classes are never seen in training (class-disjoint, FORMULAS.md section 5); scores on
them are reported for teaching, and nothing here selects a model on them.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as _data
from . import evaluate as _evaluate
from . import losses as _losses
from . import models as _models
from . import weights as _weights
from .losses.base import PairBatch, PairLoss, make_batch

__all__ = [
    "ImageTask",
    "TrainRun",
    "batch_losses",
    "build_net",
    "closed_form_weights",
    "embed",
    "image_task",
    "inject_label_noise",
    "loss_landscape_2d",
    "mining_stats",
    "osm_caa_pair_table",
    "published_results",
    "retrieval_scores",
    "run_ablation",
    "single_thread",
    "summarize",
    "theorem_table",
    "train_embedding",
    "triplet_table",
]


# ------------------------------------------------------------------------------- data and nets


@contextlib.contextmanager
def single_thread():
    """Run the block with one torch thread (restored afterwards).

    The networks here are tiny: intra-op parallelism costs more than it gains on a CPU, and on
    a shared machine extra threads spin and slow everyone down.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ImageTask:
    """A class-disjoint image retrieval task held in memory.

    ``X`` (N, C, H, W) float32 / ``y`` (N,) int64: training images and labels (0..C-1);
    ``X_test`` / ``y_test``: images of classes never seen in training.
    """

    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    name: str = "task"

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if self.y.numel() else 0

    def __repr__(self) -> str:
        return (f"ImageTask({self.name}: train {tuple(self.X.shape)} / {self.num_classes} "
                f"classes, test {tuple(self.X_test.shape)} / "
                f"{len(torch.unique(self.y_test))} unseen classes)")


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(ds, "images") and getattr(ds, "transform", None) is None:
        X = torch.as_tensor(ds.images, dtype=torch.float32)
    else:
        X = torch.stack([torch.as_tensor(ds[i][0], dtype=torch.float32) for i in range(len(ds))])
    return X.contiguous(), torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)


def image_task(dataset: str = "glyphs", **kwargs) -> ImageTask:
    """Train / test tensors of an embedded data set (``"glyphs"`` or ``"digits"``).

    ``kwargs`` go to :func:`dmlkit.data.load_dataset` for both splits (e.g. ``num_classes``,
    ``num_test_classes``, ``images_per_class``, ``size``, ``difficulty`` for glyphs).
    """
    if dataset not in ("glyphs", "digits"):
        raise ValueError(f"image_task holds an embedded data set in memory: choose 'glyphs' or "
                         f"'digits', got {dataset!r}")
    X, y = _tensors(_data.load_dataset(dataset, "train", **kwargs))
    Xt, yt = _tensors(_data.load_dataset(dataset, "test", **kwargs))
    return ImageTask(X, y, Xt, yt, name=dataset)


def build_net(in_channels: int = 1, embedding_dim: int = 32, width: int = 16,
              seed: int = 0) -> _models.EmbeddingNet:
    """A :class:`~dmlkit.models.SmallCNN` of ``width`` + a linear head to ``embedding_dim``.

    The output is NOT normalised: each loss normalises (or not, N-pair) itself, and the
    retrieval metrics use cosine similarity.
    """
    torch.manual_seed(seed)
    backbone = _models.SmallCNN(in_channels, None, width=width)
    return _models.EmbeddingNet(backbone, backbone.out_features, embedding_dim,
                                normalize=False, name=f"small_cnn_w{width}")


@torch.no_grad()
def embed(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Embeddings (N, D) of images X (N, C, H, W), eval mode, no gradient (mode restored)."""
    was = model.training
    model.eval()
    try:
        out = [model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, 0)


def retrieval_scores(embeddings, labels) -> dict[str, float]:
    """``{"recall@1", "map@r"}`` with the test set as queries and database (cosine)."""
    res = _evaluate.retrieval_metrics(embeddings, labels, ks=(1,))
    return {"recall@1": float(res["recall@1"]), "map@r": float(res["map@r"])}


# ------------------------------------------------------------------------------- mining stats


def mining_stats(loss: PairLoss, embeddings, labels) -> dict[str, float]:
    """Which pairs of a batch a loss actually uses: shares of pairs with a non-zero weight.

    Returns ``pos_kept`` / ``neg_kept`` = fraction of the positive / negative (ordered) pairs
    whose weight ``W_ij`` (:func:`dmlkit.weights.pair_weights`) is non-zero, and for triplet
    losses ``triplets_kept`` = fraction of the valid triplets with a non-zero loss / kept by
    the mining. Embeddings: (B, D); labels: (B,).
    """
    emb = torch.as_tensor(embeddings).detach()
    lab = torch.as_tensor(labels)
    _, W = _weights.pair_weights(loss, emb, lab)
    batch = make_batch(emb, lab, normalize=loss.normalize)
    pos, neg = batch.pos, batch.neg
    out = {"pos_kept": float(((W != 0) & pos).sum()) / max(int(pos.sum()), 1),
           "neg_kept": float(((W != 0) & neg).sum()) / max(int(neg.sum()), 1)}
    if isinstance(loss, _losses.get("triplet")) and loss.mining != "batch_hard":
        from .losses.triplet import triplet_counts

        _, _, kept, total = triplet_counts(loss.scores(batch), pos, neg, loss.margin,
                                           loss.mining)
        out["triplets_kept"] = float(kept) / max(float(total), 1.0)
    return out


# ------------------------------------------------------------------------------- training


@dataclass
class TrainRun:
    """What :func:`train_embedding` returns.

    ``model`` (eval mode), ``loss`` (with any trained parameters, e.g. CAA centres),
    ``history`` (one row per logged step: step, loss, and with ``track_mining`` the
    :func:`mining_stats` of that step's batch; with ``eval_every`` also test recall@1 / map@r),
    ``scores`` (final test retrieval), ``initial_scores`` (the untrained network),
    ``snapshots`` (step -> (S, W, pos, neg) of a fixed probe batch), ``seconds``.
    """

    model: nn.Module
    loss: nn.Module
    history: pd.DataFrame
    scores: dict
    initial_scores: dict
    snapshots: dict = field(default_factory=dict)
    seconds: float = 0.0


def _endless(sampler) -> Iterable[list[int]]:
    epoch = 0
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        empty = True
        for idx in sampler:
            empty = False
            yield list(idx)
        if empty:
            raise ValueError("the batch sampler yielded no batch")
        epoch += 1


def _as_loss(loss, task: ImageTask, embedding_dim: int, params: Mapping | None) -> nn.Module:
    if isinstance(loss, nn.Module):
        return loss
    params = dict(params or {})
    if str(loss) == "osm_caa":
        params.setdefault("num_classes", task.num_classes)
        params.setdefault("embedding_dim", embedding_dim)
    return _losses.build(loss, **params)


def train_embedding(task: ImageTask, loss: str | nn.Module = "multi_similarity", *,
                    loss_params: Mapping | None = None, steps: int = 120, P: int = 8,
                    K: int = 4, lr: float = 2e-3, embedding_dim: int = 32, width: int = 16,
                    seed: int = 0, labels: torch.Tensor | None = None,
                    model: nn.Module | None = None, sampler=None, track_mining: bool = False,
                    log_every: int = 10, eval_every: int = 0,
                    snapshot_steps: Sequence[int] = (), probe: tuple | None = None,
                    progress: bool = False) -> TrainRun:
    """Train a small CNN embedding with a metric-learning loss on ``task`` (Adam, P x K batches).

    Args:
        loss: a name of :func:`dmlkit.losses.available` (``osm_caa`` gets ``num_classes`` and
            ``embedding_dim`` from the task) or a loss module; its parameters are trained too.
        labels: training labels to use instead of ``task.y`` (e.g. noisy ones).
        model: a network to train (default :func:`build_net` seeded with ``seed``).
        sampler: a batch sampler (iterable of index lists, e.g.
            :class:`dmlkit.data.HardNegativeClassSampler`); default ``PKSampler(P, K)``.
        track_mining: log :func:`mining_stats` of the training batch every ``log_every`` steps.
        eval_every: log test recall@1 / MAP@R every ``eval_every`` steps (0: only at the end).
        snapshot_steps: steps at which :func:`dmlkit.weights.pair_weights` of the loss on
            ``probe`` = (images, labels) (default: the first training batch) are stored.
    Runs single-threaded (:func:`single_thread`); deterministic for a given seed.
    """
    t0 = time.perf_counter()
    y = task.y if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    if y.shape != task.y.shape:
        raise ValueError(f"labels must have shape {tuple(task.y.shape)}, got {tuple(y.shape)}")
    with single_thread():
        net = model if model is not None else build_net(task.X.shape[1], embedding_dim, width,
                                                        seed)
        loss_mod = _as_loss(loss, task, embedding_dim, loss_params)
        params = list(net.parameters()) + [p for p in loss_mod.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        batches = _endless(sampler if sampler is not None
                           else _data.PKSampler(y.numpy(), P, K, seed=seed))
        torch.manual_seed(seed)
        initial = retrieval_scores(embed(net, task.X_test), task.y_test)
        rows, snaps = [], {}
        steps_bar = tqdm(range(steps + 1), desc="steps", disable=not progress, leave=False)
        for step in steps_bar:
            idx = torch.as_tensor(next(batches))
            if probe is None:
                probe = (task.X[idx], y[idx])
            if step in set(snapshot_steps):
                emb_p = embed(net, probe[0])
                S, W = _weights.pair_weights(loss_mod, emb_p, probe[1])
                b = make_batch(emb_p, probe[1], normalize=loss_mod.normalize)
                snaps[step] = (S.numpy(), W.numpy(), b.pos.numpy(), b.neg.numpy())
            if step == steps:
                break
            net.train()
            emb = net(task.X[idx])
            value = loss_mod(emb, y[idx])
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            if step % log_every == 0 or step == steps - 1:
                row = {"step": step, "loss": float(value.detach())}
                if track_mining:
                    row.update(mining_stats(loss_mod, emb.detach(), y[idx]))
                if eval_every and (step % eval_every == 0 or step == steps - 1):
                    row.update(retrieval_scores(embed(net, task.X_test), task.y_test))
                rows.append(row)
        net.eval()
        scores = retrieval_scores(embed(net, task.X_test), task.y_test)
    return TrainRun(model=net, loss=loss_mod, history=pd.DataFrame(rows), scores=scores,
                    initial_scores=initial, snapshots=snaps,
                    seconds=time.perf_counter() - t0)


@torch.no_grad()
def batch_losses(model: nn.Module, task: ImageTask, loss: PairLoss, sampler,
                 n_batches: int = 20) -> np.ndarray:
    """Loss values (n_batches,) of the first batches of ``sampler`` under a fixed ``model``.

    Compares how hard the batches of two samplers are (e.g. hard negative class mining vs
    random classes) for the same network: harder batches have larger losses.
    """
    was = model.training
    model.eval()
    out = []
    try:
        with single_thread():
            for idx in _endless(sampler):
                idx = torch.as_tensor(idx)
                out.append(float(loss(model(task.X[idx]), task.y[idx])))
                if len(out) >= n_batches:
                    break
    finally:
        model.train(was)
    return np.asarray(out)


def _spec(spec) -> tuple[str, dict]:
    if isinstance(spec, str):
        return spec, {}
    name, params = spec
    return str(name), dict(params or {})


def run_ablation(task: ImageTask, specs: Mapping[str, object] | Sequence[str],
                 seeds: Sequence[int] = (0, 1, 2), progress: bool = True,
                 histories: dict | None = None, runs: dict | None = None,
                 **train_kwargs) -> pd.DataFrame:
    """Train every loss of ``specs`` with every seed; one row per run.

    ``specs``: loss names, or ``{label: name}`` / ``{label: (name, params)}``. ``train_kwargs``
    go to :func:`train_embedding` (``track_mining=True`` adds the mean pos / neg kept shares
    over training). Columns: loss, seed, untrained_recall@1, untrained_map@r, recall@1,
    map@r, [pos_kept, neg_kept, triplets_kept], seconds. ``histories``: a dict filled with
    ``{(label, seed): run.history}`` if given; ``runs`` likewise with the :class:`TrainRun`.
    """
    if not isinstance(specs, Mapping):
        specs = {name: name for name in specs}
    rows = []
    jobs = [(label, spec, s) for label, spec in specs.items() for s in seeds]
    for label, spec, s in tqdm(jobs, desc="runs", disable=not progress):
        name, params = _spec(spec)
        run = train_embedding(task, name, loss_params=params, seed=s, **train_kwargs)
        row = {"loss": label, "seed": s,
               **{f"untrained_{k}": v for k, v in run.initial_scores.items()}, **run.scores}
        if histories is not None:
            histories[(label, s)] = run.history
        if runs is not None:
            runs[(label, s)] = run
        for col in ("pos_kept", "neg_kept", "triplets_kept"):
            if col in run.history:
                row[col] = float(run.history[col].mean())
        row["seconds"] = run.seconds
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, metrics: Sequence[str] = ("recall@1", "map@r"),
              by: str = "loss") -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of ``metrics`` per ``by``, in first-seen order.

    Columns ``<metric>_mean``, ``<metric>_std`` (sample std, ddof=1; 0 for one seed), ``n``.
    """
    missing = [m for m in (*metrics, by) if m not in df]
    if missing:
        raise ValueError(f"columns {missing} not in the table; it has {list(df.columns)}")
    g = df.groupby(by, sort=False)
    out = pd.DataFrame({"n": g.size()})
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    return out


def published_results() -> pd.DataFrame:
    """The published numbers of the seed papers (package resource ``published_results.csv``).

    Columns: source, paper, dataset, method, backbone, embedding_dim, metric, value, note.
    """
    text = resources.files("dmlkit").joinpath("resources/published_results.csv").read_text()
    return pd.read_csv(io.StringIO(text))


# ------------------------------------------------------------------------------- weights


def _float64_batch(loss: PairLoss, embeddings, labels) -> PairBatch:
    return make_batch(torch.as_tensor(embeddings).detach().double(), labels,
                      normalize=loss.normalize)


def closed_form_weights(loss: PairLoss, embeddings, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 004's closed-form pair weights (Sec. 3, eq. 5-16), computed directly, float64.

    Supported: ``contrastive(form="similarity")``, ``triplet(form="similarity",
    mining="all")`` (weights = number of active triplets of the pair, by brute-force
    enumeration of the (B, M, M) triplets: for small analysis batches only),
    ``generalized_lifted_structure(form="similarity")`` (eq. 10-11), ``binomial`` (eq. 13-14),
    and the weighted-pair family (``multi_similarity``, ``raw``, ``vthm``, ``binomial+vthm``,
    ``raw+semihard``: eq. 15-16 / 13-14 / 1 on the mined pairs). Each includes the loss's
    own normalisation (reduction), so it must EQUAL :func:`dmlkit.weights.pair_weights`.
    Returns ``(S, W)`` (B, B) float64.
    """
    b = _float64_batch(loss, embeddings, labels)
    S, pos, neg = b.S, b.pos, b.neg
    m = S.shape[0]
    zero = torch.zeros((), dtype=S.dtype)
    kind = type(loss).__name__
    if kind == "ContrastiveLoss" and loss.form == "similarity" and loss.pos_margin is None:
        active = neg & (loss.lam < S)
        if loss.reduction == "sum":
            norm_p = norm_n = 1.0
        elif loss.reduction == "mean":
            norm_p = norm_n = float(pos.sum() + neg.sum())
        else:  # mean_nonzero: the positive terms -s are non-zero wherever s != 0
            norm_p = max(float((pos & (S != 0)).sum()), 1.0)
            norm_n = max(float(active.sum()), 1.0)
        W = torch.where(pos, 1.0 / norm_p, zero) + torch.where(active, 1.0 / norm_n, zero)
    elif kind == "TripletLoss" and loss.form == "similarity" and loss.mining == "all":
        # violation[i, p, n] = s_in - s_ip + margin > 0 over valid triplets
        valid = pos[:, :, None] & neg[:, None, :]
        active = valid & (S[:, None, :] - S[:, :, None] + loss.margin > 0)
        c_pos, c_neg = active.sum(2).double(), active.sum(1).double()
        n_active, n_valid = float(active.sum()), float(valid.sum())
        norm = {"sum": 1.0, "mean": n_valid, "mean_nonzero": n_active}[loss.reduction]
        W = (c_pos + c_neg) / max(norm, 1.0)
    elif kind == "GeneralizedLiftedStructureLoss" and loss.form == "similarity":
        neg_inf = torch.tensor(float("-inf"), dtype=S.dtype)
        lp = torch.logsumexp(torch.where(pos, -S, neg_inf), 1)
        ln = torch.logsumexp(torch.where(neg, S, neg_inf), 1)
        live = (pos.any(1) & neg.any(1) & (lp + ln + loss.lam > 0))[:, None]
        wp = torch.exp(-S - lp[:, None])           # eq. 10: softmax of -s over P_i
        wn = torch.exp(S - ln[:, None])            # eq. 11: softmax of s over N_i
        W = (torch.where(pos & live, wp, zero) + torch.where(neg & live, wn, zero)) / m
    elif kind == "BinomialDevianceLoss":
        W = _binomial_weights(S, pos, neg, loss.alpha, loss.beta, loss.lam)
        W = W / (m if loss.reduction == "mean" else 1.0)
    elif isinstance(loss, _losses.get("weighted_pair")) and loss.mining != "distance_weighted":
        pk, nk = loss.mine(b)
        live = (pk.any(1) & nk.any(1))[:, None]
        pk, nk = pk & live, nk & live
        if loss.weighting == "raw":
            W = _raw_weights(S, pk, nk, loss.alpha, loss.beta, loss.lam)
        elif loss.weighting == "binomial":
            W = _binomial_weights(S, pk, nk, loss.alpha, loss.beta, loss.lam)
        else:
            W = (pk | nk).double()
        W = W / (m if loss.reduction == "mean" else 1.0)
    else:
        raise ValueError(f"no closed form for {kind} with these settings; supported: "
                         "contrastive(form='similarity'), triplet(form='similarity', "
                         "mining='all'), generalized_lifted_structure(form='similarity'), "
                         "binomial, multi_similarity / raw / vthm / binomial+vthm / raw+semihard")
    return S, W


def _binomial_weights(S, pos, neg, alpha, beta, lam):
    """Eq. 13-14 on the masks (1/|P_i|, 1/|N_i| over the given sets; anchors need both)."""
    zero = torch.zeros((), dtype=S.dtype)
    live = (pos.any(1) & neg.any(1))[:, None]
    n_p = pos.sum(1, keepdim=True).clamp_min(1).double()
    n_n = neg.sum(1, keepdim=True).clamp_min(1).double()
    wp = alpha * torch.sigmoid(alpha * (lam - S)) / n_p
    wn = beta * torch.sigmoid(beta * (S - lam)) / n_n
    return torch.where(pos & live, wp, zero) + torch.where(neg & live, wn, zero)


def _raw_weights(S, pos, neg, alpha, beta, lam):
    """Eq. 15-16 on the kept masks."""
    zero = torch.zeros((), dtype=S.dtype)
    # positive: 1 / (sum_{k in P} e^{alpha (s_ij - s_ik)} + e^{alpha (s_ij - lam)})
    ep = torch.where(pos, torch.exp(-alpha * S), zero).sum(1, keepdim=True)
    wp = 1.0 / (torch.exp(alpha * S) * ep + torch.exp(alpha * (S - lam)))
    en = torch.where(neg, torch.exp(beta * S), zero).sum(1, keepdim=True)
    wn = 1.0 / (torch.exp(-beta * S) * en + torch.exp(-beta * (S - lam)))
    return torch.where(pos, wp, zero) + torch.where(neg, wn, zero)


def theorem_table(specs: Mapping[str, object] | Sequence[str], embeddings, labels,
                  closed_forms: bool = True) -> pd.DataFrame:
    """Theorem 3.1 checked numerically for several losses (float64).

    For each loss: ``max_grad_diff`` = max |dL/df - dF/df| between the loss and its surrogate
    ``F = sum_neg W s - sum_pos W s`` (:func:`dmlkit.weights.theorem_3_1_check`),
    ``max_grad`` = max |dL/df| (the scale), ``min_weight`` (weights are >= 0 for the papers'
    losses), ``active_pairs`` (share of pairs with W != 0) and, where
    :func:`closed_form_weights` applies, ``closed_form_err`` = max |W_autograd - W_closed|.
    ``specs``: names or ``{label: (name, params)}``; ``osm_caa`` gets num_classes / embedding_dim
    from the data.
    """
    if not isinstance(specs, Mapping):
        specs = {name: name for name in specs}
    emb = torch.as_tensor(embeddings).detach().double()
    lab = torch.as_tensor(labels, dtype=torch.int64)
    rows = []
    for label, spec in specs.items():
        name, params = _spec(spec)
        if name == "osm_caa":
            params.setdefault("num_classes", int(lab.max()) + 1)
            params.setdefault("embedding_dim", emb.shape[1])
        torch.manual_seed(0)
        loss = _losses.build(name, **params).double()
        g_loss, _, diff = _weights.theorem_3_1_check(loss, emb, lab)
        _, W = _weights.pair_weights(loss, emb, lab)
        b = make_batch(emb, lab, normalize=loss.normalize)
        pairs = b.pos | b.neg
        row = {"loss": label, "max_grad_diff": diff, "max_grad": float(g_loss.abs().max()),
               "min_weight": float(W[pairs].min()),
               "active_pairs": float((W[pairs] != 0).double().mean())}
        if closed_forms:
            try:
                _, Wc = closed_form_weights(loss, emb, lab)
                row["closed_form_err"] = float((W - Wc).abs().max())
            except ValueError:
                row["closed_form_err"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- toy geometry


def loss_landscape_2d(loss: PairLoss, points, labels, moving_label: int,
                      lim: float = 2.0, n: int = 41) -> dict[str, np.ndarray]:
    """Loss as a function of the position of one extra 2-D point (the others fixed).

    ``points`` (B, 2) fixed embeddings with ``labels`` (B,); a point of class ``moving_label``
    is placed at every node of an ``n x n`` grid over ``[-lim, lim]^2``. Returns ``x``, ``y``
    (n,), ``loss`` (n, n) (rows: y) and ``grad_x``, ``grad_y`` (n, n): the gradient of the loss
    with respect to the moving point (gradient descent moves it along minus this).
    Use ``normalize=False`` losses to see the plane; normalised ones only see the angle.
    """
    pts = torch.as_tensor(points, dtype=torch.float64)
    lab = torch.as_tensor(labels, dtype=torch.int64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (B, 2), got {tuple(pts.shape)}")
    lab_all = torch.cat([lab, torch.tensor([int(moving_label)])])
    xs = np.linspace(-lim, lim, n)
    values = np.zeros((n, n))
    gx, gy = np.zeros((n, n)), np.zeros((n, n))
    for r, yv in enumerate(xs):
        for c, xv in enumerate(xs):
            p = torch.tensor([[xv, yv]], dtype=torch.float64, requires_grad=True)
            value = loss(torch.cat([pts, p]), lab_all)
            (g,) = torch.autograd.grad(value, p)
            values[r, c] = float(value.detach())
            gx[r, c], gy[r, c] = float(g[0, 0]), float(g[0, 1])
    return {"x": xs, "y": xs, "loss": values, "grad_x": gx, "grad_y": gy}


def triplet_table(embeddings, labels, margin: float = 0.2, form: str = "distance",
                  normalize: bool = True) -> pd.DataFrame:
    """Every valid triplet (anchor, positive, negative) of a small batch, one row each.

    Columns: anchor, positive, negative, ``t_ap``, ``t_an`` (the triplet loss's scores T:
    minus the distance, minus the squared distance, or the similarity, see
    :class:`dmlkit.losses.triplet.TripletLoss`), ``violation = t_an - t_ap + margin`` and
    ``category``: ``"easy"`` (violation <= 0, zero loss), ``"semi-hard"`` (t_ap - margin <
    t_an < t_ap) or ``"hard"`` (t_an >= t_ap). Enumerates B x B x B triplets: analysis only.
    """
    loss = _losses.build("triplet", margin=margin, form=form, normalize=normalize)
    b = make_batch(torch.as_tensor(embeddings).detach().double(), labels, normalize=normalize)
    T = loss.scores(b)
    a, p, n = torch.nonzero(b.pos[:, :, None] & b.neg[:, None, :], as_tuple=True)
    t_ap, t_an = T[a, p], T[a, n]
    viol = t_an - t_ap + margin
    cat = np.where(viol.numpy() <= 0, "easy",
                   np.where((t_an < t_ap).numpy(), "semi-hard", "hard"))
    return pd.DataFrame({"anchor": a.numpy(), "positive": p.numpy(), "negative": n.numpy(),
                         "t_ap": t_ap.numpy(), "t_an": t_an.numpy(), "violation": viol.numpy(),
                         "category": cat})


# ------------------------------------------------------------------------------- noise, OSM/CAA


def inject_label_noise(labels, fraction: float, seed: int = 0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Give ``round(fraction * N)`` samples, drawn at random, a different random label.

    Returns ``(noisy_labels (N,), flipped (N,) bool)``. The new label is uniform over the
    other classes present, so every flipped sample is an outlier of the class it now carries.
    """
    lab = torch.as_tensor(labels, dtype=torch.int64).clone()
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    classes = torch.unique(lab)
    if len(classes) < 2 and fraction > 0:
        raise ValueError("label noise needs at least two classes")
    g = torch.Generator().manual_seed(int(seed))
    k = round(float(fraction) * len(lab))
    idx = torch.randperm(len(lab), generator=g)[:k]
    shift = torch.randint(1, len(classes), (k,), generator=g)
    pos = torch.searchsorted(classes, lab[idx])
    lab[idx] = classes[(pos + shift) % len(classes)]
    flipped = torch.zeros(len(lab), dtype=torch.bool)
    flipped[idx] = True
    return lab, flipped


@torch.no_grad()
def osm_caa_pair_table(loss: PairLoss, embeddings, labels, flags=None) -> pd.DataFrame:
    """Every pair's OSM weight, CAA attention and final weight (seed 003), one row per pair.

    Columns: i, j, pair (positive / negative), distance, ``osm`` (s+ = exp(-d^2/sigma^2) or
    s- = [alpha - d]_+), ``a_i``, ``a_j``, ``attention`` = min(a_i, a_j), ``weight`` = osm x
    attention, and with ``flags`` (N,) bool (e.g. flipped labels) ``flagged`` = flags[i] or
    flags[j]. Embeddings (B, D), labels (B,); ``loss`` built with ``losses.build("osm_caa")``.
    """
    if type(loss).__name__ != "OSMCAALoss":
        raise ValueError(f"osm_caa_pair_table needs an osm_caa loss, got {type(loss).__name__}")
    b = make_batch(torch.as_tensor(embeddings).detach().float(), labels, normalize=loss.normalize)
    w_pos, w_neg = loss.pair_weights_osm_caa(b)
    a = loss.sample_attention(b.embeddings, b.labels)
    d = b.distances()
    s_pos = torch.exp(-b.squared_distances() / loss.sigma ** 2)
    s_neg = (loss.alpha - d).clamp_min(0.0)
    i, j = torch.nonzero(b.pos | b.neg, as_tuple=True)
    is_pos = b.pos[i, j]
    osm = torch.where(is_pos, s_pos[i, j], s_neg[i, j])
    df = pd.DataFrame({"i": i.numpy(), "j": j.numpy(),
                       "pair": np.where(is_pos.numpy(), "positive", "negative"),
                       "distance": d[i, j].numpy(), "osm": osm.numpy(),
                       "a_i": a[i].numpy(), "a_j": a[j].numpy(),
                       "attention": torch.minimum(a[i], a[j]).numpy(),
                       "weight": torch.where(is_pos, w_pos[i, j], w_neg[i, j]).numpy()})
    if flags is not None:
        fl = torch.as_tensor(flags, dtype=torch.bool)
        df["flagged"] = (fl[i] | fl[j]).numpy()
    return df
