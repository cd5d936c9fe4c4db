"""Embedding a dataset with a model: the inputs of every metric.

>>> import torch
>>> from dmlkit.evaluate import embed
>>> loader = [(torch.ones(3, 2), torch.tensor([0, 1, 1]))]
>>> emb, labels = embed(torch.nn.Linear(2, 4), loader)
>>> emb.shape, emb.dtype, labels.tolist()
((3, 4), dtype('float32'), [0, 1, 1])
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["embed"]


def embed(model: torch.nn.Module, loader, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode under ``torch.no_grad`` over a loader of (images, labels).

    Returns ``(embeddings (N, D) float32, labels (N,) int64)`` as numpy arrays, in loader order.
    The model's training mode is restored afterwards. ``device`` defaults to the model's.
    """
    from tqdm.auto import tqdm

    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    was_training = model.training
    model.eval()
    embs, labs = [], []
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="embed", leave=False):
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ValueError("the loader must yield (images, labels) batches")
                images, labels = batch[0], batch[1]
                out = model(images.to(device, non_blocking=True))
                embs.append(out.detach().float().cpu())
                labs.append(torch.as_tensor(labels).long().cpu())
    finally:
        model.train(was_training)
    if not embs:
        raise ValueError("the loader yielded no batches")
    return torch.cat(embs).numpy(), torch.cat(labs).numpy()
