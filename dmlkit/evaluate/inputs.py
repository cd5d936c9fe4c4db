"""Input checks and query chunking shared by every metric family.

Embeddings are checked (2-D, floating point, finite), cast to float32 (float64 stays float64)
and L2-normalised when asked; labels are checked against them. Similarity blocks are cut into
chunks of queries of about ``max_block`` floats.

Unnormalised float32 queries and database whose similarities could overflow float32 (the
product of their largest norms above half its maximum, 1.7e38) are searched in float64, an
exact conversion: float32 would turn such similarities into +-inf, ties that no longer follow
the similarities, among which a query's own masked entry (-inf) would rank. Beyond half of
float64's maximum a ValueError names the norms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_embeddings, check_labels

__all__ = ["DEFAULT_BLOCK", "block_rows", "check_choice", "check_ks", "prepare",
           "query_database"]

DEFAULT_BLOCK = 2**25  # floats in one similarity block (128 MiB in float32)


def prepare(embeddings, labels, name: str, normalize: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``(embeddings (N, D) float32/float64, labels (N,) int64)`` on one device."""
    emb = check_embeddings(embeddings, name)
    lab = check_labels(labels, emb.shape[0], name=f"{name} labels" if name != "embeddings"
                       else "labels", device=emb.device)
    if emb.dtype != torch.float64:
        emb = emb.float()
    if normalize:
        emb = F.normalize(emb, dim=1)
    return emb, lab


def check_ks(ks, name: str = "ks") -> tuple[int, ...]:
    """An int or a list of positive ints -> a tuple of ints (ValueError otherwise)."""
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"{name} must be positive integers, got {ks}")
    return ks


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(map(repr, choices))}")
    return value


def _split_gallery(gallery, normalize: bool, q_emb: torch.Tensor):
    if gallery is None:
        return None, None
    if not isinstance(gallery, (tuple, list)) or len(gallery) != 2:
        raise ValueError("gallery must be a (gallery_embeddings, gallery_labels) pair")
    g_emb, g_lab = prepare(gallery[0], gallery[1], "gallery embeddings", normalize)
    if g_emb.shape[1] != q_emb.shape[1]:
        raise ValueError(
            f"gallery embeddings have dimension {g_emb.shape[1]} but queries have {q_emb.shape[1]}"
        )
    g_emb = g_emb.to(device=q_emb.device, dtype=q_emb.dtype)
    return g_emb, g_lab.to(q_emb.device)


def query_database(embeddings, labels, gallery, normalize: bool):
    """Queries and the database they search: ``(q_emb, q_lab, g_emb, g_lab, self_mode)``.

    Without a gallery (``self_mode``) the queries are the database (each query's own row is
    left out by the metric); with ``gallery=(embeddings (M, D), labels (M,))`` they search it.
    """
    q_emb, q_lab = prepare(embeddings, labels, "embeddings", normalize)
    g_emb, g_lab = _split_gallery(gallery, normalize, q_emb)
    self_mode = g_emb is None
    if not normalize:
        q_emb, g_emb = _within_range(q_emb, q_emb if self_mode else g_emb)
    if self_mode:
        g_emb, g_lab = q_emb, q_lab
    return q_emb, q_lab, g_emb, g_lab, self_mode


def _largest_norm(x: torch.Tensor, rows: int = 4096) -> float:
    """The largest row norm, in float64 without overflow (each row scaled by its largest
    entry first), a block of rows at a time (no float64 copy of the whole matrix)."""
    tiny, best = torch.finfo(torch.float64).tiny, 0.0
    for a in range(0, x.shape[0], rows):
        block = x[a:a + rows].double()
        scale = block.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
        best = max(best, float(((block / scale).norm(dim=1) * scale[:, 0]).max()))
    return best


def _within_range(q_emb: torch.Tensor, g_emb: torch.Tensor):
    """Unnormalised queries and database in a dtype where no similarity overflows: float64
    when float32 could (the largest norms' product above half its maximum; Cauchy-Schwarz
    bounds every partial sum of a dot product by it); a ValueError beyond float64's."""
    if q_emb.shape[0] == 0 or g_emb.shape[0] == 0:
        return q_emb, g_emb
    nq = _largest_norm(q_emb)
    ng = nq if g_emb is q_emb else _largest_norm(g_emb)
    if nq * ng < torch.finfo(q_emb.dtype).max / 2:
        return q_emb, g_emb
    if nq * ng >= torch.finfo(torch.float64).max / 2:
        raise ValueError(
            f"embeddings of norm up to {nq:.3g} and database embeddings of norm up to "
            f"{ng:.3g} give similarities beyond float64's range (their product exceeds "
            f"{torch.finfo(torch.float64).max / 2:.3g}); pass normalize=True or rescale them")
    q64 = q_emb.double()
    return q64, (q64 if g_emb is q_emb else g_emb.double())


def block_rows(n_query: int, n_db: int, max_block: int) -> int:
    """Queries per chunk so that one (chunk, database) block holds about ``max_block`` floats."""
    return int(max(1, min(n_query, max_block // max(n_db, 1))))
