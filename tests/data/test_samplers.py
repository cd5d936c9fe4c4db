"""PK batch sampler and Sohn's hard negative class mining sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dmlkit import data


# ------------------------------------------------------------------------- PKSampler
def _balanced_labels(n_classes=12, per_class=8, seed=0):
    labels = np.repeat(np.arange(n_classes) * 3 + 5, per_class)  # non-contiguous ids
    return np.random.default_rng(seed).permutation(labels)


def test_pk_batches_have_p_classes_times_k_images():
    labels = _balanced_labels()
    sampler = data.PKSampler(labels, P=4, K=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(labels) // 16 == 6
    for batch in batches:
        assert len(batch) == 16 and len(set(batch)) == 16
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 4 and set(counts.values()) == {4}


def test_pk_covers_every_image_once_when_balanced():
    labels = _balanced_labels()
    sampler = data.PKSampler(labels, P=3, K=4, seed=2)
    seen = np.concatenate([np.asarray(b) for b in sampler])
    assert sorted(seen.tolist()) == list(range(len(labels)))


def test_pk_uneven_classes_cover_everything_possible():
    sizes = [9, 6, 5, 4, 4, 3, 2, 1]  # class 7 (one image) has no positive: skipped
    labels = np.repeat(np.arange(len(sizes)), sizes)
    sampler = data.PKSampler(labels, P=2, K=3, seed=0, drop_last=False)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    seen = set(np.concatenate([np.asarray(b) for b in batches]).tolist())
    assert 7 not in set(labels[list(seen)])
    for batch in batches[:-1]:
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 2 and set(counts.values()) == {3}
    # groups of K=3: 3+2+2+2+2+1+1 = 13 -> 6 full batches + one last batch of one class,
    # so every image of a usable class is seen (largest-first assembly leaves nothing out)
    usable = np.flatnonzero(np.isin(labels, np.arange(7)))
    assert len(batches) == 7 and seen == set(usable.tolist())
    dropped = data.PKSampler(labels, P=2, K=3, seed=0, drop_last=True)
    assert len(dropped) == 6 and all(len(b) == 6 for b in dropped)
    # small classes were drawn with replacement: class 6 (2 images) gives 3 indices, both
    # of its images and one repeat; a class with >= K images fills its last group with
    # other images of its own, so its K images in a batch are distinct
    for batch in batches:
        in6 = [i for i in batch if labels[i] == 6]
        assert len(in6) in (0, 3) and set(in6) <= set(np.flatnonzero(labels == 6).tolist())
        assert len(in6) == 0 or len(set(in6)) == 2
        for c in range(5):
            in_c = [i for i in batch if labels[i] == c]
            assert len(set(in_c)) == len(in_c)
    for _ in range(20):     # every epoch: class 6's group holds both of its images
        groups6 = [{i for i in b if labels[i] == 6} for b in sampler]
        assert [g for g in groups6 if g] == [set(np.flatnonzero(labels == 6).tolist())]


def test_pk_skip_small_classes():
    labels = np.repeat(np.arange(6), [5, 5, 5, 5, 2, 3])
    sampler = data.PKSampler(labels, P=2, K=4, small_classes="skip")
    used = {int(labels[i]) for b in sampler for i in b}
    assert used == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="usable classes"):
        data.PKSampler(labels, P=5, K=4, small_classes="skip")


def test_pk_epochs_are_reproducible_and_different():
    labels = _balanced_labels()
    a = data.PKSampler(labels, P=4, K=2, seed=7)
    b = data.PKSampler(labels, P=4, K=2, seed=7)
    e0, e1 = list(a), list(a)  # iterating moves to the next epoch
    assert e0 != e1
    assert list(b) == e0
    b.set_epoch(1)
    assert list(b) == e1
    c = data.PKSampler(labels, P=4, K=2, seed=8)
    assert list(c) != e0


def test_pk_breaks_ties_between_classes_at_random():
    # 12 classes of two groups (P=4, K=4): an epoch's first three batches split the classes
    # into three sets of four, every class tied on groups left, and so do its last three; a
    # random tie-break makes each split uniform, so two given classes share a batch in
    # Binomial(2 epochs, 3/11) of them. A tie-break by class order would put the same four
    # classes together every time (> 20 standard errors away).
    labels = _balanced_labels(12, 8)
    sampler = data.PKSampler(labels, P=4, K=4, seed=3)
    epochs = 100
    together = np.zeros((12, 12))
    for _ in range(epochs):
        for batch in sampler:
            cls = np.unique(labels[batch]) // 3 - 1   # ids 5, 8, ... -> 0..11
            together[np.ix_(cls, cls)] += 1
    mean, sd = 2 * epochs * 3 / 11, np.sqrt(2 * epochs * 3 / 11 * 8 / 11)
    off = together[~np.eye(12, dtype=bool)]
    assert (np.abs(off - mean) < 4.5 * sd).all(), (off.min(), off.max(), mean, sd)


def test_pk_as_dataloader_batch_sampler():
    labels = _balanced_labels(6, 4)
    ds = TensorDataset(torch.arange(len(labels)), torch.from_numpy(labels))
    loader = DataLoader(ds, batch_sampler=data.PKSampler(labels, P=3, K=2))
    got = list(loader)
    assert len(got) == len(loader) == 4
    for idx, y in got:
        assert torch.equal(y, torch.from_numpy(labels[idx.numpy()]))
        assert sorted(Counter(y.tolist()).values()) == [2, 2, 2]


def test_pk_bad_input():
    with pytest.raises(ValueError, match="P and K"):
        data.PKSampler([0, 0, 1, 1], P=0, K=2)
    with pytest.raises(ValueError, match="integers"):
        data.PKSampler([0.5, 1.0], P=1, K=2)
    with pytest.raises(ValueError, match="1-d"):
        data.PKSampler(np.zeros((2, 2), int), P=1, K=2)


# ----------------------------------------------------------- hard negative class mining
def _naive_greedy(anchors, positives, first, N):
    """Greedy selection with explicit loops over triplets (the definition)."""
    a, p = np.asarray(anchors, float), np.asarray(positives, float)
    selected = [first]
    while len(selected) < N:
        best, best_v = None, -np.inf
        for c in range(len(a)):
            if c in selected:
                continue
            v = -np.inf
            for s in selected:
                # anchor s, positive p_s, negative p_c ; anchor c, positive p_c, negative p_s
                v = max(v, a[s] @ p[c] - a[s] @ p[s], a[c] @ p[s] - a[c] @ p[c])
            if v > best_v:
                best, best_v = c, v
        selected.append(best)
    return selected


def test_select_hard_classes_constructed_example():
    # one representative per class on the unit circle; the class closest in angle to the
    # selected set violates the triplet constraint the most
    angles = np.deg2rad([0.0, 90.0, 10.0, 180.0, 30.0, 200.0])
    reps = np.stack([np.cos(angles), np.sin(angles)], 1)
    chosen = data.select_hard_classes(reps, reps, N=3, first=0)
    assert chosen.tolist() == [0, 2, 4]           # 10 deg from class 0, then 20 deg from 2
    chosen = data.select_hard_classes(reps, reps, N=4, first=3)
    assert chosen.tolist() == [3, 5, 1, 4]        # 180 -> 200 (20) -> 90 (90) -> 30 (60)


def test_select_hard_classes_matches_naive_loops():
    rng = np.random.default_rng(0)
    for _trial in range(5):
        a = rng.normal(size=(15, 4))
        p = a + 0.5 * rng.normal(size=(15, 4))
        first = int(rng.integers(15))
        got = data.select_hard_classes(a, p, N=7, first=first, rng=rng)
        assert got.tolist() == _naive_greedy(a, p, first, 7)


def test_select_hard_classes_breaks_ties_at_random():
    # every class violates equally against class 0 and against each other: the ordered pair
    # picked after class 0 is uniform over the 12 ordered pairs of classes 1-4 (each count
    # Binomial(1200, 1/12)); never picking one of the tied classes would move a count by
    # > 10 standard errors
    reps = np.eye(5)
    rng = np.random.default_rng(0)
    picks = Counter(tuple(data.select_hard_classes(reps, reps, 3, first=0, rng=rng).tolist())
                    for _ in range(1200))
    assert all(p[0] == 0 and len(set(p)) == 3 for p in picks)
    counts = np.array([picks[(0, a, b)] for a in range(1, 5) for b in range(1, 5) if a != b])
    assert counts.sum() == 1200
    sd = np.sqrt(1200 / 12 * 11 / 12)
    assert (np.abs(counts - 100) < 4.5 * sd).all(), counts


def test_hard_class_sampler_batches_and_mining():
    # 20 classes in 4 tight clusters of 5 (cluster k around direction k)
    n_cls, per = 20, 4
    labels = np.repeat(np.arange(n_cls) + 100, per)
    rng = np.random.default_rng(0)
    centres = np.eye(4)[np.arange(n_cls) // 5] * 5.0 + rng.normal(0, 0.3, (n_cls, 4))
    emb = centres[np.arange(n_cls).repeat(per)] + rng.normal(0, 0.05, (len(labels), 4))
    calls = []

    def embed_fn(idx):
        calls.append(np.asarray(idx))
        return torch.from_numpy(emb[idx]).float()

    sampler = data.HardNegativeClassSampler(labels, N=5, C=20, embed_fn=embed_fn, seed=3,
                                            num_batches=6)
    assert len(sampler) == 6
    for batch in sampler:
        assert len(batch) == 10
        pair_labels = labels[batch].reshape(5, 2)
        assert (pair_labels[:, 0] == pair_labels[:, 1]).all()        # (x_i, x_i+) pairs
        assert len(set(pair_labels[:, 0])) == 5                       # N distinct classes
        assert batch[0::2] != batch[1::2]
        # the hardest classes for the first pick are the other 4 classes of its cluster
        clusters = (pair_labels[:, 0] - 100) // 5
        assert len(set(clusters.tolist())) == 1
        # and it is exactly the greedy choice on the embeddings the sampler requested
        idx = calls[-1].reshape(20, 2)
        e = emb[idx]
        first = int(np.flatnonzero(labels[idx[:, 0]] == pair_labels[0, 0])[0])
        expect = _naive_greedy(e[:, 0], e[:, 1], first, 5)
        assert labels[idx[expect, 0]].tolist() == pair_labels[:, 0].tolist()
        assert sampler.last_classes.tolist() == pair_labels[:, 0].tolist()


def test_hard_class_sampler_table_update_and_random_start():
    labels = np.repeat(np.arange(8), 3)
    sampler = data.HardNegativeClassSampler(labels, N=4, C=6, num_batches=400, seed=1)
    counts = np.zeros(8)
    for batch in sampler:  # no embeddings yet: random classes, still valid pairs
        assert len(set(labels[batch])) == 4
        counts[np.unique(labels[batch])] += 1
    # uniform classes: each in Binomial(400, 1/2) batches (sd 10); leaving one class out or
    # favouring the first C = 6 would move a count by > 6 standard errors
    assert (np.abs(counts - 200) < 4.5 * 10).all(), counts
    close = np.zeros((len(labels), 8))
    close[:, 0] = 1.0
    close[labels == 5, 1] = 0.01  # classes 0..7 nearly identical except 5 a bit off
    sampler.update(torch.from_numpy(close))
    batch = sampler.next_batch(np.random.default_rng(0))
    assert len(batch) == 8
    with pytest.raises(ValueError, match=r"\(24, D\)"):
        sampler.update(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        sampler.update(np.full((24, 2), np.nan))
    with pytest.raises(ValueError, match="N <= C"):
        data.HardNegativeClassSampler(labels, N=9)


def test_hard_class_sampler_one_example_per_class():
    labels = np.repeat(np.arange(6), 2)
    emb = np.repeat(np.stack([np.cos(np.deg2rad([0, 90, 10, 180, 30, 200])),
                              np.sin(np.deg2rad([0, 90, 10, 180, 30, 200]))], 1), 2, axis=0)
    sampler = data.HardNegativeClassSampler(labels, N=3, C=6, embeddings=emb,
                                            examples_per_class=1, num_batches=20, seed=0)
    for batch in sampler:
        picked = labels[batch[0::2]].tolist()
        assert picked == data.select_hard_classes(emb[::2], emb[::2], 3, first=picked[0]
                                                  ).tolist()
