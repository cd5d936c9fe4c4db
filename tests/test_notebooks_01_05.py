"""Notebooks 01-05 at tiny scale (papermill parameters + nbval-lax), asserting on the numbers
each notebook records (notebooks/results/<stem>.json in a temporary folder).

Margins below were measured at these tiny parameters first and the thresholds set well below.
"""

import numpy as np
import pytest
from nbtest import run_tiny


TASK = dict(NUM_CLASSES=20, NUM_TEST_CLASSES=10, IMAGES_PER_CLASS=8, IMAGE_SIZE=16, STEPS=40)


def _beats_untrained(results, main, margin=0.05, median_margin=0.03):
    """The main loss (by ``margin``) and the median of all the losses a notebook trained (by
    ``median_margin``) beat the untrained network on the unseen classes in MAP@R. At tiny scale
    single variants (e.g. semi-hard mining) may learn slowly, so they are not asserted one by
    one. Measured at these parameters: main +0.07..+0.11, median +0.06..+0.09."""
    untrained = results["untrained_map_at_r"]
    scores = {k[len("map_at_r["):-1]: v for k, v in results.items() if k.startswith("map_at_r[")}
    assert main in scores, f"no MAP@R recorded for {main!r}: {sorted(scores)}"
    assert scores[main] > untrained + margin, (main, scores[main], untrained)
    assert float(np.median(list(scores.values()))) > untrained + median_margin, (scores, untrained)
    return scores


def test_01_contrastive_and_triplet(tmp_path):
    r = run_tiny("01_contrastive_and_triplet", {**TASK, "GRID": 9, "SEEDS": [0]}, tmp_path)
    _beats_untrained(r, "triplet (all)")
    assert 0.3 < r["triplets_kept_first"] <= 1.0
    assert r["triplets_kept_last"] < r["triplets_kept_first"]
    assert 0.0 < r["semihard_kept_mean"] < 0.5


def test_02_lifted_structure_and_npair(tmp_path):
    r = run_tiny("02_lifted_structure_and_npair",
                 {**TASK, "N_PAIRS": 10, "CANDIDATES": 16, "SEEDS": [0]}, tmp_path)
    scores = _beats_untrained(r, "N-pair-mc")
    assert set(scores) == {"triplet", "lifted structure", "(N+1)-tuplet", "N-pair-ovo",
                           "N-pair-mc"}
    # hard negative class mining picks batches with a larger N-pair loss for the same network
    assert r["hard_batch_loss"] > r["random_batch_loss"]
    assert r["map_at_r_hard_classes"] > r["untrained_map_at_r"]


def test_03_unified_weight_view(tmp_path):
    r = run_tiny("03_unified_weight_view", {**TASK, "SNAPSHOTS": 2, "CURVE_POINTS": 21},
                 tmp_path)
    assert r["theorem_losses"] == 20
    assert r["theorem_max_grad_diff"] < 1e-8
    assert r["closed_form_max_err"] < 1e-8
    assert r["batch_closed_form_err"] < 1e-8
    assert r["min_weight"] >= 0.0
    assert r["trained_map_at_r"] > r["untrained_map_at_r"] + 0.05
    assert r["neg_weighted_last"] < r["neg_weighted_first"]


def test_04_multi_similarity_ablation(tmp_path):
    r = run_tiny("04_multi_similarity_ablation", {**TASK, "SEEDS": [0]}, tmp_path)
    scores = _beats_untrained(r, "RAW+VTHM (MS)")
    assert len(scores) == 7
    # weighting without mining keeps every pair; mining keeps a strict subset
    for name in ("Binomial", "RAW"):
        assert r[f"pos_kept[{name}]"] == 1.0 and r[f"neg_kept[{name}]"] == 1.0
    for name in ("VTHM", "Binomial+VTHM", "RAW+SemiHard", "RAW+VTHM (MS)"):
        assert 0.0 < r[f"neg_kept[{name}]"] < 1.0
    # distance-weighted sampling: all positives, exactly one of the 28 negatives per anchor
    assert r["pos_kept[RAW+DW]"] == 1.0
    assert r["neg_kept[RAW+DW]"] == pytest.approx(1 / 28)


def test_05_soft_mining_and_attention(tmp_path):
    r = run_tiny("05_soft_mining_and_attention", {**TASK, "SEEDS": [0], "NOISE": 0.3},
                 tmp_path)
    # at this scale only the clean-label run learns clearly (+0.085 MAP@R measured); with 30 %
    # flipped labels and 40 steps OSM and OSM+CAA stay near the untrained network
    assert r["map_at_r[OSM+CAA, clean labels]"] > r["untrained_map_at_r"] + 0.05
    assert r["flipped"] == round(0.3 * 20 * 8)
    # class-aware attention: mislabelled samples get less attention than clean ones (measured
    # ratio 0.77 at this tiny scale, 0.23 at the default one; trained much longer on so few
    # images the classifier memorises the wrong labels and the attention of all goes to ~1)
    assert r["attention_flipped"] < 0.9 * r["attention_clean"]
