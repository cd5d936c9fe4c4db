"""dmlkit.adversarial.recorder: recorded triples and their hardness summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from feature_blobs import blobs, one_thread  # noqa: F401 (autouse fixture) (autouse fixture)

from dmlkit import adversarial as adv
from dmlkit import losses


def test_recorder_contents():
    x, y = blobs()
    rec = adv.NegativeRecorder(max_per_epoch=10, every=2)
    adv.fit_adversarial(x, y, "triplet", "daml+sp", epochs=5, warmup_epochs=1,
                        generator_epochs=0, embedding_dim=8, head_hidden=32,
                        generator_hidden=(32,), P=4, K=3, recorder=rec)
    arr = rec.arrays()
    assert sorted(set(arr["epoch"].tolist())) == [2, 4]        # joint epochs, every 2nd
    assert len(rec) == 20 and "synthetic_positive" in arr
    assert (arr["label"] != arr["negative_label"]).all()
    frame = rec.hardness_frame()
    import numpy as np
    d = np.linalg.norm(arr["anchor_emb"] - arr["synthetic_emb"], axis=1)
    np.testing.assert_allclose(frame.d_asyn, d, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(arr["anchor_emb"], axis=1), 1.0, rtol=1e-5)
    assert frame.margin.iloc[0] == pytest.approx(losses.build("triplet").margin)
    X, meta = rec.points("embedding", epoch=2)
    assert X.shape == (40, 8) and list(meta.kind.unique()) == list(rec.KINDS)
    with pytest.raises(ValueError, match="nothing recorded"):
        adv.NegativeRecorder().arrays()


def test_hardness_summary_against_manual():
    rng = np.random.default_rng(0)
    n = 50
    frame = pd.DataFrame({"epoch": np.repeat([3, 4], 25), "d_ap": rng.uniform(0, 1, n),
                          "d_an": rng.uniform(0, 2, n), "d_asyn": rng.uniform(0, 2, n),
                          "margin": 0.2})
    s = adv.hardness_summary(frame)
    assert s["epoch"].tolist() == [3, 4]
    for _, row in s.iterrows():
        f = frame[frame.epoch == row.epoch]
        assert row["n"] == 25
        assert row["d_asyn"] == pytest.approx(f.d_asyn.mean())
        assert row["harder"] == pytest.approx(np.mean(f.d_asyn < f.d_an))
        assert row["violating_real"] == pytest.approx(np.mean(f.d_an < f.d_ap + 0.2))
        assert row["violating_synthetic"] == pytest.approx(np.mean(f.d_asyn < f.d_ap + 0.2))
    total = adv.hardness_summary(frame, by=None)
    assert len(total) == 1 and total["d_an"].iloc[0] == pytest.approx(frame.d_an.mean())
    with pytest.raises(ValueError, match="d_asyn"):
        adv.hardness_summary(frame.drop(columns="d_asyn"))
