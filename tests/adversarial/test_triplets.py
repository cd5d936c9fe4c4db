"""dmlkit.adversarial.triplets: random triples and Sohn's N-pair pairing."""

from __future__ import annotations

import pytest
import torch
from feature_blobs import one_thread  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv


def test_sample_triplets_random():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])    # sample 8 is a singleton: no anchor
    g = torch.Generator().manual_seed(0)
    a, p, n = adv.sample_triplets(y, 2, g)
    assert a.tolist() == sorted(a.tolist())
    assert 8 not in a.tolist()
    assert set(a.tolist()) == set(range(8))
    assert all(a.tolist().count(i) == 2 for i in range(8))
    assert bool((y[a] == y[p]).all()) and bool((a != p).all()) and bool((y[a] != y[n]).all())
    a, p, n = adv.sample_triplets(y, None, g)
    per_anchor = [(y != y[i]).sum().item() for i in range(8)]
    assert [a.tolist().count(i) for i in range(8)] == per_anchor
    assert len(set(zip(a.tolist(), n.tolist()))) == len(a)  # every negative once
    e = adv.sample_triplets(torch.tensor([0, 1, 2]), 1, g)
    assert all(t.numel() == 0 for t in e)


def test_sample_triplets_npair_pairing():
    y = torch.tensor([2, 0, 2, 1, 0, 1, 2, 3])   # class 3 has one sample: not a pair
    a, p, n = adv.sample_triplets(y, scheme="npair")
    firsts, seconds = {2: 0, 0: 1, 1: 3}, {2: 2, 0: 4, 1: 5}
    assert len(a) == 3 * 2
    for i, j, k in zip(a.tolist(), p.tolist(), n.tolist()):
        assert i == firsts[y[i].item()] and j == seconds[y[i].item()]
        assert k in seconds.values() and y[k] != y[i]
    with pytest.raises(ValueError, match="scheme"):
        adv.sample_triplets(y, scheme="hardest")
