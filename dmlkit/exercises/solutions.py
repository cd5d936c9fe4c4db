"""Reference solutions of the exercises: plain torch, written as a student would, one function
(or value) per exercise, kept apart from the checker.

The checker never reads this module: it compares answers with dmlkit's own implementations
(:mod:`dmlkit.losses`, :mod:`dmlkit.miners`, :mod:`dmlkit.evaluate`, ...), and the tests check
that every solution here passes. Notebooks load them with ``exercises.solution(name)`` when
run with the papermill parameter ``SOLUTIONS = True``; they live in the package (not next to
the notebooks) so that a notebook run anywhere (papermill in a temporary folder, nbval, a
copied notebook) finds them without touching ``sys.path``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ANSWERS"]


# ----------------------------------------------------------------------------- notebook 01
def pair_masks(labels):
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    return same & ~eye, ~same


def contrastive_loss(S, pos, neg, lam=0.5):
    if not bool(pos.any()) or not bool(neg.any()):
        return (S * 0).sum()
    terms = torch.where(pos, -S, 0.0) + torch.where(neg, torch.relu(S - lam), 0.0)
    return terms.sum() / (pos.sum() + neg.sum())


def triplet_loss(S, pos, neg, margin=0.2):
    # axes (i, p, n): s_in - s_ip + margin over the valid triplets
    valid = pos[:, :, None] & neg[:, None, :]
    losses = torch.relu(S[:, None, :] - S[:, :, None] + margin)
    losses = torch.where(valid, losses, 0.0)
    return losses.sum() / (losses > 0).sum().clamp_min(1)


triplet_categories = ["hard", "semi-hard", "easy"]


# ----------------------------------------------------------------------------- notebook 02
def lifted_loss(S, pos, neg, lam=1.0):
    def row_lse(x, mask):
        x = torch.where(mask, x, float("-inf"))
        x = torch.where(mask.any(1, keepdim=True), x, 0.0)     # empty rows: no NaN gradient
        return torch.logsumexp(x, dim=1)

    h = torch.relu(row_lse(-S, pos) + row_lse(S, neg) + lam)
    live = pos.any(1) & neg.any(1)
    return torch.where(live, h, 0.0).sum() / S.shape[0]


def npair_loss(f, f_pos):
    logits = f.float() @ f_pos.float().T if f.dtype == torch.float16 else f @ f_pos.T
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


# ----------------------------------------------------------------------------- notebook 03
def ms_negative_weights(S, neg, beta=50.0, lam=0.5):
    S = S.float() if S.dtype == torch.float16 else S
    z = torch.where(neg, beta * (S - lam), float("-inf"))
    z = torch.cat([z, torch.zeros_like(z[:, :1])], dim=1)     # the 1: the logit 0
    w = torch.softmax(z, dim=1)[:, :-1]
    return torch.where(neg, w, 0.0)


contrastive_weights = [0.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- notebook 04
def vthm_masks(S, pos, neg, epsilon=0.1):
    inf = torch.tensor(float("inf"), dtype=S.dtype)
    hardest_pos = torch.where(pos, S, inf).amin(1, keepdim=True)
    hardest_neg = torch.where(neg, S, -inf).amax(1, keepdim=True)
    return pos & (S - epsilon < hardest_neg), neg & (S + epsilon > hardest_pos)


vthm_kept = [(0, 3), (3, 0)]
epsilon_experiment = ("More negatives should be kept: epsilon lowers the bar a negative has to "
                      "pass, so the mining keeps more of them.")


# ----------------------------------------------------------------------------- notebook 05
def osm_weights(D, pos, neg, sigma=0.8, alpha=1.2):
    w_pos = torch.where(pos, torch.exp(-D ** 2 / sigma ** 2), 0.0)
    w_neg = torch.where(neg, torch.relu(alpha - D), 0.0)
    return w_pos, w_neg


def caa_attention(f, labels, centres, scale=1.0):
    f = f.float() if f.dtype == torch.float16 else f
    cos = F.normalize(f, dim=1) @ F.normalize(centres.to(f.dtype), dim=1).T
    a = torch.softmax(scale * cos, dim=1).gather(1, labels[:, None]).squeeze(1)
    return torch.minimum(a[:, None], a[None, :])


scale_experiment = ("The attention gets flatter: the outlier's attention rises and the clean "
                    "samples' falls toward 1/2, so the outlier's pairs lose less weight.")


# ----------------------------------------------------------------------------- notebook 06
control_probe = 0.5


def daml_objective(anchor, positive, negative, synthetic, lambda1=1.0, lambda2=1.0, alpha=1.0):
    def d2(x, y):
        if x.dtype == torch.float16:
            x, y = x.float(), y.float()
        return ((x - y) ** 2).sum(1)

    j_hard = d2(synthetic, anchor)
    j_reg = d2(synthetic, negative)
    j_adv = torch.relu(d2(synthetic, anchor) - d2(positive, anchor) - alpha)
    return (j_hard + lambda1 * j_reg + lambda2 * j_adv).mean()


def synthetic_hardness(anchor, positive, synthetic, margin=0.0):
    d_ap = (positive.double() - anchor.double()).norm(dim=1)
    d_asyn = (synthetic.double() - anchor.double()).norm(dim=1)
    violating = (d_asyn < d_ap + margin).double().mean()
    return float(d_ap.mean()), float(d_asyn.mean()), float(violating)


# ----------------------------------------------------------------------------- notebook 07
synthetic_positive_landing = (2.0, 0.0)


def positive_objective(anchor, positive, synthetic_positive, lambda1=1.0):
    g = synthetic_positive.float() if synthetic_positive.dtype == torch.float16 \
        else synthetic_positive
    hard = ((g - anchor.to(g.dtype)) ** 2).sum(1)
    reg = ((g - positive.to(g.dtype)) ** 2).sum(1)
    return (hard + lambda1 * reg).mean()


lambda1_experiment = ("The synthetic positive moves toward the real positive, so its distance "
                      "to the anchor grows toward D(anchor, positive).")


# ----------------------------------------------------------------------------- notebook 08
def _ranking(D):
    D = D.clone()
    D.fill_diagonal_(float("inf"))                  # the query ranks last
    return torch.argsort(D, dim=1, stable=True)[:, :-1]


def recall_at_k(D, labels, k):
    order = _ranking(D)[:, :k]
    hit = (labels[order] == labels[:, None]).any(1)
    has_positive = (labels[:, None] == labels[None, :]).sum(1) > 1
    return float(hit[has_positive].double().mean())


def map_at_r(D, labels):
    order = _ranking(D)
    rel = labels[order] == labels[:, None]
    R = (labels[:, None] == labels[None, :]).sum(1) - 1
    scores = []
    for i in range(len(labels)):
        r = int(R[i])
        if r == 0:
            continue
        hit = rel[i, :r].double()
        precision = hit.cumsum(0) / torch.arange(1, r + 1)
        scores.append(float((precision * hit).sum()) / r)
    return sum(scores) / len(scores)


def kmeanspp_step(X, centres, u):
    X = X.double()
    d2 = ((X[:, None, :] - X[centres][None]) ** 2).sum(-1).min(1).values
    cum = torch.cumsum(d2, 0)
    return int(torch.searchsorted(cum, u * cum[-1]))


recall_saturates = "recall@1"


# ----------------------------------------------------------------------------- notebook 11
def lse_update(m, acc, z):
    new = torch.maximum(m, z.amax(1))
    safe = torch.where(torch.isfinite(new), new, 0.0)
    acc = acc * torch.exp(m - safe) + torch.exp(z - safe[:, None]).sum(1)
    return new, acc


dense_memory_gib = 65536 * 65536 * 4 / 2 ** 30
chunk_experiment = ("Slower (more, smaller tiles) but a lower peak memory; the same values, "
                    "since the tiles are exact.")


# ----------------------------------------------------------------------------- notebook 12
def fifo_enqueue(memory, mem_labels, pointer, filled, emb, lab):
    size = memory.shape[0]
    slots = (pointer + torch.arange(len(lab))) % size
    memory[slots] = emb.detach().to(memory.dtype)
    mem_labels[slots] = lab
    return memory, mem_labels, (pointer + len(lab)) % size, min(filled + len(lab), size)


xbm_pointer = (10, 2)

#: exercise name -> its solution
ANSWERS = {name: value for name, value in dict(globals()).items()
           if not name.startswith("_") and name not in ("annotations", "torch", "F", "ANSWERS")}
