"""Predict-then-check and experiment exercises: the student commits to an answer (a choice, a
number, a set of pairs) before the cell that shows it, or writes what they expect from turning
a knob, and sees the expected direction after. The expected answers are computed with dmlkit
where they are numbers (:func:`dmlkit.miners.vthm`, :class:`dmlkit.memory.CrossBatchMemory`).
"""

from __future__ import annotations

import math

import torch

from .. import miners
from ..losses import build
from ..memory import CrossBatchMemory
from ..similarity import pair_masks
from .engine import Exercise

__all__ = ["EXERCISES", "VTHM_EXAMPLE"]

#: the 4 x 4 similarity matrix of :mod:`dmlkit.miners`' example (labels 0, 0, 1, 1)
VTHM_EXAMPLE = torch.tensor([[1.0, 0.9, 0.2, 0.85], [0.9, 1.0, 0.1, 0.3],
                             [0.2, 0.1, 1.0, 0.8], [0.85, 0.3, 0.8, 1.0]])


def _word(x) -> str:
    return str(x).strip().lower().replace("_", "-").replace(" ", "-").replace("semihard",
                                                                              "semi-hard")


def _judge_categories(answer):
    expected = ["hard", "semi-hard", "easy"]
    if isinstance(answer, str) or not hasattr(answer, "__len__") or len(answer) != 3:
        return "give a list of three words, one per negative, e.g. ['easy', 'easy', 'hard']"
    words = [_word(a) for a in answer]
    unknown = [w for w in words if w not in expected]
    if unknown:
        return f"{unknown[0]!r} is not a category: use 'easy', 'semi-hard' or 'hard'"
    right = sum(w == e for w, e in zip(words, expected))
    if right == 3:
        return None
    return (f"{right} of 3 right. Compare each d_an with d_ap (hard: the negative is closer) "
            "and with d_ap + m (easy: farther by at least the margin)")


def _vthm_expected() -> set[tuple[int, int]]:
    pos, neg = pair_masks(torch.tensor([0, 0, 1, 1]))
    _, neg_keep = miners.vthm(VTHM_EXAMPLE, pos, neg, 0.1)
    return {tuple(ij) for ij in torch.nonzero(neg_keep).tolist()}


def _pairs_of(answer) -> set[tuple[int, int]]:
    if isinstance(answer, torch.Tensor) and answer.dtype == torch.bool:
        return {tuple(ij) for ij in torch.nonzero(answer).tolist()}
    return {(int(i), int(j)) for i, j in answer}


def _judge_vthm(answer):
    try:
        got = _pairs_of(answer)
    except (TypeError, ValueError):
        return "give the kept negative pairs as a list of (i, j) tuples, e.g. [(0, 2), (2, 0)]"
    expected = _vthm_expected()
    if got == expected:
        return None
    missing, extra = len(expected - got), len(got - expected)
    return (f"{len(got & expected)} of your {len(got)} pairs are kept, {missing} kept pair(s) "
            f"missing, {extra} pair(s) that VTHM drops. For each anchor, find its hardest "
            "positive (the LEAST similar one) first; a negative is kept iff "
            "s_ij + 0.1 > that similarity. Both (i, j) and (j, i) are pairs")


def _judge_saturation(answer):
    word = _word(answer).replace("@", "@")
    if word in ("recall@1", "r@1", "recall-at-1", "recall"):
        return None
    if word in ("map@r", "map-at-r", "map", "both"):
        return ("MAP@R asks that ALL the R same-class items come first; does that hold when a "
                "class is split into far-apart modes? What does the SINGLE nearest neighbour "
                "of an image see?")
    return "answer 'recall@1', 'map@r' or 'both'"


def _judge_memory(answer):
    try:
        x = float(answer)
    except (TypeError, ValueError):
        return "give a number of GiB"
    if math.isclose(x, 16.0, rel_tol=0.03):
        return None
    if math.isclose(x, 65536 ** 2 * 4 / 1e9, rel_tol=0.03):
        return "that is in GB (10^9 bytes); a GiB is 2^30 bytes"
    if math.isclose(x, 32.0, rel_tol=0.03):
        return "that would be float64; float32 takes 4 bytes per entry"
    if math.isclose(x, 8.0, rel_tol=0.03):
        return "count every entry of the B x M matrix, both triangles (4 bytes each)"
    return "B x M entries times 4 bytes (float32), divided by 2^30 bytes per GiB"


def _xbm_expected():
    xbm = CrossBatchMemory(build("contrastive"), embedding_dim=2, memory_size=10)
    for _ in range(3):
        xbm.enqueue(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    return int(xbm.filled), int(xbm.pointer)


def _judge_xbm(answer):
    try:
        filled, pointer = (int(v) for v in answer)
    except (TypeError, ValueError):
        return "give the pair (filled, pointer), two ints"
    exp_filled, exp_pointer = _xbm_expected()
    if (filled, pointer) == (exp_filled, exp_pointer):
        return None
    if filled != exp_filled:
        return "filled counts the slots holding data: can it exceed memory_size?"
    return "the pointer is the next slot to write, and the ring wraps around (modulo 10)"


def _judge_contrastive_weights(answer):
    try:
        got = [float(v) for v in answer]
    except (TypeError, ValueError):
        return "give three numbers, one weight per negative pair"
    if len(got) != 3:
        return "give three numbers, one weight per negative pair"
    if all(math.isclose(g, e, abs_tol=1e-9) for g, e in zip(got, (0.0, 1.0, 1.0))):
        return None
    return ("the weight is dL/ds_ij of [s_ij - lam]_+ (sum reduction): what is the slope of a "
            "hinge below and above its corner?")


EXERCISES = [
    Exercise(
        name="triplet_categories", notebook="01", kind="predict", minutes=5,
        title="Easy, semi-hard or hard?",
        statement=(
            "An anchor a with d(a, p) = 0.5 to its positive and three negatives at d(a, n) = "
            "0.3, 0.6 and 0.8; margin m = 0.2. Predict the category of each of the three "
            "triplets (a, p, n): a list of 'easy', 'semi-hard' or 'hard'."),
        hints=["Hard: the negative is at most as far as the positive (d_an <= d_ap).",
               "Semi-hard: farther than the positive but within the margin "
               "(d_ap < d_an < d_ap + m); easy: d_an >= d_ap + m, zero loss."],
        judge=_judge_categories, expected=["hard", "semi-hard", "easy"]),
    Exercise(
        name="contrastive_weights", notebook="03", kind="predict", minutes=5,
        title="Which negative pairs does the contrastive loss weight?",
        statement=(
            "The contrastive loss (similarity form, sum reduction, lam = 0.5) of an anchor with "
            "three negative pairs of similarities 0.2, 0.6 and 0.9: predict the weight "
            "w_ij = dL/ds_ij of each (three numbers)."),
        hints=["A negative pair adds [s_ij - lam]_+.",
               "The derivative of a hinge is 0 below its corner and 1 above it."],
        judge=_judge_contrastive_weights, expected=[0.0, 1.0, 1.0]),
    Exercise(
        name="vthm_kept", notebook="04", kind="predict", minutes=10,
        title="Which negative pairs does VTHM keep at epsilon = 0.1?",
        statement=(
            "Labels [0, 0, 1, 1] and the similarity matrix VTHM_EXAMPLE "
            "(dmlkit.exercises.predictions.VTHM_EXAMPLE, rows [1, .9, .2, .85], "
            "[.9, 1, .1, .3], [.2, .1, 1, .8], [.85, .3, .8, 1]). Predict the negative pairs "
            "(i, j) that VTHM keeps at epsilon = 0.1, as a list of (i, j) tuples."),
        hints=["Each anchor has one positive here: its hardest positive is that one.",
               "Keep the negative (i, j) iff s_ij + 0.1 > s_i,positive; check both (i, j) and "
               "(j, i)."],
        judge=_judge_vthm, expected=sorted(_vthm_expected())),
    Exercise(
        name="epsilon_experiment", notebook="04", kind="experiment", minutes=10,
        title="Turn up VTHM's epsilon",
        statement=(
            "Re-run the mining cell with epsilon = 0.3 instead of 0.1. Before you do, write "
            "what you expect for the share of negative pairs kept, and why; then compare."),
        hints=["Which side of the inequality s_ij + epsilon > min_P s_ik does epsilon move?"],
        reveal=("more negatives are kept: a negative is kept when s_ij + epsilon exceeds the "
                "hardest positive, so a larger epsilon lowers the bar (neg_kept grows toward 1 "
                "and the mining weakens toward no mining); the positives kept grow too.")),
    Exercise(
        name="recall_saturates", notebook="08", kind="predict", minutes=5,
        title="Which metric stays at 1.0?",
        statement=(
            "Each class is three tight clumps; the clumps drift apart (the spread sweep "
            "below). Predict which metric stays at 1.0 all along: 'recall@1', 'map@r' or "
            "'both'."),
        hints=["Recall@1 looks at one neighbour per query; MAP@R at the first R.",
               "An image's nearest neighbour is in its own clump, whatever the spread."],
        judge=_judge_saturation, expected="recall@1", after="The sweep below shows it."),
    Exercise(
        name="dense_memory_gib", notebook="11", kind="predict", minutes=5,
        title="How big is a dense S?",
        statement=(
            "Predict the memory, in GiB, of ONE dense float32 similarity matrix S at "
            "B = M = 65,536 (a single buffer, not the loss's several)."),
        hints=["B x M entries of 4 bytes.", "1 GiB = 2^30 bytes; 65,536 = 2^16."],
        judge=_judge_memory, expected=16.0,
        after=("2^16 x 2^16 entries x 4 bytes = 2^34 bytes; the loss's other (B, M) buffers "
               "come on top, hence the tiles.")),
    Exercise(
        name="chunk_experiment", notebook="11", kind="experiment", minutes=10,
        title="Halve the tile side",
        statement=(
            "Re-run the sweep with CHUNK halved. Before you do, write what you expect for the "
            "tiled path's time, its peak memory and its values; then compare."),
        hints=["How many tiles does a B x B matrix have at tile side c? What does each hold?"],
        reveal=("expect the tiled path to get slower (four times as many tiles, each with its "
                "own Python-level steps and a smaller matrix product; your sweep shows whether "
                "it does at these sizes) while its peak memory "
                "goes down (O(chunk^2) per tile, plus the (B + M) x D inputs); the loss, the "
                "gradient and the weights do not change beyond rounding: the tiles are exact.")),
    Exercise(
        name="xbm_pointer", notebook="12", kind="predict", minutes=5,
        title="Where is the pointer?",
        statement=(
            "A cross-batch memory of 10 slots, empty at first, receives three batches of 4. "
            "Predict (filled, pointer) afterwards."),
        hints=["12 embeddings into 10 slots: the ring wraps.",
               "filled never exceeds the memory size; the pointer is the next slot to write."],
        judge=_judge_xbm, expected=(10, 2)),
]
