"""Cross-batch memory (XBM; Wang et al. 2020): past batches as references.

:class:`CrossBatchMemory` wraps any S-based loss of :mod:`dmlkit.losses`. Each call enqueues the
batch (detached) into a FIFO ring of ``memory_size`` slots, then computes the wrapped loss's
``compute`` on the query-vs-reference batch "current batch x memory", in which each query's
own memory slot (its just-enqueued copy) is neither a positive nor a negative. The wrapped
loss's miners (VTHM, semi-hard, ...) read those same masks, so mining happens inside the
memory with the self pairs already removed. See docs/formulas.md#cross-batch-memory.

>>> import torch
>>> from dmlkit import losses
>>> from dmlkit.memory import CrossBatchMemory
>>> xbm = CrossBatchMemory(losses.build("contrastive"), embedding_dim=4, memory_size=10)
>>> for step in range(3):
...     value = xbm(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]))
>>> int(xbm.filled), int(xbm.pointer)   # 12 enqueued into 10 slots: the ring wrapped
(10, 2)
>>> xbm(torch.randn(12, 4), torch.arange(12))
Traceback (most recent call last):
...
ValueError: the batch (12 embeddings) is larger than the memory (memory_size=10)
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_embeddings_labels
from .losses.base import PairBatch, PairLoss
from .precision import full_precision_forward
from .similarity import similarity_matrix

__all__ = ["CrossBatchMemory"]


class CrossBatchMemory(nn.Module):
    r"""A FIFO memory of past embeddings used as the references of ``loss``.

    ``forward(embeddings, labels)`` (B, D) / (B,):

    1. iterations ``1 .. start_iteration`` (counted per call): the plain in-batch loss
       ``loss(embeddings, labels)``; the memory is neither filled nor used (the official
       code's warm-up, ``XBM.START_ITERATION``);
    2. afterwards: enqueue ``embeddings.detach()`` and ``labels`` at the ring's pointer
       (slot ``(pointer + k) % memory_size`` for the k-th sample: FIFO, the oldest slots are
       overwritten when it wraps), then return

       .. math:: L = w_m\,L(\text{batch}, \text{memory}) + w_b\,L(\text{batch})

       with ``w_m = memory_weight`` (default 1) and ``w_b = batch_weight`` (default 0).
       ``L(batch, memory)`` is the wrapped loss's ``compute`` (+ its ``regularizer``) on S
       between the B queries and the filled slots (in slot order), with each query's own slot
       removed from its positives (it is not a negative: same label).

    Gradients flow into the queries only (the memory is detached). The memory follows the
    embeddings' device and dtype (it is moved / cast at the first call that differs).
    ``reset()`` empties it; its state (``embeddings``, ``labels``, ``pointer``, ``filled``,
    ``iteration``: buffers) is in ``state_dict``, so checkpoints of :func:`dmlkit.train.fit`
    carry it and a resumed run continues exactly; loading keeps the saved dtype.

    Same semantics as PML's ``CrossBatchMemory(loss, embedding_size, memory_size, miner)``
    (enqueue first, then ``loss(batch, memory)`` with the self comparisons removed, a
    modular ring): equal value and gradient step by step, the ring wrapping included, under
    the mappings of the README (tested for contrastive, triplet and multi-similarity; PML's
    miner sees the self pairs and PML drops them after mining, here the miner never sees
    them: the same pairs unless a query's only positive in the memory is itself).
    The official XBM code instead uses ``batch_weight=1``, ``memory_weight=XBM.WEIGHT`` (1.0)
    and ``start_iteration=XBM.START_ITERATION`` (1000 / 2000), removes self pairs by
    ``s >= 1 - 1e-5`` inside its losses, and on overflow writes the batch into the LAST B
    slots and restarts at 0 (not a modular ring); those details are not reproduced.

    ``chunk_size`` reads / sets the wrapped loss's tile size (when it has one): with a
    chunk size (or "auto" beyond its memory budget) the memory term is computed exactly in
    tiles (:mod:`dmlkit.losses.tiling`, each query's own slot removed from its positives
    through ``exclude``), so memories far beyond a dense (B, M) matrix fit; else densely.

    Bad input raises ValueError: embeddings of another size than ``embedding_dim``, a batch
    larger than the memory, labels of the wrong shape or type, a proxy loss (its references
    are its proxies), a loss that is not a dmlkit :class:`~dmlkit.losses.PairLoss`.
    """

    def __init__(self, loss: PairLoss, embedding_dim: int, memory_size: int,
                 start_iteration: int = 0, memory_weight: float = 1.0,
                 batch_weight: float = 0.0):
        super().__init__()
        if not isinstance(loss, PairLoss):
            raise ValueError(f"CrossBatchMemory wraps a dmlkit PairLoss (losses.build(...)), "
                             f"got {type(loss).__name__}")
        if hasattr(loss, "references"):
            raise ValueError(f"{type(loss).__name__} has its own references (proxies): a "
                             "cross-batch memory does not apply")
        for name, value in (("embedding_dim", embedding_dim), ("memory_size", memory_size)):
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if int(start_iteration) < 0:
            raise ValueError(f"start_iteration must be >= 0, got {start_iteration}")
        if not (memory_weight >= 0 and batch_weight >= 0):
            raise ValueError(f"memory_weight and batch_weight must be >= 0, got "
                             f"{memory_weight}, {batch_weight}")
        self.loss = loss
        self.embedding_dim, self.memory_size = int(embedding_dim), int(memory_size)
        self.start_iteration = int(start_iteration)
        self.memory_weight, self.batch_weight = float(memory_weight), float(batch_weight)
        self.register_buffer("embeddings", torch.zeros(self.memory_size, self.embedding_dim))
        self.register_buffer("labels", torch.zeros(self.memory_size, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------------- the ring
    def reset(self) -> None:
        """Empty the memory and restart the iteration count."""
        self.embeddings.zero_()
        self.labels.zero_()
        self.pointer.zero_()
        self.filled.zero_()
        self.iteration.zero_()

    def memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled slots in slot order: ``(embeddings (M, D), labels (M,))``."""
        n = int(self.filled)
        return self.embeddings[:n], self.labels[:n]

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Write a batch (detached) at the pointer; returns the (B,) slots it went to."""
        emb, lab = self._check(embeddings, labels)
        self._follow(emb)
        slots = (int(self.pointer) + torch.arange(len(lab), device=emb.device)) \
            % self.memory_size
        self.embeddings[slots] = emb.detach().to(self.embeddings.dtype)
        self.labels[slots] = lab
        self.pointer.fill_((int(self.pointer) + len(lab)) % self.memory_size)
        self.filled.fill_(min(int(self.filled) + len(lab), self.memory_size))
        return slots

    # ------------------------------------------------------------------------- the loss
    def memory_batch(self, embeddings: torch.Tensor, labels: torch.Tensor,
                     slots: torch.Tensor) -> PairBatch:
        """The :class:`PairBatch` of the queries against the filled slots, with each query's
        own slot (``slots``, (B,)) removed from its positives."""
        ref, ref_labels = self.memory()
        S = similarity_matrix(embeddings, ref, normalize=self.loss.normalize)
        pos = labels[:, None] == ref_labels[None, :]
        neg = ~pos
        pos[torch.arange(len(labels), device=pos.device), slots] = False
        return PairBatch(S=S, pos=pos, neg=neg, labels=labels, ref_labels=ref_labels,
                         embeddings=embeddings, ref_embeddings=ref, in_batch=False,
                         normalized=self.loss.normalize, label_masks=False)

    @full_precision_forward     # half input in float32, autocast off (docs/precision.md)
    def forward(self, embeddings, labels) -> torch.Tensor:
        emb, lab = self._check(embeddings, labels)
        self.iteration.add_(1)
        if int(self.iteration) <= self.start_iteration:
            return self.loss(emb, lab)
        slots = self.enqueue(emb, lab)
        ref, ref_labels = self.memory()
        chunk = (self.loss.tiled_chunk(len(lab), len(ref_labels), emb.dtype)
                 if self.chunk_size is not None else None)
        if chunk is not None:   # exact tiles; the own slot leaves the positives of its query
            from .losses.tiling import tiled_forward
            mem = tiled_forward(self.loss, emb, lab, ref, ref_labels, chunk, exclude=slots)
        else:
            batch = self.memory_batch(emb, lab, slots)
            mem = self.loss.compute(batch) + self.loss.regularizer(batch)
        value = self.memory_weight * mem
        if self.batch_weight:
            value = value + self.batch_weight * self.loss(emb, lab)
        return value

    # ------------------------------------------------------------------------- helpers
    @property
    def normalize(self) -> bool:
        return self.loss.normalize

    @property
    def chunk_size(self):
        """The wrapped loss's ``chunk_size`` (None when it has none)."""
        return getattr(self.loss, "chunk_size", None)

    @chunk_size.setter
    def chunk_size(self, value) -> None:
        if value is not None or hasattr(self.loss, "chunk_size"):
            self.loss.chunk_size = value

    def _check(self, embeddings, labels) -> tuple[torch.Tensor, torch.Tensor]:
        emb, lab = check_embeddings_labels(embeddings, labels)
        if emb.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings have dimension {emb.shape[1]} but the memory was "
                             f"built with embedding_dim={self.embedding_dim}")
        if emb.shape[0] > self.memory_size:
            raise ValueError(f"the batch ({emb.shape[0]} embeddings) is larger than the memory "
                             f"(memory_size={self.memory_size})")
        return emb, lab

    def _follow(self, emb: torch.Tensor) -> None:
        """Move / cast the memory to the embeddings' device and dtype (float32 for half)."""
        dtype = torch.float32 if emb.dtype in (torch.float16, torch.bfloat16) else emb.dtype
        if self.embeddings.dtype != dtype or self.embeddings.device != emb.device:
            self.embeddings = self.embeddings.to(device=emb.device, dtype=dtype)
        if self.labels.device != emb.device:
            for name in ("labels", "pointer", "filled", "iteration"):
                setattr(self, name, getattr(self, name).to(emb.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "embeddings")
        if saved is not None:   # keep the saved precision (a float64 ring stays float64)
            self.embeddings = self.embeddings.to(dtype=saved.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, memory_size={self.memory_size}, "
                f"start_iteration={self.start_iteration}, memory_weight={self.memory_weight}, "
                f"batch_weight={self.batch_weight}")
