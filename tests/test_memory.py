"""Cross-batch memory (dmlkit.memory): step by step against a naive ring (a Python list,
concatenate, drop the self slot, per-pair loops) and against PML's CrossBatchMemory (value,
gradient and memory contents, the ring wrapping included) for contrastive, triplet and
multi-similarity with PML's miner; warm-up, weights, reset, checkpoints, dtype, errors."""

from __future__ import annotations

import math

import pytest
import torch
from naive import naive_cos, naive_raw, naive_vthm_sets
from optional_pml import pml_losses, pml_miners

from dmlkit import losses
from dmlkit.memory import CrossBatchMemory

D, B, MEMORY, STEPS = 5, 6, 16, 5     # 30 samples through 16 slots: the ring wraps twice


def batches(seed=0, steps=STEPS, classes=4):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(B, D, generator=g, dtype=torch.float64)
        y = torch.randint(0, classes, (B,), generator=g)
        y[1] = y[0]                                   # every batch has a positive pair
        yield x, y


# ----------------------------------------------------------------------------- naive memory
class NaiveRing:
    """A FIFO of (embedding, label) slots written at ``(pointer + k) % size``."""

    def __init__(self, size):
        self.size, self.slots, self.pointer = size, [None] * size, 0

    def push(self, x, y):
        mine = []
        for k in range(len(y)):
            slot = (self.pointer + k) % self.size
            self.slots[slot] = (x[k].detach().clone(), int(y[k]))
            mine.append(slot)
        self.pointer = (self.pointer + len(y)) % self.size
        return mine

    def contents(self):
        filled = [s for s in self.slots if s is not None]
        return [e for e, _ in filled], [lab for _, lab in filled]


def sets_without_self(y, mem_labels, mine):
    P = [[j for j, lab in enumerate(mem_labels) if lab == int(y[i]) and j != mine[i]]
         for i in range(len(y))]
    N = [[j for j, lab in enumerate(mem_labels) if lab != int(y[i])] for i in range(len(y))]
    return P, N


def naive_ms(S, P, N):
    return sum(naive_raw(S, *naive_vthm_sets(S, P, N, 0.1), 2.0, 50.0, 0.5)) / len(S)


def naive_contrastive(S, P, N, margin=0.5):
    d = [[math.sqrt(max(2 - 2 * s, 0.0)) for s in row] for row in S]
    pos = [d[i][j] for i in range(len(S)) for j in P[i] if d[i][j] > 0]
    neg = [margin - d[i][j] for i in range(len(S)) for j in N[i] if d[i][j] < margin]
    return sum(pos) / max(len(pos), 1) + sum(neg) / max(len(neg), 1)


def naive_triplet(S, P, N, margin=0.1):
    d = [[math.sqrt(max(2 - 2 * s, 0.0)) for s in row] for row in S]
    terms = [d[i][p] - d[i][n] + margin for i in range(len(S)) for p in P[i] for n in N[i]]
    active = [t for t in terms if t > 0]
    return sum(active) / max(len(active), 1)


CASES = {
    "contrastive": (lambda: losses.build("contrastive", margin=0.5, power=1,
                                         reduction="mean_nonzero"),
                    naive_contrastive,
                    lambda: (pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=0.5), None)),
    "triplet": (lambda: losses.build("triplet", margin=0.1), naive_triplet,
                lambda: (pml_losses.TripletMarginLoss(margin=0.1), None)),
    "multi_similarity": (lambda: losses.build("multi_similarity"), naive_ms,
                         lambda: (pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5),
                                  pml_miners.MultiSimilarityMiner(epsilon=0.1))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_equals_naive_ring_step_by_step(name):
    make, naive, _ = CASES[name]
    xbm, ring = CrossBatchMemory(make(), D, MEMORY), NaiveRing(MEMORY)
    for x, y in batches(1):
        got = xbm(x, y).item()
        mine = ring.push(x, y)
        mem_x, mem_y = ring.contents()
        S = naive_cos(x, mem_x)
        assert got == pytest.approx(naive(S, *sets_without_self(y, mem_y, mine)), abs=1e-10,
                                    rel=1e-10)
    assert int(xbm.filled) == MEMORY and int(xbm.pointer) == (STEPS * B) % MEMORY


@pytest.mark.parametrize("name", list(CASES))
def test_matches_pml_step_by_step(name):
    make, _, make_pml = CASES[name]
    ours = CrossBatchMemory(make(), D, MEMORY)
    pml_loss, miner = make_pml()
    theirs = pml_losses.CrossBatchMemory(pml_loss, D, memory_size=MEMORY, miner=miner)
    for step, (x, y) in enumerate(batches(2)):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        va, vb = ours(xa, y), theirs(xb, y)
        va.backward()
        vb.backward()
        assert va.item() > 0, f"step {step}: nothing to compare"
        assert va.item() == pytest.approx(vb.item(), abs=1e-10, rel=1e-10), f"step {step}"
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-10, rtol=1e-9)
        n = int(ours.filled)
        torch.testing.assert_close(ours.embeddings[:n], theirs.embedding_memory[:n])
        assert torch.equal(ours.labels[:n], theirs.label_memory[:n])


def test_miners_never_see_the_self_slot():
    # the query's only same-class sample in the memory is its own copy: no positive, so VTHM
    # keeps no pair and multi-similarity gives 0 (PML's miner would see the self pair)
    xbm = CrossBatchMemory(losses.build("multi_similarity"), D, MEMORY)
    x = torch.randn(4, D, dtype=torch.float64)
    value = xbm(x, torch.tensor([0, 1, 2, 3]))
    assert value.item() == 0.0
    batch = xbm.memory_batch(x, torch.tensor([0, 1, 2, 3]), torch.arange(4))
    assert not batch.pos.any() and batch.neg.sum().item() == 12
    assert batch.pos_slots[0].shape[1] == 0


def test_start_iteration_and_weights():
    base = losses.build("multi_similarity")
    xbm = CrossBatchMemory(base, D, MEMORY, start_iteration=2, memory_weight=2.0,
                           batch_weight=0.5)
    plain = CrossBatchMemory(losses.build("multi_similarity"), D, MEMORY)
    data = list(batches(3))
    for x, y in data[:2]:   # warm-up: the in-batch loss, nothing enqueued
        assert xbm(x, y).item() == pytest.approx(base(x, y).item(), rel=1e-12)
        assert int(xbm.filled) == 0
    for x, y in data[2:]:
        expected = 2.0 * plain(x, y) + 0.5 * base(x, y)
        assert xbm(x, y).item() == pytest.approx(expected.item(), rel=1e-12)
    assert int(xbm.iteration) == STEPS and int(xbm.filled) == min((STEPS - 2) * B, MEMORY)


def test_state_dict_reset_and_dtype():
    xbm = CrossBatchMemory(losses.build("triplet"), D, MEMORY)
    data = list(batches(4))
    for x, y in data[:3]:
        xbm(x, y)
    assert xbm.embeddings.dtype == torch.float64      # follows the embeddings
    state = {k: v.clone() for k, v in xbm.state_dict().items()}
    assert set(state) == {"embeddings", "labels", "pointer", "filled", "iteration"}
    fresh = CrossBatchMemory(losses.build("triplet"), D, MEMORY)
    fresh.load_state_dict(state)
    assert fresh.embeddings.dtype == torch.float64 and torch.equal(fresh.embeddings,
                                                                   xbm.embeddings)
    for x, y in data[3:]:
        assert fresh(x, y).item() == xbm(x, y).item()
    xbm.reset()
    assert int(xbm.filled) == int(xbm.pointer) == int(xbm.iteration) == 0
    assert not xbm.embeddings.any()
    half = CrossBatchMemory(losses.build("contrastive"), D, MEMORY)
    xh = torch.randn(B, D).half().requires_grad_(True)
    half(xh, torch.arange(B) % 2).backward()
    assert half.embeddings.dtype == torch.float32 and torch.isfinite(xh.grad.float()).all()


def test_gradient_reaches_the_queries_only():
    xbm = CrossBatchMemory(losses.build("multi_similarity"), D, MEMORY)
    for x, y in batches(5):
        x.requires_grad_(True)
        xbm(x, y).backward()
        assert x.grad is not None and x.grad.abs().max() > 0
        assert not xbm.embeddings.requires_grad


def test_bad_input_is_named():
    xbm = CrossBatchMemory(losses.build("contrastive"), D, 8)
    with pytest.raises(ValueError, match="embedding_dim=5"):
        xbm(torch.randn(4, 3), torch.arange(4))
    with pytest.raises(ValueError, match="larger than the memory"):
        xbm(torch.randn(9, D), torch.arange(9))
    with pytest.raises(ValueError, match="length"):
        xbm(torch.randn(4, D), torch.arange(3))
    with pytest.raises(ValueError, match="1-D"):
        xbm(torch.randn(4, D), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        xbm(torch.randn(4, D), torch.zeros(4))
    with pytest.raises(ValueError, match="memory_size"):
        CrossBatchMemory(losses.build("contrastive"), D, 0)
    with pytest.raises(ValueError, match="PairLoss"):
        CrossBatchMemory(torch.nn.MSELoss(), D, 8)
    with pytest.raises(ValueError, match="proxies"):
        CrossBatchMemory(losses.build("proxy_anchor", num_classes=3, embedding_dim=D), D, 8)
    with pytest.raises(ValueError, match="start_iteration"):
        CrossBatchMemory(losses.build("contrastive"), D, 8, start_iteration=-1)
    assert int(xbm.filled) == 0          # nothing was enqueued by the failed calls


TILED = ["multi_similarity", "contrastive", "triplet", "binomial_deviance", "lifted_structure",
         "generalized_lifted_structure", "npair", "vthm", "ddml", "angular"]


@pytest.mark.parametrize("name", TILED)
@pytest.mark.parametrize("chunk", [3, 7])
def test_tiled_memory_equals_dense_step_by_step(name, chunk):
    # the memory term in tiles (the own slot excluded through the tiles' positive slots)
    # equals the dense masks, value and gradient, the ring wrapping included
    dense = CrossBatchMemory(losses.build(name), D, MEMORY)
    tiled = CrossBatchMemory(losses.build(name, chunk_size=chunk), D, MEMORY)
    for step, (x, y) in enumerate(batches(3, classes=3)):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        va, vb = dense(xa, y), tiled(xb, y)
        va.backward()
        vb.backward()
        assert vb.item() == pytest.approx(va.item(), rel=1e-10, abs=1e-12), f"step {step}"
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-9, atol=1e-12)
    assert torch.equal(dense.embeddings, tiled.embeddings)


def test_tiled_exclude_is_checked():
    from dmlkit.losses.tiling import tiled_forward

    loss = losses.build("multi_similarity", chunk_size=4)
    x, y = next(batches(4))
    with pytest.raises(ValueError, match="query-vs-reference"):
        tiled_forward(loss, x, y, exclude=torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="exclude must be"):
        tiled_forward(loss, x, y, x, y, exclude=torch.zeros(B - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        tiled_forward(loss, x, y, x, y, exclude=torch.full((B,), B, dtype=torch.long))


def test_tiled_memory_with_wide_positive_rows():
    # few classes in a large memory: more positives per row than the tiles gather directly
    from dmlkit.losses import tiles

    g = torch.Generator().manual_seed(5)
    dense = CrossBatchMemory(losses.build("multi_similarity"), D, 300)
    tiled = CrossBatchMemory(losses.build("multi_similarity", chunk_size=16), D, 300)
    for _ in range(4):
        x = torch.randn(50, D, generator=g, dtype=torch.float64)
        y = torch.randint(0, 2, (50,), generator=g)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        va, vb = dense(xa, y), tiled(xb, y)
        va.backward()
        vb.backward()
        assert vb.item() == pytest.approx(va.item(), rel=1e-10)
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-9, atol=1e-12)
    assert int(tiled.filled) == 200 and int((tiled.labels[:200] == 0).sum()) > tiles.WIDE_SLOTS
