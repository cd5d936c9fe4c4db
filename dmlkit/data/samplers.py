"""Batch samplers for metric learning (use as ``DataLoader(dataset, batch_sampler=...)``).

- :class:`PKSampler`: P classes x K images per batch, the "classes x K images" batches of the
  papers (K = 5 for CUB / Cars196, 4 for SOP / In-shop), covering every image once per
  epoch where possible.
- :class:`HardNegativeClassSampler`: Sohn's hard negative class mining for N-pair batches
  (Sohn 2016, docs/references.md): greedily pick the classes that violate the triplet
  constraint the most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["HardNegativeClassSampler", "PKSampler", "select_hard_classes"]


def _check_labels(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-d array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _class_indices(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    classes, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse))[:-1]
    return classes, np.split(order, bounds)


class PKSampler(Sampler[list[int]]):
    """Class-balanced batches of ``P`` classes x ``K`` images (a batch sampler).

    One epoch: each class's images are shuffled and cut into groups of ``K``; a last group
    shorter than ``K`` is filled with other images of the same class drawn at random (so
    every image appears at least once). Batches then take one group from each of ``P``
    distinct classes -- the ``P`` classes with the most groups left, ties broken at random,
    which gives the largest possible number of batches -- until fewer than ``P`` classes have
    groups left; the batches are then shuffled. Leftover groups (only when one class has more
    groups than the others can pair with) are dropped (``drop_last=True``, default) or form one
    last batch of fewer classes. The number of batches per epoch depends only on the class
    sizes, so ``len()`` is the same every epoch.

    Classes with fewer than ``K`` images: ``small_classes="replace"`` (default) fills their
    group with all their images plus repeats drawn at random; ``"skip"`` leaves them out;
    classes with a single image are always skipped (they have no positive pair).

    ``len(sampler)`` is the number of batches of the current epoch. Each ``iter`` uses
    ``seed`` and the epoch number, then moves on to the next epoch; ``set_epoch(e)`` selects
    an epoch explicitly (reproducible reshuffles).
    """

    def __init__(self, labels, P: int, K: int, seed: int = 0, drop_last: bool = True,
                 small_classes: str = "replace"):
        self.labels = _check_labels(labels)
        if int(P) != P or P < 1 or int(K) != K or K < 1:
            raise ValueError(f"P and K must be positive integers, got P={P}, K={K}")
        if small_classes not in ("replace", "skip"):
            raise ValueError(f"small_classes must be 'replace' or 'skip', got {small_classes!r}")
        self.P, self.K, self.seed, self.drop_last = int(P), int(K), int(seed), bool(drop_last)
        classes, groups = _class_indices(self.labels)
        keep = [i for i, g in enumerate(groups)
                if len(g) >= 2 and (len(g) >= self.K or small_classes == "replace")]
        self.classes = classes[keep]
        self._groups = [groups[i] for i in keep]
        if len(self.classes) < self.P:
            raise ValueError(f"only {len(self.classes)} usable classes (with >= 2 images"
                             f"{'' if small_classes == 'replace' else f', >= {K}'}) for P={P}")
        self.epoch = 0
        self._plan_cache: tuple[int, list[list[int]]] | None = None

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _plan(self) -> list[list[int]]:
        if self._plan_cache is not None and self._plan_cache[0] == self.epoch:
            return self._plan_cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks: list[list[np.ndarray]] = []
        for idx in self._groups:
            if len(idx) < self.K:
                extra = rng.choice(idx, self.K - len(idx), replace=True)
                chunks.append([np.concatenate([rng.permutation(idx), extra])])
                continue
            perm = rng.permutation(idx)
            n_full, rest = divmod(len(perm), self.K)
            parts = [perm[i * self.K:(i + 1) * self.K] for i in range(n_full)]
            if rest:
                others = np.setdiff1d(idx, perm[n_full * self.K:])
                fill = rng.choice(others, self.K - rest, replace=False)
                parts.append(np.concatenate([perm[n_full * self.K:], fill]))
            chunks.append(parts)
        left = np.array([len(c) for c in chunks], dtype=np.int64)
        batches: list[list[int]] = []
        while (left > 0).sum() >= self.P:
            # the P classes with the most groups left (ties at random): this yields the
            # largest possible number of batches, so the fewest images are left over
            tiebreak = rng.random(len(left))
            chosen = np.lexsort((tiebreak, -left))[: self.P]
            batch = []
            for c in chosen:
                left[c] -= 1
                batch.extend(chunks[c][int(left[c])].tolist())
            batches.append(batch)
        batches = [batches[i] for i in rng.permutation(len(batches))]
        if not self.drop_last and left.sum() > 0:  # one last, smaller batch
            rest = np.flatnonzero(left > 0)
            batches.append([i for c in rest for i in chunks[c][int(left[c]) - 1].tolist()])
        self._plan_cache = (self.epoch, batches)
        return batches

    def __len__(self) -> int:
        return len(self._plan())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._plan()
        self.epoch += 1
        yield from batches


def select_hard_classes(anchors, positives, N: int, first: int | None = None,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """Greedy hard negative class selection (Sohn 2016, section 3.3.2).

    anchors, positives: ``(C, D)`` one anchor and one positive embedding per candidate class
    (pass the same array twice when a single example per class was embedded).

    Violation of candidate ``c`` against the selected set ``S`` is the largest triplet
    constraint violation between ``c`` and a selected class, in either role, measured as in
    the N-pair loss (``f_i^T f_j^+ - f_i^T f_i^+``)::

        v(c | S) = max_{s in S} max( a_s . p_c - a_s . p_s ,  a_c . p_s - a_c . p_c )

    Starting from ``first`` (random if None), the class with the largest ``v`` is added until
    ``N`` classes are chosen; ties are broken at random. Returns the ``N`` chosen candidate
    positions in selection order.
    """
    a = np.asarray(anchors, dtype=np.float64)
    p = np.asarray(positives, dtype=np.float64)
    if a.ndim != 2 or a.shape != p.shape:
        raise ValueError(f"anchors and positives must both be (C, D), got {a.shape}, {p.shape}")
    n_cand = a.shape[0]
    if not 1 <= N <= n_cand:
        raise ValueError(f"N must be in [1, C={n_cand}], got {N}")
    if not np.isfinite(a).all() or not np.isfinite(p).all():
        raise ValueError("embeddings contain NaN or infinite values")
    rng = rng if rng is not None else np.random.default_rng()
    cross = a @ p.T                       # cross[i, j] = a_i . p_j
    own = np.diag(cross).copy()           # a_i . p_i
    # pair_violation[s, c] = max(a_s.p_c - a_s.p_s, a_c.p_s - a_c.p_c)
    pair_violation = np.maximum(cross - own[:, None], cross.T - own[None, :])
    selected = [int(rng.integers(n_cand)) if first is None else int(first)]
    chosen = np.zeros(n_cand, dtype=bool)
    chosen[selected[0]] = True
    violation = pair_violation[selected[0]].copy()
    while len(selected) < N:
        masked = np.where(chosen, -np.inf, violation)
        best = np.flatnonzero(masked == masked.max())
        nxt = int(rng.choice(best))
        selected.append(nxt)
        chosen[nxt] = True
        violation = np.maximum(violation, pair_violation[nxt])
    return np.asarray(selected, dtype=np.int64)


class HardNegativeClassSampler(Sampler[list[int]]):
    """N-pair batches with hard negative class mining (Sohn 2016).

    The procedure is spelled out in docs/formulas.md#n-pair-losses.

    Each batch: (1) pick ``C`` classes at random (among classes with >= 2 images) and take two
    examples of each (an anchor and a positive); (2) embed them -- with ``embed_fn(indices)``
    if given (called under the caller's control, e.g. a ``torch.no_grad`` model forward), else
    by looking up the table passed to :meth:`update` (refresh it from the model, e.g. once per
    epoch); (3) :func:`select_hard_classes` picks ``N`` of them greedily; (4) the batch is the
    ``2N`` embedded examples of those classes, ordered ``[a_1, p_1, a_2, p_2, ...]``
    (``examples_per_class=1`` embeds one example, uses it as both anchor and positive, and
    draws the positive at random in step 4).

    Before any embedding is available (no ``embed_fn``, no :meth:`update` yet) the ``N``
    classes are drawn at random. ``len()`` = ``num_batches`` (default: images // (2N)).
    ``last_classes`` holds the original class ids of the last batch, in selection order.
    """

    def __init__(self, labels, N: int, C: int | None = None,
                 embed_fn: Callable[[np.ndarray], object] | None = None,
                 embeddings=None, examples_per_class: int = 2, num_batches: int | None = None,
                 seed: int = 0):
        self.labels = _check_labels(labels)
        classes, groups = _class_indices(self.labels)
        usable = [i for i, g in enumerate(groups) if len(g) >= 2]
        self.classes = classes[usable]
        self._groups = [groups[i] for i in usable]
        n_cls = len(self.classes)
        C = n_cls if C is None else int(C)
        if not 2 <= int(N) <= C <= n_cls:
            raise ValueError(f"need 2 <= N <= C <= number of classes with >= 2 images "
                             f"({n_cls}); got N={N}, C={C}")
        if examples_per_class not in (1, 2):
            raise ValueError(f"examples_per_class must be 1 or 2, got {examples_per_class}")
        self.N, self.C, self.examples_per_class = int(N), C, int(examples_per_class)
        self.embed_fn = embed_fn
        self.embeddings: np.ndarray | None = None
        if embeddings is not None:
            self.update(embeddings)
        self.num_batches = (max(1, len(self.labels) // (2 * self.N)) if num_batches is None
                            else int(num_batches))
        self.seed = int(seed)
        self.epoch = 0
        self.last_classes: np.ndarray | None = None

    def update(self, embeddings) -> None:
        """Replace the embedding table ``(num_images, D)`` (row i = image i of ``labels``)."""
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().float().cpu().numpy()
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(self.labels):
            raise ValueError(f"embeddings must be ({len(self.labels)}, D), got {emb.shape}")
        if not np.isfinite(emb).all():
            raise ValueError("embeddings contain NaN or infinite values")
        self.embeddings = emb

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def _embed(self, indices: np.ndarray) -> np.ndarray | None:
        if self.embed_fn is not None:
            out = self.embed_fn(indices)
            if isinstance(out, torch.Tensor):
                out = out.detach().float().cpu().numpy()
            return np.asarray(out, dtype=np.float64)
        if self.embeddings is not None:
            return self.embeddings[indices]
        return None

    def next_batch(self, rng: np.random.Generator) -> list[int]:
        """One mined batch (also used by ``__iter__``)."""
        cand = rng.choice(len(self.classes), self.C, replace=False)
        pairs = np.stack([rng.choice(self._groups[c], 2, replace=False) for c in cand])
        n_embed = self.examples_per_class
        emb = self._embed(pairs[:, :n_embed].ravel())
        if emb is None:
            chosen = rng.permutation(self.C)[: self.N]
        else:
            emb = emb.reshape(self.C, n_embed, -1)
            chosen = select_hard_classes(emb[:, 0], emb[:, n_embed - 1], self.N, rng=rng)
        self.last_classes = self.classes[cand[chosen]]
        return pairs[chosen].ravel().tolist()

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for _ in range(self.num_batches):
            yield self.next_batch(rng)
