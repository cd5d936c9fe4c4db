"""Several processes (``torch.distributed``): the loss of the global batch, exactly.

With W processes each holding B/W samples, a pair-based loss of the *global* batch needs every
process's embeddings. :func:`gather_batch` all-gathers them (in rank order, so every process
builds the same global batch) with the gradient flowing back to each process's own part, and
:class:`DistributedLoss` computes the loss on it.

**Gradient scaling (what PML users meet as "the loss is multiplied by the world size").**
Every process computes the same global loss L, but autograd can only send dL/dx back to the
samples a process holds itself. Process r's parameter gradient is therefore
``dL/dx_r dx_r/dtheta``, the part of the exact gradient that comes through its own samples;
the exact gradient is the SUM of these parts over the W processes. DDP (and
:func:`average_gradients`) AVERAGE the parameter gradients over the processes, so
:func:`gather_batch` multiplies the gradient of the local embeddings by W: the average over
the W processes then equals the single-process gradient of the global batch, exactly. The
loss *value* is not scaled (it is the global loss, identical on every process). Parameters of
the loss itself (proxies) see the whole global batch on every process: their gradient is
already exact and identical on every process (averaging it changes nothing), so it is not
scaled.

``DistributedLoss(loss, local_queries=True)`` computes only the process's own rows of S (its
queries against all references: W times fewer similarity products, the O(B M D) part) and
gathers the rows, so that the loss is still evaluated on the full S (exact for every loss:
VTHM and the global normalisers need every row); the gradient of the references comes back
through an all-reduce. Same value and gradients as the gathered form.

Cross-batch memory under several processes: ``DistributedLoss(CrossBatchMemory(...))``
enqueues the gathered global batch, in rank order, on every process, so every process's
memory is identical (PML #639) and equal to a single-process run's on the global batches.

Training: :func:`dmlkit.train.fit` under ``torchrun`` (``torchrun --nproc_per_node 2 -m
dmlkit train ...``) initialises the process group from the environment
(:func:`init_from_env`: gloo on CPU, NCCL on CUDA), gives each process distinct classes
(:class:`DistributedPKSampler`), averages the model's gradients, keeps the model's buffers
equal to rank 0's, and writes checkpoints, logs and CSVs from rank 0 only.

Without an initialised process group (or with W = 1) everything here is the plain
single-process computation.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ._checks import check_embeddings_labels
from .data.samplers import PKSampler
from .losses.base import PairBatch, PairLoss
from .similarity import pair_masks, similarity_matrix

__all__ = [
    "DistributedLoss", "DistributedPKSampler", "average_gradients", "broadcast_buffers",
    "average_gradients_in_backward", "gather_batch", "init_from_env", "is_main",
    "local_device", "pk_sampler", "rank", "world_size",
]


def world_size() -> int:
    """The number of processes (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (the process that writes files)."""
    return rank() == 0


_current_rank, _current_world_size = rank, world_size


def init_from_env(device: str | torch.device | None = None) -> tuple[int, int]:
    """Initialise the default process group from ``torchrun``'s environment (``WORLD_SIZE``
    > 1, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) unless it already is:
    NCCL when ``device`` (a :class:`~dmlkit.train.TrainConfig` device name) may be CUDA and
    CUDA is available (each process then uses ``cuda:LOCAL_RANK``), gloo otherwise. Returns
    ``(rank, world_size)``; (0, 1) outside torchrun."""
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = str(device or "auto")
        cuda = (torch.cuda.is_available() and name == "auto") or name.startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank(), world_size()


def local_device(device: torch.device) -> torch.device:
    """Under several processes a CUDA device becomes ``cuda:LOCAL_RANK`` (one per process)."""
    if world_size() > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# ----------------------------------------------------------------------------- gathering
def _sizes(n: int, device) -> list[int]:
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.long, device=device))
    return [int(s) for s in sizes]


def _all_gather_rows(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The rows of every process, concatenated in rank order (local sizes may differ)."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


class _Gather(torch.autograd.Function):
    """All-gather rows; backward: this process's slice of the incoming gradient, after an
    all-reduce (sum) when ``reduce`` (the processes computed different things from the
    gathered rows) or as it is (every process computed the same function of them)."""

    @staticmethod
    def forward(ctx, x, sizes, reduce):
        ctx.sizes, ctx.reduce, ctx.rank = sizes, reduce, rank()
        return _all_gather_rows(x, sizes)

    @staticmethod
    def backward(ctx, grad):
        if ctx.reduce:
            grad = grad.contiguous().clone()
            dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class _SumGrad(torch.autograd.Function):
    """Identity forward; the gradient summed over the processes (a replicated input that each
    process used for a different part of the loss)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def gather_batch(embeddings: torch.Tensor, labels: torch.Tensor,
                 scale_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch ``(embeddings (N, D), labels (N,))``, every process's rows in rank
    order, on every process. The gradient flows back to this process's own rows, multiplied
    by W when ``scale_grad`` (so that averaging the parameter gradients over the processes
    gives the exact gradient: module docstring). Every process must compute the same function
    of the result (the loss of the global batch). W = 1: the inputs unchanged."""
    if world_size() == 1:
        return embeddings, labels
    sizes = _sizes(len(labels), embeddings.device)
    if scale_grad:
        embeddings = _ScaleGrad.apply(embeddings, float(world_size()))
    return (_Gather.apply(embeddings, sizes, False),
            _all_gather_rows(labels.to(embeddings.device), sizes).to(labels.device))


class DistributedLoss(nn.Module):
    """The loss of the global batch from each process's local embeddings and labels.

    ``forward(embeddings, labels)`` with the local (B_r, D) / (B_r,) returns, on every
    process, ``loss(global embeddings, global labels)`` (rank order), the same value a single
    process computes on the concatenated batch. The gradient of the local embeddings is W
    times this process's part of the exact gradient, so that **DDP's average over the W
    processes equals the single-process gradient of the global batch** (module docstring);
    the loss's own parameters (proxies) get their exact gradient on every process.

    ``local_queries=True``: each process computes only the rows of S of its own queries
    against all references (the gathered batch, or the proxies of a proxy loss), W times
    fewer similarity products; the rows are gathered and the loss evaluated on the full S,
    so the value and every gradient are the same as with ``local_queries=False``. It needs a
    dmlkit :class:`~dmlkit.losses.PairLoss` (not a :class:`~dmlkit.memory.CrossBatchMemory`,
    whose references are its memory; wrap the memory with ``local_queries=False``).
    Without an initialised process group it is ``loss`` itself.
    """

    def __init__(self, loss: nn.Module, local_queries: bool = False):
        super().__init__()
        if local_queries and not isinstance(loss, PairLoss):
            raise ValueError(f"local_queries=True needs a dmlkit PairLoss, got "
                             f"{type(loss).__name__}")
        self.loss, self.local_queries = loss, bool(local_queries)

    def forward(self, embeddings, labels) -> torch.Tensor:
        if world_size() == 1:
            return self.loss(embeddings, labels)
        emb, lab = check_embeddings_labels(embeddings, labels)
        if not self.local_queries:
            return self.loss(*gather_batch(emb, lab))
        return self._local_rows(emb, lab)

    def _local_rows(self, emb: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        loss, W = self.loss, float(world_size())
        x = _ScaleGrad.apply(emb, W)
        sizes = _sizes(len(lab), emb.device)
        X = _Gather.apply(x, sizes, False)            # every process uses it identically
        Y = _all_gather_rows(lab, sizes)
        if hasattr(loss, "references"):               # a proxy loss: S = samples x proxies
            loss.proxy_batch(emb.detach(), lab)       # checks dimension and label range
            R, ref_labels = loss.references(emb)
            R, in_batch = _SumGrad.apply(R), False
        else:
            R, ref_labels, in_batch = _Gather.apply(x, sizes, True), Y, True
        S = _Gather.apply(similarity_matrix(x, R, normalize=loss.normalize), sizes, False)
        pos, neg = pair_masks(Y, None if in_batch else ref_labels)
        batch = PairBatch(S=S, pos=pos, neg=neg, labels=Y, ref_labels=ref_labels,
                          embeddings=X, ref_embeddings=X if in_batch else R, in_batch=in_batch,
                          normalized=loss.normalize, label_masks=True)
        return loss.compute(batch) + loss.regularizer(batch)


# ----------------------------------------------------------------------------- training
def average_gradients(parameters) -> None:
    """All-reduce the gradient of every parameter and divide by W (what DDP does)."""
    W = world_size()
    if W == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(W)


def average_gradients_in_backward(module: nn.Module) -> list:
    """Register hooks that average each parameter's gradient over the processes as soon as
    backward has accumulated it (before clipping and the optimiser step); returns the hook
    handles. Every process must run the same backward graph (as with DDP)."""
    W = world_size()
    if W == 1:
        return []

    def hook(p: torch.Tensor) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(W)

    return [p.register_post_accumulate_grad_hook(hook) for p in module.parameters()
            if p.requires_grad]


@torch.no_grad()
def broadcast_buffers(module: nn.Module) -> None:
    """Make every buffer (BatchNorm running statistics) equal to rank 0's (as DDP's
    ``broadcast_buffers``)."""
    if world_size() == 1:
        return
    for b in module.buffers():
        dist.broadcast(b, 0)


class DistributedPKSampler(PKSampler):
    """P x K batches for one of W processes: the global batch has ``P * world_size`` classes
    (a :class:`~dmlkit.data.PKSampler` with the same seed on every process, so the global
    batches are those of a single process with ``P * world_size`` classes), and process r
    takes classes ``r P .. (r + 1) P - 1`` of it: distinct classes on every process, and
    the gathered batch (rank order) is the single-process batch in the same order.
    ``rank`` / ``world_size`` default to the process group's."""

    def __init__(self, labels, P: int, K: int, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, small_classes: str = "replace"):
        self.rank = _current_rank() if rank is None else int(rank)
        self.world_size = _current_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size), got {self.rank}, "
                             f"{self.world_size}")
        super().__init__(labels, P * self.world_size, K, seed=seed, drop_last=True,
                         small_classes=small_classes)
        self.local_P = int(P)

    @property
    def batch_size(self) -> int:
        return self.local_P * self.K

    def __iter__(self):
        n = self.batch_size
        for batch in super().__iter__():
            yield batch[self.rank * n: (self.rank + 1) * n]


def pk_sampler(labels, P: int, K: int, seed: int = 0) -> PKSampler:
    """The training sampler of this process: a :class:`DistributedPKSampler` under several
    processes, else a :class:`~dmlkit.data.PKSampler`."""
    if world_size() > 1:
        return DistributedPKSampler(np.asarray(labels), P, K, seed=seed)
    return PKSampler(np.asarray(labels), P, K, seed=seed)
