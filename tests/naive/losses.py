"""Per-pair and per-triplet loops in float64: the references for every loss and miner test.

Each loss, miner and closed-form weight of dmlkit is recomputed here from its definition with
plain Python loops over the pairs / triplets of a batch, written independently of the library
(the seeded batches and the shared testers that use these loops: :mod:`naive.loss_testing`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "masks_to_sets", "naive_angular", "naive_binomial", "naive_contrastive", "naive_cos",
    "naive_ddml", "naive_dw_probabilities", "naive_generalized_lifted", "naive_hard",
    "naive_lifted", "naive_npair", "naive_osm_caa", "naive_raw", "naive_semihard",
    "naive_semihard_sets", "naive_sets", "naive_triplet", "naive_tuplet", "naive_uniform",
    "naive_vthm", "naive_vthm_sets", "reduce", "softplus",
]

# =========================================================================== numpy views
def _np(x, normalize):
    a = x.detach().numpy().astype(np.float64)
    if normalize:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return a


def _setup(q, ql, r, rl, normalize):
    """Naive-side views: (queries, query labels, refs, ref labels, in_batch)."""
    in_batch = r is None
    Q = _np(q, normalize)
    R = Q if in_batch else _np(r, normalize)
    qlab = ql.tolist()
    rlab = qlab if in_batch else rl.tolist()
    return Q, qlab, R, rlab, in_batch


def _pairs(qlab, rlab, in_batch):
    """Ordered (i, j, is_positive) over the pairs of the (B, M) matrix, diagonal excluded."""
    for i in range(len(qlab)):
        for j in range(len(rlab)):
            if in_batch and i == j:
                continue
            yield i, j, qlab[i] == rlab[j]


def _dist(a, b):
    return float(np.sqrt(np.sum((a - b) ** 2)))


def softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


# =========================================================================== pair losses
def naive_contrastive(q, ql, r=None, rl=None, margin=1.0, lam=0.5, form="distance",
                      pos_margin=None, power=2.0, reduction="mean", normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    pos_terms, neg_terms = [], []
    for i, j, same in _pairs(qlab, rlab, in_batch):
        if form == "distance":
            d = _dist(Q[i], R[j])
            if same:
                pos_terms.append(max(d - (pos_margin or 0.0), 0.0) ** power)
            else:
                neg_terms.append(max(margin - d, 0.0) ** power)
        else:
            s = float(Q[i] @ R[j])
            if same:
                pos_terms.append(-s if pos_margin is None else max(pos_margin - s, 0.0))
            else:
                neg_terms.append(max(s - lam, 0.0))
    if not pos_terms or not neg_terms:          # degenerate batch: the package's 0
        return 0.0
    if reduction == "sum":
        return sum(pos_terms) + sum(neg_terms)
    if reduction == "mean":
        n = len(pos_terms) + len(neg_terms)
        return (sum(pos_terms) + sum(neg_terms)) / max(n, 1)
    nz_p = [t for t in pos_terms if t != 0]
    nz_n = [t for t in neg_terms if t != 0]
    return (sum(nz_p) / len(nz_p) if nz_p else 0.0) + (sum(nz_n) / len(nz_n) if nz_n else 0.0)


def naive_lifted(q, ql, r=None, rl=None, margin=1.0, normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    total, n_pos = 0.0, 0
    for i, j, same in _pairs(qlab, rlab, in_batch):
        if not same:
            continue
        n_pos += 1
        terms = [margin - _dist(Q[i], R[k]) for k in range(len(rlab)) if rlab[k] != qlab[i]]
        if in_batch:
            terms += [margin - _dist(Q[j], Q[k]) for k in range(len(qlab)) if qlab[k] != qlab[j]]
        if not terms:
            continue
        J = math.log(sum(math.exp(t) for t in terms)) + _dist(Q[i], R[j])
        total += max(J, 0.0) ** 2
    return total / (2 * n_pos) if n_pos else 0.0


def naive_generalized_lifted(q, ql, r=None, rl=None, lam=1.0, margin=1.0, form="similarity",
                             normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    total = 0.0
    for i in range(len(qlab)):
        P = [j for j in range(len(rlab)) if rlab[j] == qlab[i] and not (in_batch and j == i)]
        N = [j for j in range(len(rlab)) if rlab[j] != qlab[i]]
        if not P or not N:
            continue
        if form == "similarity":
            h = (math.log(sum(math.exp(-float(Q[i] @ R[k])) for k in P))
                 + math.log(sum(math.exp(float(Q[i] @ R[k])) for k in N)) + lam)
        else:
            h = (math.log(sum(math.exp(_dist(Q[i], R[k])) for k in P))
                 + math.log(sum(math.exp(margin - _dist(Q[i], R[k])) for k in N)))
        total += max(h, 0.0)
    return total / len(qlab)


def _naive_npair_pairs(qlab, rlab, in_batch):
    """[(anchor, positive column)], [candidate columns] by the documented pairing rule."""
    if in_batch:
        anchors, cols = [], []
        for c in dict.fromkeys(qlab):                 # classes in order of first appearance
            members = [k for k, lab in enumerate(qlab) if lab == c]
            if len(members) >= 2:
                anchors.append((members[0], members[1]))
                cols.append(members[1])
        return anchors, cols
    first_ref = {}
    for k, lab in enumerate(rlab):
        first_ref.setdefault(lab, k)
    cols = sorted(first_ref.values())
    anchors = [(i, first_ref[lab]) for i, lab in enumerate(qlab) if lab in first_ref]
    return anchors, cols


def naive_npair(q, ql, r=None, rl=None, l2_reg=0.002, normalize=False, ovo=False):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    anchors, cols = _naive_npair_pairs(qlab, rlab, in_batch)
    if not anchors or len(cols) < 2:
        return 0.0
    total = 0.0
    for i, p in anchors:
        s_pos = float(Q[i] @ R[p])
        diffs = [float(Q[i] @ R[j]) - s_pos for j in cols if j != p]
        if ovo:
            total += sum(math.log1p(math.exp(z)) for z in diffs)
        else:
            total += math.log1p(sum(math.exp(z) for z in diffs))
    loss = total / len(anchors)
    Qraw = q.detach().numpy()
    Rraw = Qraw if in_batch else r.detach().numpy()
    reg_a = np.mean([np.sum(Qraw[i] ** 2) for i, _ in anchors])
    reg_p = np.mean([np.sum(Rraw[j] ** 2) for j in cols])
    return loss + 0.25 * l2_reg * (reg_a + reg_p)


def naive_tuplet(q, ql, r=None, rl=None, form="softplus", margin=0.0, l2_reg=0.002,
                 normalize=False):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    terms = []
    for a, p, same in _pairs(qlab, rlab, in_batch):
        if not same:
            continue
        negs = [float(Q[a] @ R[n]) for n in range(len(rlab)) if rlab[n] != qlab[a]]
        if not negs:
            continue
        s_ap = float(Q[a] @ R[p])
        if form == "softplus":
            terms.append(math.log1p(sum(math.exp(s - s_ap) for s in negs)))
        else:
            terms.append(max(max(negs) - s_ap + margin, 0.0))
    if not terms:
        return 0.0
    Qraw = q.detach().numpy()
    Rraw = Qraw if in_batch else r.detach().numpy()
    reg = 0.25 * l2_reg * (np.mean(np.sum(Qraw ** 2, 1)) + np.mean(np.sum(Rraw ** 2, 1)))
    return sum(terms) / len(terms) + reg


def naive_angular(q, ql, r=None, rl=None, alpha=40.0, normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    t = math.tan(math.radians(alpha)) ** 2
    total, n_pos = 0.0, 0
    for a, p, same in _pairs(qlab, rlab, in_batch):
        if not same:
            continue
        n_pos += 1
        acc = 0.0
        for n in range(len(rlab)):
            if rlab[n] == qlab[a]:
                continue
            acc += math.exp(4 * t * float((Q[a] + R[p]) @ R[n]) - 2 * (1 + t) * float(Q[a] @ R[p]))
        total += math.log1p(acc)
    return total / n_pos if n_pos else 0.0


def naive_ddml(q, ql, r=None, rl=None, tau=2.0, beta=2.0, reduction="mean", normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    gs, kinds = [], set()
    for i, j, same in _pairs(qlab, rlab, in_batch):
        d2 = float(np.sum((Q[i] - R[j]) ** 2))
        lij = 1.0 if same else -1.0
        kinds.add(same)
        gs.append(softplus(beta * (1.0 - lij * (tau - d2))) / beta)
    if kinds != {True, False}:                  # degenerate batch: the package's 0
        return 0.0
    return 0.5 * sum(gs) if reduction == "sum" else sum(gs) / len(gs)


# =========================================================================== triplets
def naive_triplet(emb, lab, margin, form, mining, reduction, ref=None, ref_lab=None):
    """Per-triplet loop in float64: the definition, written independently of the library."""
    q = F.normalize(emb.double(), dim=1)
    r = q if ref is None else F.normalize(ref.double(), dim=1)
    rl = lab if ref_lab is None else ref_lab

    def score(a, x):
        if form == "similarity":
            return float(q[a] @ r[x])
        d2 = float(((q[a] - r[x]) ** 2).sum())
        return -d2 if form == "squared_distance" else -d2 ** 0.5

    total, kept, nonzero, valid = 0.0, 0, 0, 0
    for a in range(len(lab)):
        per_anchor = []
        for p in range(len(rl)):
            if rl[p] != lab[a] or (ref is None and p == a):
                continue
            for n in range(len(rl)):
                if rl[n] == lab[a]:
                    continue
                valid += 1
                ta, tn = score(a, p), score(a, n)
                if mining == "semihard" and not (ta - margin < tn < ta):
                    continue
                if mining == "hard" and not tn > ta:
                    continue
                per_anchor.append((ta, tn))
        if mining == "batch_hard" and per_anchor:
            ta = min(t for t, _ in per_anchor)
            tn = max(t for _, t in per_anchor)
            per_anchor = [(ta, tn)]
        for ta, tn in per_anchor:
            value = max(0.0, tn - ta + margin)
            total += value
            kept += 1
            nonzero += value > 0
    if reduction == "sum":
        return total
    if reduction == "mean":
        denom = kept if mining != "all" else valid
        return total / max(denom, 1)
    return total / max(nonzero, 1)


# =========================================================================== pair sets, mining
def naive_cos(x, r):
    """Cosine similarities as a list of lists, from plain Python sums."""
    def unit(v):
        n = math.sqrt(sum(float(t) ** 2 for t in v))
        return [float(t) / n for t in v]
    xs, rs = [unit(v) for v in x], [unit(v) for v in r]
    return [[sum(a * b for a, b in zip(u, w)) for w in rs] for u in xs]


def naive_sets(y, ry=None):
    """Per anchor the lists of its positive and negative columns (in-batch: without itself)."""
    in_batch = ry is None
    ry = y if in_batch else ry
    P, N = [], []
    for i in range(len(y)):
        P.append([j for j in range(len(ry))
                  if int(ry[j]) == int(y[i]) and not (in_batch and i == j)])
        N.append([j for j in range(len(ry)) if int(ry[j]) != int(y[i])])
    return P, N


def masks_to_sets(pk, nk):
    """(B, M) bool masks -> per row the lists of their True columns."""
    return ([torch.nonzero(r).flatten().tolist() for r in pk],
            [torch.nonzero(r).flatten().tolist() for r in nk])


def _sets_to_masks(Pk, Nk, like):
    pk, nk = torch.zeros_like(like), torch.zeros_like(like)
    for i, (p_row, n_row) in enumerate(zip(Pk, Nk)):
        pk[i, p_row] = True
        nk[i, n_row] = True
    return pk, nk


def naive_vthm_sets(S, P, N, eps):
    """VTHM by its definition: keep a negative above the hardest positive - eps, a positive
    below the hardest negative + eps (anchors without both keep nothing)."""
    Pk, Nk = [], []
    for i in range(len(S)):
        if not P[i] or not N[i]:
            Pk.append([])
            Nk.append([])
            continue
        hp = min(S[i][j] for j in P[i])
        hn = max(S[i][j] for j in N[i])
        Pk.append([j for j in P[i] if S[i][j] < hn + eps])
        Nk.append([j for j in N[i] if S[i][j] > hp - eps])
    return Pk, Nk


def naive_semihard_sets(S, P, N, margin):
    """The pairs of at least one triplet with s_ip - margin < s_in < s_ip."""
    Pk, Nk = [], []
    for i in range(len(S)):
        trip = [(p, n) for p in P[i] for n in N[i] if S[i][p] - margin < S[i][n] < S[i][p]]
        Pk.append(sorted({p for p, _ in trip}))
        Nk.append(sorted({n for _, n in trip}))
    return Pk, Nk


def naive_vthm(S, pos, neg, eps):
    """:func:`naive_vthm_sets` on a (B, M) tensor S and bool masks; returns masks."""
    P, N = masks_to_sets(pos, neg)
    return _sets_to_masks(*naive_vthm_sets(S.tolist(), P, N, eps), pos)


def naive_semihard(S, pos, neg, margin):
    """:func:`naive_semihard_sets` on a (B, M) tensor S and bool masks; returns masks."""
    P, N = masks_to_sets(pos, neg)
    return _sets_to_masks(*naive_semihard_sets(S.tolist(), P, N, margin), pos)


def naive_hard(S, pos, neg):
    """Per anchor with a positive and a negative: its least similar positive and most similar
    negative (ties: the first column)."""
    P, N = masks_to_sets(pos, neg)
    pk = torch.zeros_like(pos)
    nk = torch.zeros_like(neg)
    for i in range(S.shape[0]):
        if not P[i] or not N[i]:
            continue
        pk[i, min(P[i], key=lambda j: float(S[i, j]))] = True
        nk[i, max(N[i], key=lambda j: float(S[i, j]))] = True
    return pk, nk


def naive_dw_probabilities(S, neg, dim, cutoff, nzc):
    """Distance-weighted sampling probabilities 1 / q(max(d, cutoff)) on the negatives with
    d < nzc, normalised per row (uniform over the negatives when none qualifies)."""
    B, M = S.shape
    out = torch.zeros(B, M, dtype=torch.float64)
    for i in range(B):
        w = {}
        for j in range(M):
            if not neg[i, j]:
                continue
            d = max(math.sqrt(max(2 - 2 * float(S[i, j]), 0.0)), cutoff)
            if d < nzc:
                q = d ** (dim - 2) * (1 - d * d / 4) ** ((dim - 3) / 2)
                w[j] = 1.0 / q
        if not w:   # official fallback: uniform over the negatives
            w = {j: 1.0 for j in range(M) if neg[i, j]}
        tot = sum(w.values())
        for j, v in w.items():
            out[i, j] = v / tot
    return out


# =========================================================================== weightings
# an anchor counts only with a kept positive AND a kept negative (official MS code); the
# others give 0 and still count in the mean


def naive_binomial(S, Pk, Nk, alpha, beta, lam):
    out = []
    for i in range(len(S)):
        if not Pk[i] or not Nk[i]:
            out.append(0.0)
            continue
        out.append(sum(softplus(-alpha * (S[i][j] - lam)) for j in Pk[i]) / len(Pk[i])
                   + sum(softplus(beta * (S[i][j] - lam)) for j in Nk[i]) / len(Nk[i]))
    return out


def naive_raw(S, Pk, Nk, alpha, beta, lam):
    return [math.log1p(sum(math.exp(-alpha * (S[i][j] - lam)) for j in Pk[i])) / alpha
            + math.log1p(sum(math.exp(beta * (S[i][j] - lam)) for j in Nk[i])) / beta
            if Pk[i] and Nk[i] else 0.0 for i in range(len(S))]


def naive_uniform(S, Pk, Nk):
    return [sum(1 - S[i][j] for j in Pk[i]) + sum(1 + S[i][j] for j in Nk[i])
            if Pk[i] and Nk[i] else 0.0 for i in range(len(S))]


def reduce(per_anchor, reduction="mean"):
    return sum(per_anchor) / (len(per_anchor) if reduction == "mean" else 1)


def naive_osm_caa(x, y, centres, sigma, alpha, lam, attention, scale=1.0, r=None, ry=None,
                  mu=1.0, std=0.68, classifier_weight=1.0):
    def prob(v, lab):
        z = [scale * c for c in naive_cos([v], centres)[0]]
        return math.exp(z[lab]) / sum(math.exp(t) for t in z)

    def att(v, lab):
        p = prob(v, lab)
        if attention == "softmax":
            return p
        if attention == "none":
            return 1.0
        return math.exp(-0.5 * ((p - mu) / std) ** 2) / (std * math.sqrt(2 * math.pi))

    in_batch = r is None
    r, ry = (x, y) if in_batch else (r, ry)
    S = naive_cos(x, r)
    a = [att(v, int(lab)) for v, lab in zip(x, y)]
    ar = a if in_batch else [att(v, int(lab)) for v, lab in zip(r, ry)]
    P, N = naive_sets(y, None if in_batch else ry)
    num_p = den_p = num_n = den_n = 0.0
    for i in range(len(x)):
        for j in P[i]:
            d2 = 2 - 2 * S[i][j]
            w = math.exp(-d2 / sigma ** 2) * min(a[i], ar[j])
            num_p += w * d2
            den_p += w
        for j in N[i]:
            h = max(alpha - math.sqrt(max(2 - 2 * S[i][j], 0.0)), 0.0)
            w = h * min(a[i], ar[j])
            num_n += w * h * h
            den_n += w
    ce = -sum(math.log(prob(v, int(lab))) for v, lab in zip(x, y)) / len(x)
    return ((1 - lam) * (num_p / den_p if den_p > 0 else 0.0)
            + lam * (num_n / den_n if den_n > 0 else 0.0) + classifier_weight * ce)
