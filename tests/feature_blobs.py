"""Shared data of the adversarial tests: Gaussian blobs of features and P x K labels."""

import torch
import torch.nn.functional as F
from embedding_fixtures import one_thread  # noqa: F401  (autouse where imported)


def blobs(C=6, n=12, D=16, spread=1.0, seed=0, normalize=True):
    """C classes of n features (C n, D) around random centres, and their labels (C n,)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, D, generator=g) * 2.0
    y = torch.arange(C).repeat_interleave(n)
    x = centers[y] + spread * torch.randn(C * n, D, generator=g)
    return (F.normalize(x, dim=1) if normalize else x), y


def pk_labels(P=4, K=3):
    """Labels of a P x K batch: (P K,)."""
    return torch.arange(P).repeat_interleave(K)
