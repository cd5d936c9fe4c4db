""":func:`train_embedding`: the notebooks' small training runs on an in-memory task.

A few hundred glyph images, a four-block CNN, a few hundred Adam steps on a CPU: small enough
that a notebook compares several losses x seeds in seconds. The history is logged per step
(with the mining statistics of the step's batch, optionally test retrieval), and the pair
weights of a fixed probe batch can be snapshotted at chosen steps.

>>> from dmlkit import tasks
>>> task = tasks.image_task("glyphs", num_classes=6, num_test_classes=4, images_per_class=4,
...                         size=12)
>>> run = train_embedding(task, "multi_similarity", steps=4, P=3, K=2, log_every=2)
>>> run.history["step"].tolist(), sorted(run.scores)
([0, 2, 3], ['map@r', 'recall@1'])
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as _data
from .. import losses as _losses
from .. import tasks as _tasks
from .. import weights as _weights
from ..losses.base import make_batch
from .engine import Trainer

__all__ = ["EmbeddingTrainer", "TrainRun", "train_embedding"]


@dataclass
class TrainRun:
    """What :func:`train_embedding` returns.

    ``model`` (eval mode), ``loss`` (with any trained parameters, e.g. CAA centres),
    ``history`` (one row per logged step: step, loss, and with ``track_mining`` the
    :func:`dmlkit.pairs.mining_stats` of that step's batch; with ``eval_every`` also test
    recall@1 / map@r), ``scores`` (final test retrieval), ``initial_scores`` (the untrained
    network), ``snapshots`` (step -> (S, W, pos, neg) of a fixed probe batch), ``seconds``.
    """

    model: nn.Module
    loss: nn.Module
    history: pd.DataFrame
    scores: dict
    initial_scores: dict
    snapshots: dict = field(default_factory=dict)
    seconds: float = 0.0


def _as_loss(loss, task, embedding_dim: int, params: Mapping | None) -> nn.Module:
    if isinstance(loss, nn.Module):
        return loss
    params = dict(params or {})
    if "num_classes" in (_losses.parameters(str(loss)) or ()):   # osm_caa, proxy losses
        params.setdefault("num_classes", task.num_classes)
        params.setdefault("embedding_dim", embedding_dim)
    return _losses.build(loss, **params)


class EmbeddingTrainer(Trainer):
    """The engine of :func:`train_embedding`: one epoch of ``steps`` batches drawn from an
    endless sampler, a history row every ``log_every`` steps, probe snapshots before the
    steps in ``snapshot_steps`` (and after the last one)."""

    def __init__(self, task, model: nn.Module, loss: nn.Module, optimizer, labels, batches, *,
                 steps: int, track_mining: bool, log_every: int, eval_every: int,
                 snapshot_steps: Sequence[int], probe: tuple | None, progress: bool):
        super().__init__(model, loss, optimizer)
        self.task, self.y, self.stream = task, labels, batches
        self.num_steps, self.track_mining = steps, track_mining
        self.log_every, self.eval_every = log_every, eval_every
        self.snapshot_steps, self.probe, self.progress = set(snapshot_steps), probe, progress
        self.snapshots: dict = {}

    def test_scores(self) -> dict:
        return _tasks.retrieval_scores(_tasks.embed(self.model, self.task.X_test),
                                       self.task.y_test)

    def start(self) -> None:
        self.initial_scores = self.test_scores()

    def epochs(self):
        return range(1)

    def batches(self, epoch: int):
        """``steps`` batches; one more is drawn at the end (for the snapshot after the last
        step), as the sampler's state afterwards depends on it."""
        bar = tqdm(range(self.num_steps + 1), desc="steps", disable=not self.progress,
                   leave=False)
        for step in bar:
            idx = torch.as_tensor(next(self.stream))
            if self.probe is None:  # default probe: the first training batch
                self.probe = (self.task.X[idx], self.y[idx])
            if step in self.snapshot_steps:
                self.snapshot(step)
            if step == self.num_steps:
                break
            self.step = step
            yield self.task.X[idx], self.y[idx]

    def snapshot(self, step: int) -> None:
        """(S, W, pos, neg) of the loss on the probe batch (numpy)."""
        emb = _tasks.embed(self.model, self.probe[0])
        S, W = _weights.pair_weights(self.loss, emb, self.probe[1])
        refs = (self.loss.references(emb) if hasattr(self.loss, "references")  # proxies
                else (None, None))
        b = make_batch(emb, self.probe[1], *refs, normalize=self.loss.normalize)
        self.snapshots[step] = (S.numpy(), W.numpy(), b.pos.numpy(), b.neg.numpy())

    def compute_loss(self, x, y) -> dict:
        self.embeddings = self.model(x)
        return {"loss": self.loss(self.embeddings, y)}

    def after_step(self, inputs, terms) -> dict:
        step, steps = self.step, self.num_steps
        value = float(terms["loss"].detach())
        if step % self.log_every == 0 or step == steps - 1:
            row = {"step": step, "loss": value}
            if self.track_mining:
                from ..pairs import mining_stats

                row.update(mining_stats(self.loss, self.embeddings.detach(), inputs[1]))
            if self.eval_every and (step % self.eval_every == 0 or step == steps - 1):
                row.update(self.test_scores())
            self.history.append(row)
        return {"loss": value}

    def end_epoch(self, epoch: int) -> None:
        """Nothing: the history is logged per step."""

    def finish(self) -> dict:
        self.model.eval()
        return self.test_scores()


def train_embedding(task, loss: str | nn.Module = "multi_similarity", *,
                    loss_params: Mapping | None = None, steps: int = 120, P: int = 8,
                    K: int = 4, lr: float = 2e-3, loss_lr_mult: float = 1.0,
                    embedding_dim: int = 32, width: int = 16,
                    seed: int = 0, labels: torch.Tensor | None = None,
                    model: nn.Module | None = None, sampler=None, track_mining: bool = False,
                    log_every: int = 10, eval_every: int = 0,
                    snapshot_steps: Sequence[int] = (), probe: tuple | None = None,
                    progress: bool = False) -> TrainRun:
    """Train a small CNN embedding with a metric-learning loss on ``task`` (Adam, P x K batches).

    Args:
        task: a :class:`dmlkit.tasks.ImageTask` (images ``X`` (N, C, H, W), labels ``y``
            (N,), and unseen test classes ``X_test`` / ``y_test``).
        loss: a name of :func:`dmlkit.losses.available` (``osm_caa`` gets ``num_classes`` and
            ``embedding_dim`` from the task) or a loss module; its parameters are trained too,
            with the learning rate ``lr * loss_lr_mult``.
        labels: training labels to use instead of ``task.y`` (e.g. noisy ones).
        model: a network to train (default :func:`dmlkit.tasks.build_net` seeded with
            ``seed``).
        sampler: a batch sampler (iterable of index lists, e.g.
            :class:`dmlkit.data.HardNegativeClassSampler`); default ``PKSampler(P, K)``.
        track_mining: log :func:`dmlkit.pairs.mining_stats` of the training batch every
            ``log_every`` steps.
        eval_every: log test recall@1 / MAP@R every ``eval_every`` steps (0: only at the end).
        snapshot_steps: steps at which :func:`dmlkit.weights.pair_weights` of the loss on
            ``probe`` = (images, labels) (default: the first training batch) are stored.
    Runs single-threaded (:func:`dmlkit.tasks.single_thread`); deterministic for a given seed.
    """
    t0 = time.perf_counter()
    y = task.y if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    if y.shape != task.y.shape:
        raise ValueError(f"labels must have shape {tuple(task.y.shape)}, got {tuple(y.shape)}")
    with _tasks.single_thread():
        net = model if model is not None else _tasks.build_net(task.X.shape[1], embedding_dim,
                                                               width, seed)
        loss_mod = _as_loss(loss, task, embedding_dim, loss_params)
        groups = [{"params": list(net.parameters())}]
        loss_params = [p for p in loss_mod.parameters() if p.requires_grad]
        if loss_params:   # proxies / centres: lr * loss_lr_mult (Proxy-Anchor: 100)
            groups.append({"params": loss_params, "lr": lr * loss_lr_mult})
        opt = torch.optim.Adam(groups, lr=lr)
        batches = _tasks.endless_batches(sampler if sampler is not None
                                         else _data.PKSampler(y.numpy(), P, K, seed=seed))
        torch.manual_seed(seed)
        trainer = EmbeddingTrainer(task, net, loss_mod, opt, y, batches, steps=steps,
                                   track_mining=track_mining, log_every=log_every,
                                   eval_every=eval_every, snapshot_steps=snapshot_steps,
                                   probe=probe, progress=progress)
        scores = trainer.run()
    return TrainRun(model=net, loss=loss_mod, history=pd.DataFrame(trainer.history),
                    scores=scores, initial_scores=trainer.initial_scores,
                    snapshots=trainer.snapshots, seconds=time.perf_counter() - t0)
