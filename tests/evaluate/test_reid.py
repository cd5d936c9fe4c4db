"""dmlkit.evaluate.reid (CMC, mAP) against brute force and Recall@K."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from embedding_fixtures import assert_dicts_close, clustered, one_thread  # noqa: F401

from dmlkit import evaluate as ev


def test_reid_metrics_match_brute_force():
    x, y = clustered(160, 6, 15, 1.2, seed=16)
    cams = np.random.default_rng(99).integers(0, 3, 160)  # independent of the labels
    q, ql, qc, g, gl, gc = x[:50], y[:50], cams[:50], x[50:], y[50:], cams[50:]
    got = ev.reid_metrics(q, ql, (g, gl), (1, 5, 20), query_cams=qc, gallery_cams=gc,
                          max_block=300)
    assert_dicts_close(got, naive.brute_force_metrics(
        q, ql, g, gl, metrics=("cmc", "map"), cmc_ranks=(1, 5, 20), query_cams=qc, gallery_cams=gc))
    # without cameras, CMC@k is Recall@k of the same query / gallery split
    plain = ev.reid_metrics(q, ql, (g, gl), (1, 5, 20))
    rec = ev.retrieval_metrics(q, ql, (1, 5, 20), gallery=(g, gl))
    for k in (1, 5, 20):
        assert plain[f"cmc@{k}"] == pytest.approx(rec[f"recall@{k}"])
    no_cam = np.arange(160)  # distinct cameras: no junk removed
    assert_dicts_close(plain, naive.brute_force_metrics(
        q, ql, g, gl, metrics=("cmc", "map"), cmc_ranks=(1, 5, 20), query_cams=no_cam[:50],
        gallery_cams=no_cam[50:]))
