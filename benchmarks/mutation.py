"""Mutation testing of the numeric core (``make mutation``; docs/development.md has the scores).

Each module (a name below: one or a few source files and *their own* fast tests, no notebook,
UI or training test) is run by mutmut 3 in its own copy of the last commit (``--worktree``: of
the working tree), ``build/mutation/<name>/`` (ignored: the checkout stays clean and the
``dmlkit`` that other processes import from it is never mutated). mutmut 3 was chosen over
mutmut 2 because it imports torch and the tests once and forks per mutant, running only the
tests that cover the mutated function: on a 2-core machine a pytest start alone costs 10-25 s,
which mutmut 2 pays for every mutant. Its tests run from the copied ``mutants/`` tree, which
works here because the tests import ``dmlkit`` by name (the copy comes first on ``sys.path``).

mutmut 3 does not mutate decorated functions other than static and class methods; the copy
therefore rewrites the top-level ``@torch.no_grad()``, ``@without_autocast`` and
``@MINERS.register(...)`` functions as ``f = decorator(f)`` after the module's last line (same
objects, same registry; in the copy only). Properties and cached properties stay unmutated.

    python benchmarks/mutation.py similarity retrieval     # or: make mutation MODULES="..."
    python benchmarks/mutation.py --list

Prints, per module, killed / survived / timeout / other and the score, writes
``build/mutation/<name>/report.json`` and the diffs of the survivors to
``build/mutation/<name>/survivors.diff``. Mutants reviewed as equivalent (no input can tell
them apart) are listed in ``EQUIVALENT`` with the reason and counted apart; those killed by a
test that cannot run under mutmut (checked by hand) in ``KILLED_OUTSIDE``, counted as killed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "mutation"

# name -> (mutated source files, the module's own fast tests)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "similarity": (["dmlkit/similarity.py"],
                   ["tests/test_similarity.py", "tests/test_similarity_edges.py"]),
    "retrieval": (["dmlkit/evaluate/retrieval.py"],
                  ["tests/evaluate/test_retrieval.py", "tests/evaluate/test_retrieval_edges.py",
                   "tests/evaluate/test_retrieval_ties.py",
                   "tests/evaluate/test_retrieval_options.py"]),
    "clustering": (["dmlkit/evaluate/clustering.py"],
                   ["tests/evaluate/test_clustering.py",
                    "tests/evaluate/test_clustering_seeding.py",
                    "tests/evaluate/test_clustering_options.py"]),
    "miners": (["dmlkit/miners.py"],
               ["tests/test_miners.py", "tests/test_miners_one_sided_rows.py",
                "tests/test_miners_distance_weighted_options.py",
                "tests/test_miners_input_checks.py"]),
    "tiling": (["dmlkit/losses/tiles.py", "dmlkit/losses/tiling.py",
                "dmlkit/losses/kept_pair_tiles.py", "dmlkit/losses/_fused.py"],
               ["tests/losses/test_tiling.py", "tests/losses/test_tiling_properties.py",
                "tests/losses/test_fused.py", "tests/losses/test_tiling_edges.py"]),
    # (test_<name>_edges.py: the tests added for the mutants, _ties.py: the tie rules, where
    # they exist)
    **{name: ([f"dmlkit/losses/{name}.py"],
              [f"tests/losses/test_{name}{part}.py" for part in ("", "_edges", "_ties")])
       for name in ("base", "contrastive", "triplet", "multi_similarity", "lifted", "npair",
                    "binomial", "proxy", "osm_caa", "angular", "ddml")},
}

# mutant name -> the test outside the module's run that kills it, checked by applying the
# mutant to the source by hand and running that test (it fails on each)
KILLED_OUTSIDE: dict[str, str] = {
    **{f"dmlkit.evaluate.retrieval.x_retrieval_metrics__mutmut_{n}":
       "tests/evaluate/test_retrieval_warning_location.py: the warning's stacklevel (dropped "
       "or 4 instead of 3); mutmut's trampoline adds frames, so under mutmut the warning "
       "points elsewhere whatever the stacklevel" for n in (112, 119)},
}

# mutant name -> why no input can kill it (reviewed by hand; docs/development.md lists them)
EQUIVALENT: dict[str, str] = {
    "dmlkit.similarity.x_similarity_matrix__mutmut_10":
        "F.normalize(q, dim=1) -> F.normalize(q): dim=1 is F.normalize's default",
    "dmlkit.similarity.x_similarity_matrix__mutmut_27":
        "F.normalize(r, dim=1) -> F.normalize(r): dim=1 is F.normalize's default",
    "dmlkit.similarity.x_similarity_matrix__mutmut_18":
        "a half reference is no longer promoted to float32 first: the next line's "
        "r.to(q.dtype) converts it to float32 / float64 anyway, exactly (every half value is "
        "a float32 value)",
    "dmlkit.similarity.x_zero_where_clamped___mutmut_2":
        "the guard S.max() > 1 -> >= 1: when the maximum is exactly 1 the masked_fill_(S > 1) "
        "it lets through changes nothing (a speed path only)",
    **{f"dmlkit.miners.x_hard__mutmut_{n}":
       "the dtype of the 0-dim inf tensor: a 0-dim operand does not change torch.where's "
       "result dtype (S's), and inf is inf in every float dtype" for n in (10, 13)},
    **{f"dmlkit.miners.x_hard__mutmut_{n}":
       "device=S.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has (benchmarks/gpu.py runs the miners on CUDA)" for n in (11, 14, 26, 28)},
    "dmlkit.miners.x_hard__mutmut_17": 'float("inf") -> float("INF"): the same float',
    **{f"dmlkit.miners.x_semihard__mutmut_{n}":
       "the dtype of the 0-dim inf tensor: a 0-dim operand does not change torch.where's "
       "result dtype (S's), and inf is inf in every float dtype" for n in (11, 14)},
    **{f"dmlkit.miners.x_semihard__mutmut_{n}":
       "device=S.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has" for n in (12, 15)},
    "dmlkit.miners.x_semihard__mutmut_18": 'float("inf") -> float("INF"): the same float',
    "dmlkit.miners.x_semihard__mutmut_53":
        "idx < M -> idx <= M: idx = M needs s_in >= every entry of the row's sorted positives, "
        "whose last entry is +inf unless every column is a positive, and then the row has no "
        "negative to keep",
    "dmlkit.miners.x_semihard__mutmut_67":
        "the non-negatives padded with +inf instead of -inf before the search for the last "
        "negative below s_ip: either padding is never that negative (+inf sorts after every "
        "s_ip, -inf gives prev = -inf, which keeps nothing, as no negative does)",
    **{f"dmlkit.miners.x__ordered_keys__mutmut_{n}":
       "a right shift by the width + 1 (or 9 x the bytes - 1) instead of width - 1: torch "
       "saturates a shift past the width to the sign fill, the same 0 / -1 as the original "
       "shift" for n in (18, 20)},
    "dmlkit.miners.x_vthm_negative_threshold__mutmut_12":
        "q = 1 instead of 0 where p is not finite: those entries return p itself "
        "(torch.where(finite, ..., p)), whatever q was",
    **{f"dmlkit.miners.x_semihard__mutmut_{n}":
       "idx = 0 (or -1) treated as no negative below s_ip: for a positive p the row's "
       "non-negatives, p itself included, are -inf at the front of the sorted row, so "
       "idx >= 0 and position 0 is -inf; only positives use prev" for n in (94, 95, 96)},
    "dmlkit.evaluate.retrieval.x__row_count__mutmut_25":
        "the block sums in int64 instead of int16: the same counts (int16 is the fast path)",
    **{f"dmlkit.miners.x_vthm_negative_threshold__mutmut_{n}":
       "a wider bisection bracket (room + 1, hi from q + epsilon) or more bisection steps: "
       "the bracket still has lo passing and hi failing, and the bisection ends on the same "
       "float" for n in (17, 24, 27)},
    **{f"dmlkit.evaluate.retrieval.x__first_rank_by_count__mutmut_{n}":
       "more rows through the tie correction (n_eq >= 1): the correction adds the tied "
       "items of lower index, 0 for a row without ties" for n in (52,)},
    "dmlkit.miners.x_semihard__mutmut_76":
        "searchsorted(..., right=False) -> searchsorted(...): right=False is the default",
    "dmlkit.evaluate.retrieval.x__row_count__mutmut_23":
        "the block sums in int64 instead of int16: the same counts (int16 is the fast path)",
    **{f"dmlkit.evaluate.retrieval.x__row_count__mutmut_{n}":
       "device=mask.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has" for n in (6, 9)},
    **{f"dmlkit.miners.x_distance_weighted__mutmut_{n}":
       "the device of the uniform draws (.to(S.device) or the generator's device dropped): "
       "the same on CPU, the only device the test suite has" for n in (29, 33, 37)},
    **{f"dmlkit.miners.x_distance_weighted__mutmut_{n}":
       "the uniforms drawn in float32 instead of float64: the same Gumbel-top-k law up to "
       "float32's 2^-24 grid; a seed then draws other (equally valid) samples, which only a "
       "test hard-coding today's draws could tell" for n in (32, 36)},
    **{f"dmlkit.evaluate.retrieval.x__positives__mutmut_{n}":
       "device=order.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has" for n in (11, 15, 21, 23)},
    **{f"dmlkit.evaluate.retrieval.x__positives__mutmut_{n}":
       "the fill value of a (c, 0) tensor, which has no element" for n in (17, 18)},
    **{f"dmlkit.evaluate.retrieval.x__positives__mutmut_{n}":
       "dtype=torch.long dropped from torch.full(..., -1): an int fill value gives int64 "
       "anyway" for n in (10, 14)},
    **{f"dmlkit.miners.x_vthm__mutmut_{n}":
       "the dtype of the 0-dim inf tensor: a 0-dim operand does not change torch.where's "
       "result dtype (S's), and inf is inf in every float dtype" for n in (11, 14)},
    **{f"dmlkit.miners.x_vthm__mutmut_{n}":
       "device=S.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has" for n in (12, 15)},
    "dmlkit.miners.x_vthm__mutmut_18": 'float("inf") -> float("INF"): the same float',
    "dmlkit.miners.x_distance_weighted_probabilities__mutmut_79":
        'float("-inf") -> float("-INF"): the same float',
    "dmlkit.evaluate.retrieval.x__class_index__mutmut_1":
        "the device it returns is None: its one caller discards it",
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "device=device dropped or None (a CPU tensor): the same on CPU, the only device the "
       "test suite has" for n in (8, 20, 24, 30, 33, 37, 40, 50, 53, 57, 60, 66, 69, 75, 77,
                                  87, 89, 106, 109)},
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "dtype=torch.long dropped (or None): torch.full with an int fill, torch.tensor of a "
       "list of ints give int64 anyway (k_cols is empty, float, only without precision_ks, "
       "when it is not used)" for n in (19, 23, 56, 59)},
    "dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_26":
        "first_rank filled with -2 instead of -1: a negative rank reads as 'no positive' "
        "(first_rank >= 0 is tested), and every counted row is overwritten",
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "max(precision_ks, default=None or 1): without precision_ks precision_k only enters "
       "depth = max(..., precision_k or 0, 16), which it cannot raise" for n in (46,)},
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "prec_hits in float32 instead of int32: hit counts are exact in float32 below 2^24 "
       "(a precision@K with K >= 2^24 would be needed)" for n in (49, 52)},
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "near in float32 instead of bool: 0 / 1 give the same any(), mean() and nonzero()"
       for n in (65, 68)},
    "dmlkit.evaluate.retrieval.x_recall_at_k__mutmut_5":
        "r_metrics=None instead of False: only its truth value is used",
    **{f"dmlkit.evaluate.clustering.x__kmeans_faiss__mutmut_{n}":
       "faiss on the GPU or not (the gpu flag, its test past x.is_cuda, gpu=None or dropped): "
       "the same on CPU inputs with a CPU faiss, all the test suite has"
       for n in (*range(1, 12), 24, 31, 78, 85)},
    **{f"dmlkit.evaluate.clustering.x__kmeans_faiss__mutmut_{n}":
       "verbose=True: faiss prints its progress, the result is the same" for n in (34, 92)},
    "dmlkit.evaluate.clustering.x__kmeans_faiss__mutmut_41":
        "index.search(data, 2) instead of 1 (init='random', where only the assignment is "
        "read): column 0 is still the nearest centre",
    "dmlkit.evaluate.clustering.x__kmeans_faiss__mutmut_106":
        "dist.astype(None) instead of float64: numpy's astype(None) is float64",
    "dmlkit.evaluate.clustering.x__kmeans_faiss__mutmut_59":
        "init=None passed to _initial_centres: there init is 'k-means++' or an array (given "
        "is then used), and None takes the k-means++ branch too",
    "dmlkit.evaluate.clustering.x__kmeans_faiss__mutmut_83":
        "nredo=1 dropped: 1 is faiss.Kmeans's default",
    "dmlkit.evaluate.clustering.x_kmeans_plusplus__mutmut_6":
        'check_embeddings(embeddings) without "embeddings": that is its default name',
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "1 instead of 0 in depth = max(..., 16): the first-hit depth 16 is larger anyway"
       for n in (130, 132)},
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "+1 or -2 instead of -1 for a query with no positive in its top list: each such row "
       "is overwritten (by the count when it has a positive, by -1 when it has none)"
       for n in (204, 205)},
    "dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_128":
        "the top list as deep as R also without r_metrics: each row's near-tie scan still "
        "reads its own max(K, 16) items, a first hit is the same rank from the longer list "
        "as from the count, and nothing else reads the extra items",
    "dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_163":
        "R in each row's scan depth also without r_metrics: without r_metrics the list "
        "(depth = max(K, 16)) ends where every row's own depth does, so the scan reads the "
        "same items",
    "dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_95":
        "one query per block (range's step dropped): the blocks only bound memory; each "
        "query's ranking and near-tie scan (its own max(R, K, 16) items) are its row's alone",
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "the query itself not removed from its positives (self mode) for the rank count: its "
       "masked entry, -inf, is below every other positive's similarity, which is finite "
       "(query_database), so it is never the best positive nor as similar as one"
       for n in (215, 221)},
    "dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_238":
        "-2 instead of -1 for a query without positives: a negative rank reads as 'no "
        "positive' (first_rank >= 0 is tested)",
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "the cumulative hits without dtype=int32: torch sums int32 in int64, the same counts "
       "stored in the int32 prec_hits" for n in (242, 245)},
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "device=device dropped or None (a CPU tensor): the same on CPU, the only device the "
       "test suite has" for n in (172, 175, 250, 252, 265, 269)},
    **{f"dmlkit.evaluate.retrieval.x__retrieval_core__mutmut_{n}":
       "ranks as int64 instead of float64: float64 / int64 is the same true division"
       for n in (266, 270)},
    "dmlkit.evaluate.retrieval.x__average__mutmut_6": 'float("nan") -> float("NAN"): the same',
    **{f"dmlkit.evaluate.retrieval.x__average__mutmut_{n}":
       "device=values.device dropped or None (a CPU tensor): the same on CPU, the only device "
       "the test suite has" for n in (20, 23)},
    **{f"dmlkit.evaluate.clustering.x__assign__mutmut_{n}":
       "device=x.device dropped or None (a CPU tensor): the same on CPU, the only device the "
       "test suite has" for n in (8, 11, 16, 19)},
    **{f"dmlkit.evaluate.clustering.x__assign__mutmut_{n}":
       "blocks that overlap (a step of 1, or each block running to the last point): every row "
       "is still written, last by a block that computes it exactly" for n in (26, 29)},
    **{f"dmlkit.evaluate.clustering.x__rows__mutmut_{n}":
       "blocks that overlap or are smaller (a step of 1, each block running to the last "
       "point, blocks of at most D points): every column is still written exactly"
       for n in (18, 24, 27)},
    **{f"dmlkit.evaluate.clustering.x__rows__mutmut_{n}":
       "device=x.device dropped or None (a CPU tensor): the same on CPU, the only device the "
       "test suite has" for n in (5, 9)},
    "dmlkit.evaluate.retrieval.x_retrieval_metrics__mutmut_76":
        "capped also for an empty database (n_db >= 0): it is {0}, _retrieval_core returns "
        "before using it and precision@K is NaN (kk = 0) either way",
    **{f"dmlkit.evaluate.clustering.x__greedy_seeding__mutmut_{n}":
       "dev = None, device=dev dropped or .to(None) (the CPU): the same on CPU, the only "
       "device the test suite has" for n in (3, 34, 36, 85, 93)},
    **{f"dmlkit.evaluate.clustering.x__greedy_seeding__mutmut_{n}":
       "pos = None or 1 before the first pool: prop is None then, so the pool is drawn and "
       "pos set to 0 before pos is read" for n in (42, 43)},
    "dmlkit.evaluate.clustering.x__greedy_seeding__mutmut_106":
        "searchsorted clamped at n + 1 instead of n - 1: draw = u * total with u < 1 is at "
        "most cum[-1], so the index never exceeds n - 1",
    **{f"dmlkit.evaluate.clustering.x__kmeans_faiss__mutmut_{n}":
       "verbose=False dropped: False is faiss.Kmeans's default" for n in (32, 86)},
    **{f"dmlkit.evaluate.clustering.x__contingency__mutmut_{n}":
       "cluster / class sizes as float64 instead of int64 (astype(None)): nmi uses them as "
       "floats, and pair_f1's c * (c - 1) // 2 is exact in float64 below 2^26 items"
       for n in (37, 40)},
    **{f"dmlkit.evaluate.clustering.x_nmi__mutmut_{n}":
       "astype(None) instead of astype(np.float64): numpy's None dtype is float64"
       for n in (22, 32)},
    **{f"dmlkit.evaluate.clustering.x_nmi__mutmut_{n}":
       "the denom > 0 guard: denom = 0 needs both partitions to be one block, which returns "
       "1.0 before" for n in (38, 46, 48)},
    "dmlkit.evaluate.clustering.x__contingency__mutmut_53":
        "the overlaps as float64 instead of int64 (astype(None)): nmi casts them to float64, "
        "and pair_f1's c * (c - 1) // 2 is exact in float64 below 2^26 items",
    **{f"dmlkit.evaluate.clustering.x__given_centres__mutmut_{n}":
       "device=x.device dropped or None (CPU centres): the same on CPU, the only device the "
       "test suite has" for n in (13, 15)},
    **{f"dmlkit.evaluate.clustering.x__initial_centres__mutmut_{n}":
       ".to(None) instead of .to(x.device) (CPU indices): the same on CPU, the only device "
       "the test suite has" for n in (6, 13)},
    "dmlkit.evaluate.clustering.x_pair_f1__mutmut_7":
        "c * (c - 1) / 2 instead of // 2: c * (c - 1) is even, the same sum as an int",
    "dmlkit.evaluate.retrieval.x__ordered_topk__mutmut_81":
        "torch.sort(..., dim=1) -> torch.sort(...): dim=-1 is the default, the same dimension "
        "of the 2-D S[rows]",
    "dmlkit.evaluate.retrieval.x_retrieval_metrics__mutmut_155":
        "g64_emb.to(None) instead of .to(q64.device): the same on CPU, the only device the test "
        "suite has",
    "dmlkit.evaluate.retrieval.x_retrieval_metrics__mutmut_192":
        'float("nan") -> float("NAN"): the same float',
    "dmlkit.evaluate.clustering.x_default_trials__mutmut_20":
        "max(n * k, 2) instead of max(n * k, 1): n * k >= 1, and at n * k = 1 (K = 1) both "
        "give min(2 + ln 1, ...) = 2",
    **{f"dmlkit.evaluate.clustering.x__fill_uniform__mutmut_{n}":
       "dtype=np.int64 dropped: chosen is a non-empty list of Python ints, int64 anyway"
       for n in (8, 10)},
    **{f"dmlkit.evaluate.retrieval.x__class_index__mutmut_{n}":
       "argsort without stable=True: the order of the items within a class changes, and every "
       "use of the positive lists (a min, a gather, a mask) is independent of that order"
       for n in (6, 7)},
    **{f"dmlkit.evaluate.retrieval.x__ordered_topk__mutmut_{n}":
       "the k == 0 branch (and c, used only there): k = depth >= 1 whenever the database is "
       "not empty, and an empty database returns before any call" for n in range(1, 12)
       if n not in (3, 4)},
    **{f"dmlkit.evaluate.retrieval.x__ordered_topk__mutmut_{n}":
       "an argument that restates the default dropped: dim=1 of a 2-D tensor (topk, sort), "
       "largest=True, sorted=True" for n in (27, 28, 29, 37, 53)},
    "dmlkit.evaluate.retrieval.x__ordered_topk__mutmut_32":
        "topk(sorted=False): the next lines sort the probed items by index, then stably by "
        "value, so topk's own order is never used",
    "dmlkit.evaluate.retrieval.x__ordered_topk__mutmut_18":
        "probing k + 2 instead of k + 1 items: the tie test compares items k and k + 1 "
        "(positions k - 1 and k) in the same ordered list",
    "dmlkit.miners.x_distance_weighted__mutmut_39":
        'device="cpu" also with a generator: the same on CPU, the only device the test suite has',
    "dmlkit.miners.x_distance_weighted__mutmut_48":
        "no lower clamp of u: torch.rand gives u = 0 with probability 2^-53 per draw (the clamp "
        "guards that event only)",
    **{f"dmlkit.miners.x_distance_weighted__mutmut_{n}":
       "no upper clamp of u: torch.rand's float64 values are at most 1 - 2^-53, which is "
       "1.0 - 1e-16 as rounded, so the clamp never changes a value" for n in (49, 51)},
    **{f"dmlkit.miners.x_distance_weighted__mutmut_{n}":
       "an upper clamp of u at 1 + 1e-16 or 2 - 1e-16 instead: torch.rand's values are below "
       "1, so neither clamp changes a value" for n in (53, 54)},
    "dmlkit.miners.x_distance_weighted__mutmut_70":
        "keys.topk(k, dim=1) -> keys.topk(k): dim=-1 is topk's default, the same dimension of "
        "the 2-D keys",
    # dmlkit.losses.tiling, tiles, kept_pair_tiles, _fused
    **{f"dmlkit.losses.tiling.x_{f}__mutmut_{n}":
       "the default tile side 1024 -> 1025: a tile size (every caller in the library passes "
       "its own); tiles of any side give the same result"
       for f, n in (("tiled_pair_grad", 1),)},
    **{f"dmlkit.losses.tiling.x_tiled_pair_grad__mutmut_{n}":
       "the tiles of a masked_tiles formulation left unmasked: Tile.negatives_only then "
       "writes the same -inf into a copy (the same negatives)" for n in (39, 44)},
    **{f"dmlkit.losses.tiling.x_tiled_pair_grad__mutmut_{n}":
       ".to(G.dtype) -> .to(None) (a no-op): the formulations' gradients are in the dtype of "
       "S already (the state is in ctx.dtype, q's)" for n in (70, 90)},
    **{f"dmlkit.losses.tiling.x_{f}__mutmut_{n}":
       "the tiles of a masked_tiles formulation left unmasked (masked=None or the default "
       "False): Tile.negatives_only then writes the same -inf into a copy"
       for f, n in (("_symmetric_backward", 21), ("_run_passes", 30), ("_run_passes", 36))},
    "dmlkit.losses.tiling.x__symmetric_backward__mutmut_27":
        "the workspace passed as masked (an empty dict: falsy, never filled, as the tiles get "
        "workspace=None): unmasked tiles with fresh scratch tensors, the same values",
    **{f"dmlkit.losses.tiling.x_{f}__mutmut_{n}":
       "workspace=None: every tile allocates its scratch tensors afresh instead of reusing "
       "the sweep's (Tile.buffer), the same values"
       for f, n in (("_symmetric_backward", 22), ("_symmetric_backward", 28))},
    **{f"dmlkit.losses.tiling.x__slot_rows__mutmut_{n}":
       "the rows per block of the (rows, w, D) slot gathers (at least 2, 5 instead of 4 "
       "tiles' worth, or a width * dim of at least 2): a block size, each row's products "
       "are the same" for n in (5, 9, 14)},
    "dmlkit.losses.tiling.xǁ_TileCacheǁ_slab_view__mutmut_17":
        "_SLABS.pop(None, None) instead of popping the dtype's smaller slab: the next line "
        "assigns the new slab to that key anyway (the old one is freed after, not before)",
    "dmlkit.losses.tiling.xǁ_TileCacheǁproduct__mutmut_22":
        "torch.mm(a, b.t(), out=out) also where out is None (no slab: another live cache "
        "holds it): out=None is mm's default, the same product as a @ b.t()",
    **{f"dmlkit.losses.tiling.x_{f}__mutmut_{n}":
       ".to(dtype) -> .to(None) (a no-op): the formulations' slot gradients are in the "
       "dtype of S and of the references already (the state is in ctx.dtype, q's)"
       for f, n in (("_apply_slot_grads", 12), ("_tile_grad", 18))},
    **{f"dmlkit.losses.tiling.x__split_slot_grads__mutmut_{n}":
       "the positive-slot gradients of wide rows left as (B, w) pairs (index None or the "
       "valid mask, never the slots' index) or narrow rows' sent through the tiles (wide "
       "negated): both routes add the same dL/ds_ip r_p to dq_i and q_i to dr_p, the tiles' "
       "only saving a (B, w, D) gather" for n in (1, 2, 3)},
    "dmlkit.losses.tiling.x__pair_grad_into__mutmut_4":
        "break instead of continue after a pair list of width 0: every formulation's "
        "pair_grads returns at most one (index, G), so either ends the loop",
    "dmlkit.losses.tiling.x__pair_grad_into__mutmut_19":
        ".to(q.dtype) -> .to(None) (a no-op): the pair gradients are in q's dtype already "
        "(the state is in ctx.dtype)",
    "dmlkit.losses.tiling.x__pair_grad_into__mutmut_29":
        'einsum("RK,RKD->RD", ...): the same subscripts in capitals',
    "dmlkit.losses.tiling.xǁ_TiledPairLossǁbackward__mutmut_16":
        "a zero dr also for references that need no gradient: autograd drops the gradient "
        "of an input that does not require one (the result is the same)",
    **{f"dmlkit.losses.tiling.xǁ_TiledPairLossǁbackward__mutmut_{n}":
       "the backward's query-vs-reference tiles of a masked_tiles formulation left unmasked "
       "(masked=None or the default False): Tile.negatives_only then writes the same -inf "
       "into a copy" for n in (48, 54)},
    **{f"dmlkit.losses.tiling.x__slot_similarities__mutmut_{n}":
       "device=block.device dropped from the eye mask (a CPU tensor): the same on CPU, the "
       "only device the test suite has" for n in (23, 26)},
    "dmlkit.losses.tiling.x__symmetric_backward__mutmut_65":
        "G = G.add_(Gt) also where G is None: G and Gt are None together, as every "
        "formulation's tile_grad returns None on a whole-batch condition (no term), never "
        "for one tile and not its mirror",
    # dmlkit.losses.base
    **{f"dmlkit.losses.base.x_positive_slots__mutmut_{n}":
       "device=mask.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has" for n in (22, 24, 29, 33, 38, 40)},
    **{f"dmlkit.losses.base.x__slots_from_labels__mutmut_{n}":
       "device=labels.device dropped (a CPU tensor): the same on CPU, the only device the "
       "test suite has" for n in (29, 31, 56, 58)},
    **{f"dmlkit.losses.base.xǁPairLossǁtiled_chunk__mutmut_{n}":
       "B or M passed to resolve_chunk_size as None: it reads them only for its default "
       "dense_elements, which tiled_chunk always passes" for n in (3, 4)},
    "dmlkit.losses.base.xǁPairBatchǁsquared_distances__mutmut_14":
        "squared_distances(q, r) instead of (q, None) in-batch, where r is q: the same "
        "matrix",
    "dmlkit.losses.base.x_make_batch__mutmut_18":
        "similarity_matrix(emb, emb) instead of (emb, None) in-batch: the same Gram matrix "
        "and gradient (the None form is the symmetric speed path)",
    **{f"dmlkit.losses.base.x_make_batch__mutmut_{n}":
       "label_masks False (or None, or the default False): the batch reads its (label) masks "
       "instead of its labels, the same slots, counts and fills (a speed path; test_base "
       "checks both views equal)" for n in (36, 46, 47)},
    **{f"dmlkit.losses.base.x_check_batch_inputs__mutmut_{n}":
       "device=emb.device dropped from check_labels (CPU tensors): the same on CPU, the only "
       "device the test suite has" for n in (25, 29)},
    **{f"dmlkit.losses.base.x__slots_from_labels__mutmut_{n}":
       "the width of an empty label vector: label masks come from make_batch only, which "
       "rejects an empty batch or reference set" for n in (24, 26)},
    **{f"dmlkit.losses.base.x__left_align__mutmut_{n}":
       "the width when valid has no element: in-batch every row counts its own label, so "
       "valid is (B >= 1, w >= 1)" for n in (25, 29)},
    "dmlkit.losses.base.x__left_align__mutmut_6":
        "argsort(..., dim=1) -> argsort(...): dim=-1 is argsort's default, the same dimension "
        "of the 2-D mask",
    "dmlkit.losses.base.x__left_align__mutmut_8":
        "(~valid).to(None) is the bool mask itself: a stable argsort of False/True gives the "
        "same order as of 0/1",
    **{f"dmlkit.losses.base.xǁPairBatchǁfill_non_negatives___mutmut_{n}":
       'float("inf") -> float("INF") (or "-inf" -> "-INF"): the same float' for n in (26, 29)},
    **{f"dmlkit.losses.base.xǁPairBatchǁfill_non_negatives___mutmut_{n}":
       "value > 0 -> value >= 0 (or > 1): in this branch value is +inf or -inf, on the same "
       "side of 0 and of 1" for n in (53, 54)},
    "dmlkit.losses.base.xǁPairLossǁ__init_subclass____mutmut_17":
        'getattr(forward, "full_precision", None) instead of False: both are falsy for a '
        "forward without the mark",
    # dmlkit.losses.multi_similarity
    **{f"dmlkit.losses.multi_similarity.x_raw_pair_weights__mutmut_{n}":
       "the dtype of the 0-dim zero tensor: a 0-dim operand does not change torch.where's "
       "result dtype (S's)" for n in (3, 6)},
    **{f"dmlkit.losses.multi_similarity.x_raw_pair_weights__mutmut_{n}":
       "device=S.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has" for n in (4, 7)},
    **{f"dmlkit.losses.multi_similarity.x_uniform_pair_weights__mutmut_{n}":
       "the default of alpha, beta or lam, which the uniform weights accept for a common "
       "signature and ignore" for n in (1, 2, 3)},
    **{f"dmlkit.losses.multi_similarity.xǁRAWLossǁ__init____mutmut_{n}":
       'mining "none" spelled None or "NONE": the miner registry normalises a name '
       '(str, lower case), so both name the same "none" miner' for n in (8, 24)},
    **{m: "a mining name in upper case: the miner registry normalises names (lower case), "
          "the same miner"
       for m in ("dmlkit.losses.multi_similarity.xǁBinomialVTHMLossǁ__init____mutmut_27",
                 "dmlkit.losses.multi_similarity.xǁRAWSemiHardLossǁ__init____mutmut_27",
                 "dmlkit.losses.multi_similarity.xǁRAWDistanceWeightedLossǁ__init____mutmut_41")},
    "dmlkit.losses.multi_similarity.x__logsumexp_with_zero__mutmut_9":
        'float("-inf") -> float("-INF"): the same float',
    "dmlkit.losses.multi_similarity.xǁMultiSimilarityLossǁcompute__mutmut_10":
        'float("inf") -> float("INF"): the same float',
    **{f"dmlkit.losses.multi_similarity.x_uniform_anchor_terms__mutmut_{n}":
       "the default of alpha, beta or lam, which the uniform terms accept for a common "
       "signature and ignore" for n in (1, 2, 3)},
    **{f"dmlkit.losses.multi_similarity.x_uniform_anchor_terms__mutmut_{n}":
       "the dtype of the 0-dim zero tensor: a 0-dim operand does not change torch.where's "
       "result dtype (S's)" for n in (6, 9)},
    **{f"dmlkit.losses.multi_similarity.x_uniform_anchor_terms__mutmut_{n}":
       "device=S.device dropped (a CPU tensor): the same on CPU, the only device the test "
       "suite has" for n in (7, 10)},
    **{f"dmlkit.losses.multi_similarity.xǁMultiSimilarityLossǁcompute__mutmut_{n}":
       "torch.gt without its preallocated out=: a new tensor with the same values (a speed "
       "path)" for n in (42, 45)},
    "dmlkit.losses.multi_similarity.xǁMultiSimilarityLossǁcompute__mutmut_57":
        "neg_top = None: kept_lse1p then computes the row maximum of the kept logits itself; "
        "a stabilising shift by another row maximum gives the same log-sum-exp up to rounding "
        "(a speed path)",
    "dmlkit.losses.multi_similarity.xǁMultiSimilarityLossǁcompute__mutmut_66":
        "a shift of 1 instead of 0 in the rows that keep no negative: their terms are dropped "
        "(torch.where on anchors, which needs a kept negative) with a zero gradient, and the "
        "kernel's denominator e^-1 stays positive (no 0 / 0)",
    "dmlkit.losses.multi_similarity.xǁVTHMLossǁ__init____mutmut_11":
        'the mining "vthm" dropped: WeightedPairLoss\'s default mining is "vthm"',
    **{m: "a mining name in upper case: the miner registry normalises names (lower case), "
          "the same miner"
       for m in ("dmlkit.losses.multi_similarity.xǁVTHMLossǁ__init____mutmut_18",
                 "dmlkit.losses.multi_similarity.xǁWeightedPairLossǁ__init____mutmut_4",
                 "dmlkit.losses.multi_similarity.xǁMultiSimilarityLossǁ__init____mutmut_27")},
    **{f"dmlkit.losses.multi_similarity.xǁMultiSimilarityLossǁcompute__mutmut_{n}":
       "the hardest negative's logit not passed to kept_lse1p, which then computes the row "
       "maximum itself: the same log-sum-exp up to rounding (a speed path)" for n in (83, 88)},
    "dmlkit.losses.multi_similarity.xǁMultiSimilarityLossǁcompute__mutmut_76":
        "the positives' keep mask passed as bool instead of 0/1 in S's dtype: kept_lse1p "
        "takes either (the negatives pass a bool mask), the same kept terms",
    **{m: "the dtype of the 0-dim zero: a 0-dim operand does not change torch.where's result "
          "dtype (the terms')"
       for m in ("dmlkit.losses.contrastive.xǁContrastiveLossǁ_compute_dense__mutmut_26",
                 "dmlkit.losses.contrastive.xǁContrastiveLossǁ_compute_dense__mutmut_29")},
    **{m: "device=... dropped (a CPU tensor): the same on CPU, the only device the test suite "
          "has"
       for m in ("dmlkit.losses.contrastive.xǁContrastiveLossǁ_compute_dense__mutmut_27",
                 "dmlkit.losses.contrastive.xǁContrastiveLossǁ_compute_dense__mutmut_30",
                 "dmlkit.losses.contrastive.xǁContrastiveLossǁclosed_form_weights__mutmut_13",
                 "dmlkit.losses.contrastive.xǁContrastiveLossǁclosed_form_weights__mutmut_16")},
    "dmlkit.losses.contrastive.xǁContrastiveLossǁ_hinge__mutmut_3":
        "x * x -> x ** 2.0: torch computes a power of 2 as x * x, and its gradient 2 * g * x "
        "equals g * x + g * x exactly",
    "dmlkit.losses.contrastive.xǁContrastiveLossǁ_hinge__mutmut_8":
        "x -> x ** 1.0: the same value, and the gradient 1 * x ** 0 = 1 (0 ** 0 = 1 in torch)",
    "dmlkit.losses.contrastive.xǁContrastiveLossǁ_hinge__mutmut_11":
        "x -> x ** 1.0 for power 1: the same value, and the gradient 1 * x ** 0 = 1 (0 ** 0 = 1"
        " in torch)",
    "dmlkit.losses.contrastive.xǁContrastiveLossǁ_kernel__mutmut_56":
        "max(n, 1) -> max(n, 2): compute() reaches the kernel only with a positive and a "
        "negative pair, so n >= 2",
    "dmlkit.losses.contrastive.xǁContrastiveTilesǁfinish__mutmut_42":
        "max(n, 1) -> max(n, 2): n < 2 only when there is no positive or no negative pair, and "
        "such a result is multiplied by 0 with no gradient (\"empty\")",
    "dmlkit.losses.contrastive.xǁContrastiveLossǁcompute__mutmut_2":
        "pos_slots[0] -> pos_slots[1]: index and valid have the same (B, w) shape",
    "dmlkit.losses.contrastive.xǁContrastiveLossǁcompute__mutmut_9":
        "the similarity form on raw embeddings through the dense autograd path: the same "
        "formula on the same S (the fused kernel is a speed path)",
    **{m: "the non-zero count in the tiles' dtype instead of float64: the same for float64 "
          "input; for float32 input it is exact up to 2^24 terms and beyond that off by at most"
          " a few parts in 2^24, within the float32 rounding of the sum it divides"
       for m in ("dmlkit.losses.contrastive.xǁContrastiveTilesǁstart__mutmut_7",
                 "dmlkit.losses.contrastive.xǁContrastiveTilesǁstart__mutmut_9")},
    "dmlkit.losses.proxy.x__log1p_sum_exp__mutmut_27":
        "torch.cat([x, zero], dim=dim) -> torch.cat([x, zero]): cat's default dim is 0, and "
        "both callers of _log1p_sum_exp (ProxyAnchorLoss.compute) pass dim=0",
    **{m: "float(\"-inf\") -> float(\"-INF\"): the same float"
       for m in ("dmlkit.losses.proxy.x__log1p_sum_exp__mutmut_9",
                 "dmlkit.losses.proxy.xǁProxyNCALossǁcompute__mutmut_28")},
    "dmlkit.losses.proxy.xǁProxyLossǁ__init____mutmut_35":
        "kaiming_normal_(mode=\"fan_out\") -> mode=\"FAN_OUT\": "
        "torch.nn.init._calculate_correct_fan lower-cases the mode first",
    **{m: "the dtype of the 0-dim zero tensor (None or dropped: float32): a 0-dim operand does "
          "not change torch.where's result dtype (that of the (B, M) exp term, S's), and 0 is 0"
          " in every float dtype"
       for m in ("dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_4",
                 "dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_7")},
    **{m: "device=S.device dropped or None (a CPU tensor): the same on CPU, the only device the"
          " test suite has"
       for m in ("dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_5",
                 "dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_8")},
    **{m: "keepdim=True dropped (or False) in e.sum(0, ...): the (M,) column sums broadcast "
          "against the (B, M) numerator exactly as the (1, M) ones do (trailing dimensions "
          "align)"
       for m in ("dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_48",
                 "dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_50",
                 "dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_61",
                 "dmlkit.losses.proxy.xǁProxyAnchorLossǁclosed_form_weights__mutmut_63")},
    **{m: "device=like.device dropped or None in proxies.to(...): the same on CPU, the only "
          "device the test suite has (benchmarks/gpu.py runs every registered loss, the proxy "
          "losses included, on CUDA)"
       for m in ("dmlkit.losses.proxy.xǁProxyLossǁreferences__mutmut_8",
                 "dmlkit.losses.proxy.xǁProxyLossǁreferences__mutmut_10")},
    **{m: "device=like.device dropped or None in torch.arange (the proxy labels): the same on "
          "CPU, the only device the test suite has (benchmarks/gpu.py runs every registered "
          "loss, the proxy losses included, on CUDA)"
       for m in ("dmlkit.losses.proxy.xǁProxyLossǁreferences__mutmut_13",
                 "dmlkit.losses.proxy.xǁProxyLossǁreferences__mutmut_15")},
    "dmlkit.evaluate.clustering.x_kmeans__mutmut_24":
        "check_embeddings(embeddings) without \"embeddings\": that is its default name",
    "dmlkit.evaluate.clustering.x_kmeans__mutmut_151":
        "the counts divided as int64 instead of cast to the points' dtype first (.to(None)): "
        "true division of a float tensor by an int64 tensor promotes it to that float dtype, "
        "the same exact counts (below 2^24)",
    "dmlkit.evaluate.clustering.x__greedy_seeding__mutmut_122":
        "acceptance u * stale <= d2 instead of <: they differ only when u * stale equals d2(p) "
        "exactly, i.e. u = 0 (probability 2^-53 per draw; a proposal has stale > 0, since "
        "searchsorted never lands on a zero D^2 for a draw > 0) or u * stale rounding to "
        "exactly d2 < stale (again one float64 u in 2^53)",
    "dmlkit.losses.binomial.x_binomial_anchor_terms__mutmut_3":
        "the dtype of the 0-dim zero (float32 instead of S's): a 0-dim operand does not change "
        "torch.where's result dtype (the softplus terms', S's), and 0 is 0 in every float dtype",
    "dmlkit.losses.binomial.x_binomial_anchor_terms__mutmut_6":
        "the dtype of the 0-dim zero dropped (float32): a 0-dim operand does not change "
        "torch.where's result dtype (the softplus terms', S's), and 0 is 0 in every float dtype",
    **{m: "device=S.device dropped (a CPU tensor): the same on CPU, the only device the test "
          "suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.binomial.x_binomial_anchor_terms__mutmut_4",
                 "dmlkit.losses.binomial.x_binomial_anchor_terms__mutmut_7",
                 "dmlkit.losses.binomial.x_binomial_pair_weights__mutmut_4",
                 "dmlkit.losses.binomial.x_binomial_pair_weights__mutmut_7")},
    "dmlkit.losses.binomial.x_binomial_anchor_terms__mutmut_30":
        "n_pos.to(S.dtype) -> .to(None) (stays int64): the division by an int64 tensor promotes"
        " it to S's float dtype, the same conversion of the same small count, so the same "
        "quotient",
    "dmlkit.losses.binomial.x_binomial_anchor_terms__mutmut_36":
        "n_neg.to(S.dtype) -> .to(None) (stays int64): the division by an int64 tensor promotes"
        " it to S's float dtype, the same conversion of the same small count, so the same "
        "quotient",
    "dmlkit.losses.binomial.x_binomial_pair_weights__mutmut_3":
        "the dtype of the 0-dim zero (float32 instead of S's): a 0-dim operand does not change "
        "torch.where's result dtype (wp's / wn's, S's), and 0 is 0 in every float dtype",
    "dmlkit.losses.binomial.x_binomial_pair_weights__mutmut_6":
        "the dtype of the 0-dim zero dropped (float32): a 0-dim operand does not change "
        "torch.where's result dtype (wp's / wn's, S's), and 0 is 0 in every float dtype",
    "dmlkit.losses.binomial.x_binomial_pair_weights__mutmut_15":
        "n_p.to(S.dtype) -> .to(None) (stays int64): the division by an int64 tensor promotes "
        "it to S's float dtype, the same conversion of the same small count, so the same "
        "quotient",
    "dmlkit.losses.binomial.x_binomial_pair_weights__mutmut_25":
        "n_n.to(S.dtype) -> .to(None) (stays int64): the division by an int64 tensor promotes "
        "it to S's float dtype, the same conversion of the same small count, so the same "
        "quotient",
    "dmlkit.losses.ddml.xǁDDMLLossǁcompute__mutmut_14":
        "sign.to(d2.dtype) -> .to(None): sign stays float32 (torch.where of two Python floats),"
        " +-1 exactly, and its product with the float32 / float64 (tau - d2) has d2's dtype and"
        " the same values (forward casts half inputs to float32 before compute, "
        "docs/precision.md)",
    "dmlkit.losses.ddml.xǁDDMLLossǁcompute__mutmut_40":
        "the dtype of the 0-dim zero (float32 instead of g's): a 0-dim operand does not change "
        "torch.where's result dtype (g's), and 0 is 0 in every float dtype",
    "dmlkit.losses.ddml.xǁDDMLLossǁcompute__mutmut_43":
        "the dtype of the 0-dim zero dropped (float32): a 0-dim operand does not change "
        "torch.where's result dtype (g's), and 0 is 0 in every float dtype",
    **{m: "device=g.device dropped (a CPU tensor): the same on CPU, the only device the test "
          "suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.ddml.xǁDDMLLossǁcompute__mutmut_41",
                 "dmlkit.losses.ddml.xǁDDMLLossǁcompute__mutmut_44")},
    "dmlkit.losses.osm_caa.x__safe_ratio__mutmut_9":
        "den > 0 -> den >= 0: den is a sum of weights >= 0, so den == 0 only when every weight "
        "of the part is 0, and then num (a sum of weight x term) is 0 and num / tiny = 0 = num "
        "* 0.0; the gradient through the where is 0 in both (the weights' derivatives vanish "
        "where they are clamped or underflow to 0)",
    "dmlkit.losses.osm_caa.x__safe_ratio__mutmut_14":
        "num * 0.0 -> num * 1.0 where den == 0: den is a sum of weights >= 0, so den == 0 only "
        "when every weight of the part is 0, and then num (a sum of weight x term) is 0, with a"
        " zero gradient, so num * 1.0 = num * 0.0",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁcompute__mutmut_13":
        "the dtype of the 0-dim zero (float32 instead of d2's): a 0-dim operand does not change"
        " torch.where's result dtype, and 0 is 0 in every float dtype",
    **{m: "the dtype of the 0-dim zero dropped (float32): a 0-dim operand does not change "
          "torch.where's result dtype, and 0 is 0 in every float dtype"
       for m in ("dmlkit.losses.osm_caa.xǁOSMCAALossǁcompute__mutmut_16",
                 "dmlkit.losses.osm_caa.xǁOSMCAALossǁpair_weights_osm_caa__mutmut_10")},
    **{m: "device=d2.device dropped (a CPU tensor): the same on CPU, the only device the test "
          "suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.osm_caa.xǁOSMCAALossǁcompute__mutmut_14",
                 "dmlkit.losses.osm_caa.xǁOSMCAALossǁcompute__mutmut_17")},
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁpair_weights_osm_caa__mutmut_7":
        "the dtype of the 0-dim zero (float32 instead of d's): a 0-dim operand does not change "
        "torch.where's result dtype, and 0 is 0 in every float dtype",
    **{m: "device=d.device dropped (a CPU tensor): the same on CPU, the only device the test "
          "suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.osm_caa.xǁOSMCAALossǁpair_weights_osm_caa__mutmut_8",
                 "dmlkit.losses.osm_caa.xǁOSMCAALossǁpair_weights_osm_caa__mutmut_11")},
    **{m: "device=logits.device dropped (a CPU tensor): the same on CPU, the only device the "
          "test suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.osm_caa.xǁOSMCAALossǁsample_attention__mutmut_15",
                 "dmlkit.losses.osm_caa.xǁOSMCAALossǁsample_attention__mutmut_18")},
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁclass_logits__mutmut_27":
        "F.normalize(f, dim=1) -> F.normalize(f): dim=1 is F.normalize's default",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁclass_logits__mutmut_32":
        "F.normalize(c, dim=1) -> F.normalize(c): dim=1 is F.normalize's default",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁpair_attention__mutmut_7":
        "the references' attention recomputed in-batch: there the batch's references are its "
        "own embeddings and labels (check_batch_inputs), so a_ref has a's values, and a bad "
        "label already raised in a's call with the name \"labels\" (the gradient differs only in "
        "its summation order)",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁtiled_regularizer__mutmut_3":
        "ref_labels=None in the PairBatch handed to regularizer: regularizer reads only the "
        "batch's embeddings and labels (the queries' cross-entropy)",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁtiled_regularizer__mutmut_5":
        "ref_embeddings=None in the PairBatch handed to regularizer: regularizer reads only the"
        " batch's embeddings and labels (the queries' cross-entropy)",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁtiled_regularizer__mutmut_6":
        "in_batch=None in the PairBatch handed to regularizer: regularizer reads only the "
        "batch's embeddings and labels (the queries' cross-entropy)",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁtiled_regularizer__mutmut_7":
        "normalized=None in the PairBatch handed to regularizer: regularizer reads only the "
        "batch's embeddings and labels (the queries' cross-entropy)",
    "dmlkit.losses.osm_caa.xǁOSMCAATilesǁfinish__mutmut_49":
        "c_pos = 1.0 instead of 0.0 when w_pos == 0: the weights are >= 0, so every positive "
        "weight is 0 and t_pos = 0, hence c_pos * t_pos = 0 either way, and pair_grads returns "
        "no gradient for any non-tensor c_pos",
    "dmlkit.losses.osm_caa.xǁOSMCAATilesǁfinish__mutmut_62":
        "c_neg = 1.0 instead of 0.0 when w_neg == 0: the weights are >= 0, so every negative "
        "weight is 0 and t_neg = 0, hence c_neg * t_neg = 0 either way, and tile_grad returns "
        "None for any non-tensor c_neg",
    "dmlkit.losses.osm_caa.xǁOSMCAATilesǁvalue__mutmut_4":
        "always ctx.zeros(()) + v: st[\"value\"] is always a tensor (c_pos * t_pos with t_pos a "
        "tensor sum), and 0 + v = v in value and gradient",
    "dmlkit.losses.osm_caa.xǁOSMCAATilesǁvalue__mutmut_5":
        "always v: st[\"value\"] is always a tensor (c_pos * t_pos with t_pos a tensor sum), so "
        "the else branch is never taken",
    "dmlkit.losses.osm_caa.xǁOSMCAATilesǁvalue__mutmut_6":
        "ctx.zeros(()) - v in the else branch: st[\"value\"] is always a tensor (c_pos * t_pos "
        "with t_pos a tensor sum), so the else branch is never taken",
    "dmlkit.losses.osm_caa.xǁOSMCAATilesǁvalue__mutmut_7":
        "ctx.zeros(None) in the else branch: st[\"value\"] is always a tensor (c_pos * t_pos with"
        " t_pos a tensor sum), so the else branch is never taken",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁtile_formulation__mutmut_23":
        "a.to(ctx.dtype) -> a.to(None): ctx.embeddings are already in ctx.dtype (tiling._inputs"
        " promotes half inputs to float32) and class_logits computes in the embeddings' dtype "
        "(the centres cast to it), so a is already ctx.dtype",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁtile_formulation__mutmut_24":
        "a_ref.to(ctx.dtype) -> a_ref.to(None): ctx.ref_embeddings are already in ctx.dtype "
        "(tiling._inputs casts the references to the queries' dtype) and class_logits computes "
        "in the embeddings' dtype (the centres cast to it), so a_ref is already ctx.dtype",
    "dmlkit.losses.ddml.xǁDDMLTilesǁfinish__mutmut_44":
        "max(n_pos + n_neg, 1) -> max(n_pos + n_neg, 2): coef is used only when the batch is "
        "not empty (value, tile_grad and pair_grads check st[\"empty\"] first), and then n_pos >="
        " 1 and n_neg >= 1, so n_pos + n_neg >= 2",
    "dmlkit.losses.osm_caa.xǁOSMCAALossǁtile_formulation__mutmut_7":
        "the references' attention recomputed in-batch: there ctx.ref_embeddings and "
        "ctx.ref_labels are the queries themselves (tiling._inputs: r = q), so a_ref has a's "
        "values, and a bad label already raised in a's call with the name \"labels\"",
    **{m: "float(\"-inf\") -> float(\"-INF\"): the same float"
       for m in ("dmlkit.losses._fused.x_kept_lse1p__mutmut_18",
                 "dmlkit.losses.tiles.x_mask_non_negatives___mutmut_5",
                 "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_finish_weighting__mutmut_32",
                 "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_164",
                 "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_60")},
    "dmlkit.losses._fused.x_kept_lse1p__mutmut_22":
        "nan_to_num(neginf=None) (nan_to_num's default): a row that keeps nothing gets the "
        "dtype's lowest finite value instead of 0 as row_max, which the kernel's "
        "row_max.clamp_min(0.0) turns into the same 0",
    "dmlkit.losses._fused.x_kept_lse1p__mutmut_24":
        "neginf dropped (nan_to_num's default, the dtype's lowest finite value instead of 0 for"
        " a row that keeps nothing): the kernel's row_max.clamp_min(0.0) turns it into the same"
        " 0",
    "dmlkit.losses._fused.x_kept_lse1p__mutmut_25":
        "row_max 1 instead of 0 for a row that keeps nothing (with finite S every kept z is "
        "finite, so row_max is -inf only there): its terms are 0 either way (e = exp(..) * keep"
        " = 0) and its value (1 + log(e^-1)) / |scale| is exactly 0 as (0 + log 1) / |scale| "
        "(checked in float16, bfloat16, float32 and float64)",
    "dmlkit.losses._fused.xǁ_KeptLogSumExp1pǁforward__mutmut_18":
        "the upper clamp of z - m at 1 instead of 0: row_max is the largest kept z (kept_lse1p "
        "computes it from the same expression, multi-similarity passes (neg_max - lam) * beta, "
        "the same operations on the hardest negative), so kept entries have z - m <= 0, and the"
        " others are multiplied by keep = 0 (exp(<= 1) is finite)",
    "dmlkit.losses._fused.xǁ_KeptLogSumExp1pǁforward__mutmut_33":
        "the sign for scale >= 0 instead of > 0 differs only at scale = 0, which no caller "
        "passes (kept_lse1p's only caller is multi-similarity with -alpha and beta, validated >"
        " 0) and where the value divides by |scale| = 0",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁdirect_exponentials__mutmut_40":
        "b - log_m < limit instead of b + log_m < limit: the row factor's bound log2 max(B, 1) "
        "+ b (|lam| + max(0, 1 - lam)) + log_m is never below b + log_m (the coefficient of b "
        "is >= 1, log2 max(B, 1) >= 0, and rounding is monotonic), so factor < limit alone "
        "decides either way",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁdirect_exponentials__mutmut_41":
        "b + log_m <= limit instead of < limit: the row factor's bound log2 max(B, 1) + b "
        "(|lam| + max(0, 1 - lam)) + log_m is never below b + log_m (the coefficient of b is >="
        " 1, log2 max(B, 1) >= 0, rounding is monotonic), so factor < limit alone decides "
        "either way",
    **{m: "device=cols.device dropped from the bounds tensor (a CPU tensor): the same on CPU, "
          "the only device the test suite has (benchmarks/gpu.py runs the tiles on CUDA)"
       for m in ("dmlkit.losses.tiles.x__slot_range__mutmut_6",
                 "dmlkit.losses.tiles.x__slot_range__mutmut_9")},
    **{m: "device=cols.device dropped from the arange (a CPU tensor): the same on CPU, the only"
          " device the test suite has (benchmarks/gpu.py runs the tiles on CUDA)"
       for m in ("dmlkit.losses.tiles.x__slot_range__mutmut_36",
                 "dmlkit.losses.tiles.x__slot_range__mutmut_38")},
    "dmlkit.losses.tiles.x__slot_range__mutmut_7":
        "dtype=None for the bounds [c0, c0 + c] (Python ints): torch.tensor makes them int64, "
        "the dtype of slot_columns (the slots' long index) anyway",
    "dmlkit.losses.tiles.x__slot_range__mutmut_10":
        "dtype dropped for the bounds [c0, c0 + c] (Python ints): torch.tensor makes them "
        "int64, the dtype of slot_columns (the slots' long index) anyway",
    "dmlkit.losses.tiles.x__slot_range__mutmut_28":
        "width computed also for a tile without rows: no tile has 0 rows (_blocks yields no "
        "empty block, and a batch has B >= 1)",
    "dmlkit.losses.tiles.x__slot_range__mutmut_31":
        "the guard on cols.shape[1] (w) instead of cols.shape[0] (the tile's rows): _slot_range"
        " runs only for wide rows, w > WIDE_SLOTS >= 0, and a tile has at least one row, so "
        "both are non-zero",
    "dmlkit.losses.tiles.x__slot_range__mutmut_32":
        "width 1 instead of 0 for a tile without rows: no tile has 0 rows (_blocks yields no "
        "empty block)",
    "dmlkit.losses.tiles.x__slot_range__mutmut_30":
        "width max(end + start) instead of max(end - start): start >= 0, so the run is only "
        "longer; the extra slots lie at or past end, where here is False, so they are neither "
        "masked (mask_non_negatives_ writes only here) nor given a gradient (_tile_grad adds 0 "
        "there, at a clamped, valid column)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_neg_keep__mutmut_1":
        "the default of as_float True instead of False: every call of _neg_keep (accumulate "
        "twice, tile_grad twice) passes as_float explicitly",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_105":
        "as_float dropped (False, bool keep) where the next call .to(S.dtype) converts it "
        "anyway: the same 0 / 1 in S's dtype (as_float only spares that conversion)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_106":
        "as_float=False (bool keep) where the next call .to(S.dtype) converts it anyway: the "
        "same 0 / 1 in S's dtype (as_float only spares that conversion)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_20":
        "need_max = vthm or (top_kept or not direct): x_max is then also computed where nothing"
        " reads it (semihard and hard mining, the direct form without mining: x_max is read "
        "only under vthm and by the shifted raw form), elsewhere need_max is the original's",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_1":
        "the elementwise cache key None instead of \"exp2(beta' s)\": any key that no other "
        "elementwise result of the tile uses (the others are strings) caches the same P for the"
        " tile and its mirror",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_5":
        "the elementwise cache key renamed (\"XXexp2(beta' s)XX\"): any key that no other "
        "elementwise result uses caches the same P for the tile and its mirror",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_6":
        "the elementwise cache key upper-cased: any key that no other elementwise result uses "
        "caches the same P for the tile and its mirror",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_10":
        "out=None: P = exp2(beta' X) goes into a fresh tensor instead of the sweep's scratch "
        "buffer \"exp2\", the same values (the buffer only spares an allocation)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_13":
        "out= dropped: P = exp2(beta' X) goes into a fresh tensor instead of the sweep's "
        "scratch buffer \"exp2\", the same values (the buffer only spares an allocation)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_15":
        "the scratch buffer's name None instead of \"exp2\": a name no other buffer of the sweep "
        "uses (\"keep\" is the only other), so P still has a buffer of its own",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_16":
        "the scratch buffer renamed (\"XXexp2XX\"): a name no other buffer of the sweep uses "
        "(\"keep\" is the only other), so P still has a buffer of its own",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_exponentials__mutmut_17":
        "the scratch buffer's name upper-cased (\"EXP2\"): a name no other buffer of the sweep "
        "uses (\"keep\" is the only other), so P still has a buffer of its own",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_31":
        "out= dropped: the gradient P * factor goes into a fresh tensor instead of the scratch "
        "buffer \"keep\", the same values (the engine reads it before the next tile)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ__init____mutmut_1":
        "the default epsilon 1.1 instead of 0.1: multi-similarity passes epsilon explicitly, "
        "and binomial deviance (the only caller using the defaults) mines nothing, so epsilon "
        "is never read",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ__init____mutmut_2":
        "the default margin 1.1 instead of 0.1: multi-similarity passes margin explicitly, and "
        "binomial deviance (the only caller using the defaults) mines nothing, so margin is "
        "never read",
    **{m: "device=None instead of ctx.device (a CPU tensor): the same on CPU, the only device "
          "the test suite has (benchmarks/gpu.py runs the tiles on CUDA)"
       for m in ("dmlkit.losses.tiles.xǁTileContextǁfull__mutmut_4",
                 "dmlkit.losses.tiles.xǁTileContextǁzeros__mutmut_2")},
    **{m: "device dropped instead of ctx.device (a CPU tensor): the same on CPU, the only "
          "device the test suite has (benchmarks/gpu.py runs the tiles on CUDA)"
       for m in ("dmlkit.losses.tiles.xǁTileContextǁfull__mutmut_8",
                 "dmlkit.losses.tiles.xǁTileContextǁzeros__mutmut_5")},
    "dmlkit.losses.tiles.xǁTileǁcol_ids__mutmut_3":
        "device=None instead of S.device (a CPU tensor): the same on CPU, the only device the "
        "test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.xǁTileǁcol_ids__mutmut_6":
        "device dropped instead of S.device (a CPU tensor): the same on CPU, the only device "
        "the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.xǁTileǁbuffer__mutmut_14":
        "device=None for the scratch buffer (a CPU tensor): the same on CPU, the only device "
        "the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.xǁTileǁbuffer__mutmut_17":
        "device dropped for the scratch buffer (a CPU tensor): the same on CPU, the only device"
        " the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.xǁTileǁbuffer__mutmut_6":
        "reallocate only when the buffer is too small AND of another dtype: within a sweep the "
        "dtype is S's throughout, and the first tile asking for a name is the largest of its "
        "kind (the first product is chunk x chunk, or the whole batch; the first mirror is "
        "block 1 x block 0, full unless block 1 is the last and only mirrored block), so the "
        "kept buffer is never too small",
    "dmlkit.losses.tiles.xǁTileǁnegatives_only__mutmut_1":
        "the elementwise cache key None instead of \"negatives_only\": a key no other elementwise"
        " result uses (they are strings), the same copy shared with the mirror",
    "dmlkit.losses.tiles.xǁTileǁnegatives_only__mutmut_5":
        "the elementwise cache key renamed (\"XXnegatives_onlyXX\"): a key no other elementwise "
        "result uses, the same copy shared with the mirror",
    "dmlkit.losses.tiles.xǁTileǁnegatives_only__mutmut_6":
        "the elementwise cache key upper-cased: a key no other elementwise result uses, the "
        "same copy shared with the mirror",
    "dmlkit.losses.tiles.x_mask_non_negatives___mutmut_32":
        "the diagonal written also where lo == hi: torch.arange(lo, lo) is empty, so nothing "
        "more is written",
    "dmlkit.losses.tiles.x_mask_non_negatives___mutmut_36":
        "device=None for the diagonal's arange (a CPU tensor): the same on CPU, the only device"
        " the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.x_mask_non_negatives___mutmut_39":
        "device dropped for the diagonal's arange (a CPU tensor): the same on CPU, the only "
        "device the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.x_lse_update___mutmut_17":
        "the dtype of the 0-dim zero: a 0-dim operand does not change torch.where's result "
        "dtype (new's), and 0 is 0 in every float dtype",
    "dmlkit.losses.tiles.x_lse_update___mutmut_20":
        "the dtype of the 0-dim zero dropped: a 0-dim operand does not change torch.where's "
        "result dtype (new's), and 0 is 0 in every float dtype",
    "dmlkit.losses.tiles.x_lse_update___mutmut_18":
        "device=None for the 0-dim zero (a CPU tensor): the same on CPU, the only device the "
        "test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.x_lse_update___mutmut_21":
        "device dropped for the 0-dim zero (a CPU tensor): the same on CPU, the only device the"
        " test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.x_elementwise_grad__mutmut_17":
        "device=None for the scale tensor (a CPU tensor): the same on CPU, the only device the "
        "test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.x_elementwise_grad__mutmut_20":
        "device dropped for the scale tensor (a CPU tensor): the same on CPU, the only device "
        "the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiles.x_slot_tile_blocks__mutmut_13":
        "row blocks of at least 2 rows instead of 1 (max(2, rows // w)): a block size; every "
        "row's s_pn products are the same (range and min(lo + step, rows) still cover each row "
        "once)",
    "dmlkit.losses.tiling.x_tiled_forward__mutmut_1":
        "the default tile side 1024 -> 1025: a tile size (every caller in the library passes "
        "its own); tiles of any side give the same result",
    "dmlkit.losses.tiling.xǁ_TiledPairLossǁforward__mutmut_3":
        "needs_input_grad[:3] instead of [:2]: the third input is the formulation, not a "
        "tensor, whose needs_input_grad entry is always False",
    "dmlkit.losses.tiling.xǁ_TiledPairLossǁforward__mutmut_10":
        "no tile cache for a budget of exactly 1 byte (> 1 instead of > 0): such a cache keeps "
        "no tile either (the smallest product, 1 x 1 in float32, takes 4 bytes, and product() "
        "stores only what fits), so every tile is recomputed in both cases, with the same "
        "result",
    "dmlkit.losses.tiling.x__inputs__mutmut_18":
        "F.normalize(q, dim=1) -> F.normalize(q): dim=1 is F.normalize's default",
    "dmlkit.losses.tiling.x__inputs__mutmut_31":
        "F.normalize(r, dim=1) -> F.normalize(r): dim=1 is F.normalize's default",
    "dmlkit.losses.tiling.x__inputs__mutmut_40":
        "TileContext(device=None) instead of q.device: ctx.device is read only to allocate "
        "(ctx.zeros, ctx.full, npair's pairing_vectors), which then use the default device (a "
        "CPU tensor): the same on CPU, the only device the test suite has (benchmarks/gpu.py "
        "runs the tiles on CUDA)",
    "dmlkit.losses.tiling.x__check_exclude__mutmut_4":
        "device=None instead of labels.device for the exclude tensor (a CPU tensor): the same "
        "on CPU, the only device the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiling.x__check_exclude__mutmut_6":
        "device dropped for the exclude tensor (a CPU tensor): the same on CPU, the only device"
        " the test suite has (benchmarks/gpu.py runs the tiles on CUDA)",
    "dmlkit.losses.tiling.x__slot_similarities__mutmut_85":
        "einsum(\"RD,RKD->RK\", ...): the same subscripts in capitals",
    "dmlkit.losses.tiling.x__slot_similarities__mutmut_44":
        "(~keep).to(None) leaves the bool mask: a stable argsort of bools orders False before "
        "True exactly as of uint8 0 / 1, the same permutation",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_7":
        "as_float=None (a bool keep for every weighting): the binomial weighting takes the bool"
        " mask anyway, raw multiplies G by it (G.mul_ of a bool or a 0 / 1 float mask, the same"
        " product), uniform converts it with .to(S.dtype), and the direct form does not read "
        "this keep (it calls _neg_keep again)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_11":
        "as_float dropped (False: a bool keep for every weighting): the binomial weighting "
        "takes the bool mask anyway, raw multiplies G by it (the same product as with a 0 / 1 "
        "float mask), uniform converts it with .to(S.dtype), and the direct form does not read "
        "this keep",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_neg_keep__mutmut_18":
        "the scratch buffer of the vthm keep mask named None instead of \"keep\": a name no other"
        " buffer of the sweep uses (\"exp2\", P's, is the only other one), so the mask still has "
        "a buffer of its own (the tile and its mirror apart)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_neg_keep__mutmut_19":
        "the scratch buffer of the vthm keep mask named \"XXkeepXX\" instead of \"keep\": a name no"
        " other buffer of the sweep uses (\"exp2\", P's, is the only other one), so the mask "
        "still has a buffer of its own (the tile and its mirror apart)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_neg_keep__mutmut_20":
        "the scratch buffer of the vthm keep mask named \"KEEP\" instead of \"keep\": a name no "
        "other buffer of the sweep uses (\"exp2\", P's, is the only other one), so the mask still"
        " has a buffer of its own (the tile and its mirror apart)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_32":
        "the scratch buffer of the direct gradient P * factor named None instead of \"keep\": "
        "without mining nothing else of the tile uses \"keep\" (its keep is tile.neg), and \"exp2\""
        " holds P, so the gradient still has a buffer of its own (the tile and its mirror "
        "apart)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_33":
        "the scratch buffer of the direct gradient P * factor named \"XXkeepXX\" instead of "
        "\"keep\": without mining nothing else of the tile uses \"keep\" (its keep is tile.neg), "
        "and \"exp2\" holds P, so the gradient still has a buffer of its own (the tile and its "
        "mirror apart)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_34":
        "the scratch buffer of the direct gradient P * factor named \"KEEP\" instead of \"keep\": "
        "without mining nothing else of the tile uses \"keep\" (its keep is tile.neg), and \"exp2\""
        " holds P, so the gradient still has a buffer of its own (the tile and its mirror "
        "apart)",
    **{m: "float(\"inf\") -> float(\"INF\"): the same float"
       for m in ("dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_neg_keep__mutmut_71",
                 "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁfinish__mutmut_7",
                 "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁprepare__mutmut_7",
                 "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁstart__mutmut_4")},
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_finish_weighting__mutmut_68":
        "lse_neg 1 instead of 0 in the rows that are not live: their value is dropped "
        "(per_row's torch.where) and their gradient multiplied by coef = 0; the shift "
        "beta lam + 1 is as finite as beta lam + 0",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ_finish_weighting__mutmut_80":
        "n_pos_c left as the long count (.to(None)): it is only a divisor of float tensors "
        "(pos_sum / n_pos_c here, coef / n_pos_c in pair_grads), which promote it, the same "
        "quotients",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_97":
        "keep.to(None) (a no-op) instead of .to(S.dtype): where keep is bool (no mining, "
        "semihard, hard) every later use accepts it and gives the same numbers (keep.sum(1) "
        "counts added into the float n_keep, softplus(...) * keep, (1 + S) * keep, "
        "z.masked_fill_(keep == 0, ..), E.mul_(keep), exp(..).mul_(keep)); under vthm it is "
        "already 0 / 1 in S's dtype",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁfinish__mutmut_86":
        "n_keep = ctx.n_neg left long (.to(None)) for the raw weighting without mining: the raw"
        " weighting reads n_keep only through n_keep > 0 (live_rows), the same for a long count",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁfinish__mutmut_90":
        "n_keep left bool (.to(None)) under vthm with the raw weighting: the raw weighting "
        "reads n_keep only through n_keep > 0 (live_rows), the same for a bool",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁstart__mutmut_5":
        "direct = None (never the direct exponentials): every row then takes the shifted "
        "streaming form, which direct_exponentials only ever replaces where it is safe, the "
        "same values up to rounding (a speed path; "
        "test_both_exponential_forms_of_multi_similarity_equal_the_dense_path checks both)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_28":
        "out=None: the direct gradient P * factor goes into a fresh tensor instead of the "
        "scratch buffer \"keep\", the same values",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_67":
        "G multiplied by keep also without mining (\"XXnoneXX\" never matches): keep is then "
        "tile.neg, and G is already 0 off the negatives (exp2(-inf) of the masked tile), so the"
        " product changes nothing",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_68":
        "G multiplied by keep also without mining (\"NONE\" never matches): keep is then "
        "tile.neg, and G is already 0 off the negatives (exp2(-inf) of the masked tile), so the"
        " product changes nothing",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁtile_grad__mutmut_65":
        "the softmax weights' exponent clamped at 1 instead of 0: on kept pairs beta (x - lam) "
        "<= lse_neg (the row's log-sum-exp holds x's own term and the 1), so the exponent is <="
        " 0 up to rounding and the clamp only removes rounding above 0; elsewhere G is "
        "multiplied by keep = 0 (or is exp2(-inf) = 0)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_24":
        "x_max computed on every tile (or True): where need_max is False nothing reads x_max "
        "(it is read only under vthm and by the shifted raw form, exactly where need_max holds)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_101":
        "as_float=None (a bool keep) where the next call .to(S.dtype) converts it anyway: the "
        "same 0 / 1 in S's dtype (as_float only spares that conversion)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_139":
        "E multiplied by keep also without mining (\"XXnoneXX\" never matches): keep is then "
        "tile.neg, and E is already 0 off the negatives (exp2 of the -inf the masked tile holds"
        " there), so the product changes nothing",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁaccumulate__mutmut_140":
        "E multiplied by keep also without mining (\"NONE\" never matches): keep is then "
        "tile.neg, and E is already 0 off the negatives (exp2 of the -inf the masked tile holds"
        " there), so the product changes nothing",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁfinish__mutmut_18":
        "rows without a positive also marked live for the hard mining (n_pos >= 0): they keep "
        "no positive (pos_keep = keep & valid), so _finish_weighting's live_rows (a kept "
        "positive and a kept negative) still leaves them out, with value 0 and coef 0 on their "
        "hardest negative's gradient",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ__init____mutmut_26":
        "fast for beta >= 0 instead of > 0: beta = 0 never reaches the formulation "
        "(WeightedPairLoss rejects alpha, beta <= 0)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ__init____mutmut_27":
        "the fast raw form only for beta > 1: for 0 < beta <= 1 the general raw branch runs "
        "instead (-inf off the negatives, exp(..) * keep, the kept-negative count from the "
        "tiles), the same values up to rounding (a speed path)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ__init____mutmut_28":
        "masked_tiles = None (falsy) instead of fast: the engine leaves the products unmasked "
        "and Tile.negatives_only writes the same -inf into a copy (the same negatives)",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ__init____mutmut_29":
        "direct = None in __init__: start() sets self.direct = direct_exponentials(ctx) before "
        "any pass reads it",
    "dmlkit.losses.kept_pair_tiles.xǁKeptPairTilesǁ__init____mutmut_30":
        "direct = True in __init__: start() sets self.direct = direct_exponentials(ctx) before "
        "any pass reads it",
    **{m: "device=labels.device dropped or None (a CPU tensor): the same on CPU, the only "
          "device the test suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.npair.x__first_of_class__mutmut_5",
                 "dmlkit.losses.npair.x__first_of_class__mutmut_7")},
    "dmlkit.losses.npair.x__l2_penalty__mutmut_1":
        "l2_reg == 0 or (not q_mask.any() and not r_mask.any()): no caller passes an empty mask"
        " (regularizer and tiled_regularizer only after anchors >= 1 and columns >= 2, forward "
        "and the tuplet with all-True masks of non-empty batches), so both mask tests are "
        "always False",
    **{m: "device=labels.device dropped or None (a CPU tensor): the same on CPU, the only "
          "device the test suite has"
       for m in ("dmlkit.losses.npair.x_pair_indices__mutmut_10",
                 "dmlkit.losses.npair.x_pair_indices__mutmut_12")},
    **{m: "the rolled-mask branch also for a single label (labels.numel() > 1 or True, >= 1): "
          "there rank == [0], the mask is [False] and first is empty, the same as second (an "
          "empty batch is refused before)"
       for m in ("dmlkit.losses.npair.x_pair_indices__mutmut_44",
                 "dmlkit.losses.npair.x_pair_indices__mutmut_56")},
    **{m: "the dtype of the 0-dim zero tensor: a 0-dim operand does not change torch.where's "
          "result dtype (S's), and 0 is 0 in every float dtype"
       for m in ("dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_21",
                 "dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_24",
                 "dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_36",
                 "dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_39",
                 "dmlkit.losses.npair.xǁNPairOVOLossǁcompute__mutmut_8",
                 "dmlkit.losses.npair.xǁNPairOVOLossǁcompute__mutmut_11",
                 "dmlkit.losses.npair.xǁTupletLossǁcompute__mutmut_14",
                 "dmlkit.losses.npair.xǁTupletLossǁcompute__mutmut_17",
                 "dmlkit.losses.angular.xǁAngularLossǁcompute__mutmut_20",
                 "dmlkit.losses.angular.xǁAngularLossǁcompute__mutmut_23")},
    **{m: "device=S.device dropped or None (a CPU tensor): the same on CPU, the only device the"
          " test suite has"
       for m in ("dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_22",
                 "dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_25",
                 "dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_37",
                 "dmlkit.losses.npair.xǁNPairLossǁcompute__mutmut_40",
                 "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_47",
                 "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_49",
                 "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_55",
                 "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_58",
                 "dmlkit.losses.npair.xǁNPairOVOLossǁcompute__mutmut_9",
                 "dmlkit.losses.npair.xǁNPairOVOLossǁcompute__mutmut_12",
                 "dmlkit.losses.npair.xǁTupletLossǁcompute__mutmut_15",
                 "dmlkit.losses.npair.xǁTupletLossǁcompute__mutmut_18",
                 "dmlkit.losses.angular.xǁAngularLossǁcompute__mutmut_24")},
    "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_3":
        "in-batch losses skip forward's cross-entropy shortcut for the generic path "
        "(_NPairBase.forward: compute on the anchors vs positives), the same loss and gradient "
        "(test_npair_in_batch_shortcut_equals_the_pair_batch_formula); a speed path only",
    "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_5":
        "the shortcut taken exactly when chunk_size is set (and the generic path without it): "
        "the dense shortcut and the tiles give the same loss and gradient; chunk_size only "
        "chooses the memory layout",
    **{m: "two pairs go through the generic path (_NPairBase.forward) instead of the shortcut: "
          "the same loss and gradient (a speed path only)"
       for m in ("dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_21",
                 "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_22")},
    "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_31":
        "the half-precision cast skipped: forward's precision policy (full_precision_forward) "
        "has already cast half inputs to float32 on entry, so raw is never half here",
    "dmlkit.losses.npair.xǁNPairLossǁforward__mutmut_38":
        "F.normalize(x, dim=1) -> F.normalize(x): dim=1 is F.normalize's default",
    **{m: "float(\"-inf\") -> float(\"-INF\"): the same float"
       for m in ("dmlkit.losses.npair.xǁTupletLossǁcompute__mutmut_44",
                 "dmlkit.losses.npair.xǁNPairTilesǁaccumulate__mutmut_27",
                 "dmlkit.losses.npair.xǁNPairTilesǁstart__mutmut_9",
                 "dmlkit.losses.npair.xǁTupletTilesǁaccumulate__mutmut_9",
                 "dmlkit.losses.npair.xǁTupletTilesǁstart__mutmut_9",
                 "dmlkit.losses.angular.xǁAngularLossǁcompute__mutmut_46",
                 "dmlkit.losses.angular.xǁAngularTilesǁstart__mutmut_12",
                 "dmlkit.losses.angular.xǁAngularTilesǁ_exponents__mutmut_16")},
    **{m: "device=batch.embeddings.device dropped or None (a CPU tensor): the same on CPU, the "
          "only device the test suite has"
       for m in ("dmlkit.losses.npair.xǁTupletLossǁregularizer__mutmut_10",
                 "dmlkit.losses.npair.xǁTupletLossǁregularizer__mutmut_13")},
    **{m: "device=batch.ref_embeddings.device dropped or None (a CPU tensor): the same on CPU, "
          "the only device the test suite has"
       for m in ("dmlkit.losses.npair.xǁTupletLossǁregularizer__mutmut_18",
                 "dmlkit.losses.npair.xǁTupletLossǁregularizer__mutmut_21")},
    "dmlkit.losses.npair.xǁ_NPairBaseǁforward__mutmut_2":
        "in-batch losses skip the anchors-vs-positives shortcut for PairLoss.forward on the "
        "whole batch: compute sees the same pairs and gives the same loss and gradient (a speed"
        " path only)",
    **{m: "two pairs go through PairLoss.forward on the whole batch instead of the "
          "anchors-vs-positives shortcut: the same loss and gradient (a speed path only)"
       for m in ("dmlkit.losses.npair.xǁ_NPairBaseǁforward__mutmut_19",
                 "dmlkit.losses.npair.xǁ_NPairBaseǁforward__mutmut_20")},
    "dmlkit.losses.npair.xǁNPairTilesǁfinish__mutmut_31":
        "lse = 1 instead of 0 on the rows that are not anchors: it only enters per_anchor "
        "through torch.where(anchors, ...) and tile_grad through torch.where(mask, ...), whose "
        "mask is False on those rows",
    **{m: "stat = 1 instead of 0 on rows without negatives: their terms are masked by ok "
          "(has_neg), so dh = 0 there, and tile_grad masks the row by tile.neg, which is False "
          "on every column of such a row"
       for m in ("dmlkit.losses.npair.xǁTupletTilesǁfinish__mutmut_32",
                 "dmlkit.losses.npair.xǁTupletTilesǁfinish__mutmut_42")},
    "dmlkit.losses.npair.xǁTupletTilesǁfinish__mutmut_4":
        "has_neg = n_neg >= 0 (every row): a row without negatives means that every reference "
        "has its label (in-batch: one class), and then no row has both a positive and a "
        "negative; the mutant's terms are softplus(-inf) or relu(-inf) = 0 with zero gradients,"
        " the loss 0 as the original's empty case",
    "dmlkit.losses.npair.xǁNPairTilesǁprepare__mutmut_16":
        "empty = n < 1 and columns < 2: with anchors but one column, that column is every "
        "anchor's positive (lse = s_ap: a term 0 up to rounding, tile and pair gradients +-1/n "
        "on the same pair cancel exactly; ovo has no other column), and with no anchor every "
        "mask is empty (value 0, no gradient)",
    **{m: "device=dev dropped or None (a CPU tensor): the same on CPU, the only device the test"
          " suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.npair.x_pairing_vectors__mutmut_5",
                 "dmlkit.losses.npair.x_pairing_vectors__mutmut_8",
                 "dmlkit.losses.npair.x_pairing_vectors__mutmut_12",
                 "dmlkit.losses.npair.x_pairing_vectors__mutmut_15",
                 "dmlkit.losses.npair.x_pairing_vectors__mutmut_19",
                 "dmlkit.losses.npair.x_pairing_vectors__mutmut_22")},
    **{m: "device= dropped or None (a CPU tensor): the same on CPU, the only device the test "
          "suite has"
       for m in ("dmlkit.losses.npair.xǁTupletLossǁtiled_regularizer__mutmut_12",
                 "dmlkit.losses.npair.xǁTupletLossǁtiled_regularizer__mutmut_15",
                 "dmlkit.losses.npair.xǁTupletLossǁtiled_regularizer__mutmut_20",
                 "dmlkit.losses.npair.xǁTupletLossǁtiled_regularizer__mutmut_23")},
    "dmlkit.losses.angular.xǁAngularLossǁcompute__mutmut_21":
        "device=S.device dropped or None (a CPU tensor): the same on CPU, the only device the "
        "test suite has (benchmarks/gpu.py runs the losses on CUDA)",
    "dmlkit.losses.angular.xǁAngularTilesǁstart__mutmut_2":
        "w from ctx.slots[1] (valid) instead of ctx.slots[0] (index): both are (B, w)",
    "dmlkit.losses.angular.xǁAngularTilesǁfinish__mutmut_32":
        "lse = 1 instead of 0 on the slots that are not live: their terms are masked "
        "(torch.where(live, ...)), so dL/dlse = 0 there, and tile_grad's exponents on them are "
        "all -inf (a padding slot or a row without negatives), exp(-inf - lse) = 0 either way",
    "dmlkit.losses.npair.xǁNPairTilesǁprepare__mutmut_13":
        "empty = None (never empty): with anchors but one column that column is every anchor's "
        "positive (term lse - s_ap = 0, its tile and pair gradients cancel exactly; ovo has no "
        "other column), and with no anchor every mask is empty: value 0, no gradient, as the "
        "empty case (checked: identical values and gradients on 60 random batches, dense and "
        "tiles of 1-3)",
    "dmlkit.losses.triplet.x__counts__mutmut_2":
        "width <= _LOOP_WIDTH -> < : at width 32 the binary search runs instead of the "
        "comparison loop, and both give the same exact counts (test_triplet_ties checks both "
        "paths against the naive loop at every width)",
    **{m: "the hit buffer also allocated at width 1, where the loop over j = 1 .. width - 1 "
          "never runs"
       for m in ("dmlkit.losses.triplet.x__counts__mutmut_27",
                 "dmlkit.losses.triplet.x__counts__mutmut_29")},
    **{m: "device=... dropped or None (a CPU tensor): the same on CPU, the only device the test"
          " suite has (benchmarks/gpu.py runs the losses on CUDA)"
       for m in ("dmlkit.losses.triplet.x__counts__mutmut_63",
                 "dmlkit.losses.triplet.x__counts__mutmut_67",
                 "dmlkit.losses.triplet.x__counts__mutmut_80",
                 "dmlkit.losses.triplet.x__counts__mutmut_83",
                 "dmlkit.losses.triplet.x_triplet_counts__mutmut_29",
                 "dmlkit.losses.triplet.x_triplet_counts__mutmut_32",
                 "dmlkit.losses.lifted.x_masked_logsumexp__mutmut_23",
                 "dmlkit.losses.lifted.x_masked_logsumexp__mutmut_26",
                 "dmlkit.losses.lifted.x_masked_logsumexp__mutmut_40",
                 "dmlkit.losses.lifted.x_masked_logsumexp__mutmut_43",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_11",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_14",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_18",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_21",
                 "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁcompute__mutmut_51",
                 "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁcompute__mutmut_54",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_48",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_51",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_87",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_90",
                 "dmlkit.losses.lifted.xǁLiftedTilesǁfinish__mutmut_66",
                 "dmlkit.losses.lifted.xǁLiftedTilesǁfinish__mutmut_69")},
    "dmlkit.losses.triplet.x__signed_counts__mutmut_1":
        "the default sign 2.0 instead of 1.0: sign is only used through -sign * inf (still "
        "-inf) and sign < 0 (still False)",
    **{m: "float(\"inf\") -> float(\"INF\"): the same float"
       for m in ("dmlkit.losses.triplet.x__signed_counts__mutmut_14",
                 "dmlkit.losses.triplet.x__sorted__mutmut_11",
                 "dmlkit.losses.triplet.xǁTripletLossǁ_batch_hard__mutmut_4",
                 "dmlkit.losses.triplet.x__ordered__mutmut_11",
                 "dmlkit.losses.triplet.xǁTripletTilesǁ_finish_hard__mutmut_26",
                 "dmlkit.losses.triplet.xǁTripletTilesǁstart__mutmut_4")},
    **{m: "sign < 0 -> sign <= 0 / sign < 1: sign is always +1.0 or -1.0 (its callers pass 1.0,"
          " -1.0 or the default), on which the tests agree"
       for m in ("dmlkit.losses.triplet.x__signed_counts__mutmut_22",
                 "dmlkit.losses.triplet.x__signed_counts__mutmut_23")},
    **{m: "one factor of n_total left as int64 (.to(None)): the product with the other factor, "
          "in dtype, promotes it to dtype, and the counts are exact integers either way"
       for m in ("dmlkit.losses.triplet.x_triplet_counts__mutmut_12",
                 "dmlkit.losses.triplet.x_triplet_counts__mutmut_16")},
    **{m: "slots[1].shape[1] instead of slots[0].shape[1]: index and valid are both (B, w)"
       for m in ("dmlkit.losses.triplet.x_triplet_counts__mutmut_20",
                 "dmlkit.losses.triplet.xǁTripletLossǁcompute__mutmut_11",
                 "dmlkit.losses.triplet.xǁTripletTilesǁprepare__mutmut_6")},
    **{m: "one count left as int64 (.to(None)): its sum with the other count, in S's dtype, "
          "promotes it to S's dtype, and the counts are exact integers"
       for m in ("dmlkit.losses.triplet.xǁTripletLossǁclosed_form_weights__mutmut_21",
                 "dmlkit.losses.triplet.xǁTripletLossǁclosed_form_weights__mutmut_24")},
    "dmlkit.losses.triplet.xǁTripletLossǁcompute__mutmut_65":
        "n_total left as int64 (.to(None)): total / n_total promotes it to total's dtype, the "
        "same quotient",
    "dmlkit.losses.triplet.xǁTripletLossǁscores__mutmut_5":
        "sign > 0 -> sign >= 0: sign is always +1.0 or -1.0",
    **{m: "float(\"-inf\") -> float(\"-INF\"): the same float"
       for m in ("dmlkit.losses.lifted.x_masked_logsumexp__mutmut_12",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_24",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_25",
                 "dmlkit.losses.lifted.xǁLiftedTilesǁaccumulate__mutmut_10",
                 "dmlkit.losses.lifted.xǁLiftedTilesǁfinish__mutmut_44",
                 "dmlkit.losses.lifted.xǁGeneralizedLiftedTilesǁaccumulate__mutmut_9",
                 "dmlkit.losses.triplet.xǁTripletTilesǁ_b__mutmut_9",
                 "dmlkit.losses.lifted.x__negative_lse_start__mutmut_9")},
    **{m: "the dtype of the 0-dim zero (float32): a 0-dim operand does not change torch.where's"
          " result dtype (the other operand's), and 0 is 0 in every dtype"
       for m in ("dmlkit.losses.lifted.x_masked_logsumexp__mutmut_22",
                 "dmlkit.losses.lifted.x_masked_logsumexp__mutmut_25",
                 "dmlkit.losses.lifted.x_masked_logsumexp__mutmut_39",
                 "dmlkit.losses.lifted.x_masked_logsumexp__mutmut_42")},
    **{m: "the dtype of the 0-dim zero (float32): a 0-dim operand does not change torch.where's"
          " result dtype (the weights'), and 0 is 0 in every dtype"
       for m in (
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_10",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_13")},
    **{m: "the dtype of the 0-dim -inf (float32): a 0-dim operand does not change torch.where's"
          " result dtype (S's), and -inf is -inf in every float dtype"
       for m in (
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_17",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_20")},
    **{m: "the has-positive (53) / has-negative (55) test taken over the whole mask "
          "(any(None)): an anchor without positives (or negatives) has lp (or ln) = logsumexp "
          "of nothing = -inf, so h = -inf fails the hinge test h > 0 anyway"
       for m in (
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_53",
           "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁclosed_form_weights__mutmut_55")},
    **{m: "the dtype of the 0-dim zero (float32): a 0-dim operand does not change torch.where's"
          " result dtype (h's), and 0 is 0 in every dtype"
       for m in ("dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁcompute__mutmut_50",
                 "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁcompute__mutmut_53")},
    **{m: "the dtype of the 0-dim zero (float32): a 0-dim operand does not change torch.where's"
          " result dtype (the distances'), and 0 is 0 in every dtype"
       for m in ("dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_47",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_50",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_86",
                 "dmlkit.losses.lifted.xǁLiftedStructureLossǁcompute__mutmut_89")},
    "dmlkit.losses.triplet.xǁTripletTilesǁ_finish_hard__mutmut_6":
        "rows with positives and no negative made live (n_neg >= 0): their hardest negative is "
        "-inf, so their hinge is relu(-inf) = 0 with derivative 0; with label masks (the only "
        "ones of the tiled path) such a row exists only when every reference has its label, and"
        " then no row has both kinds, so the loss is 0 either way",
    "dmlkit.losses.lifted.xǁLiftedTilesǁfinish__mutmut_62":
        "has_row[i] | has_row[j] -> & on the in-batch positive slots: the tiled path has label "
        "masks only, so a positive pair (i, j) shares its label and hence its negatives: "
        "has_row[i] == has_row[j]",
    **{m: "the dtype of the 0-dim zero (float32): a 0-dim operand does not change torch.where's"
          " result dtype (the slots'), and 0 is 0 in every dtype"
       for m in ("dmlkit.losses.lifted.xǁLiftedTilesǁfinish__mutmut_65",
                 "dmlkit.losses.lifted.xǁLiftedTilesǁfinish__mutmut_68")},
    "dmlkit.losses.triplet.xǁTripletLossǁscore_fn__mutmut_12":
        "the squared-distance score -(3 - 2s) instead of -(2 - 2s): every score shifted by the "
        "same -1 (3 - 2s >= 1 on unit vectors, the clamp never acts), and the loss, its mining "
        "and its reductions read only differences T_n - T_p",
    "dmlkit.losses.lifted.x__negative_lse__mutmut_13":
        "the log-sum-exp of a row without negatives left at -inf (n_neg >= 0) instead of set to"
        " 0: both users mask such rows, LiftedTiles by has_row / ok and GeneralizedLiftedTiles "
        "by live, in the value and in the derivative (relu(-inf) = 0 behind torch.where), and "
        "their tile_grad keeps only negative entries, of which such a row has none",
    "dmlkit.losses.lifted.x__negative_lse__mutmut_15":
        "the log-sum-exp of a row without negatives set to 1 instead of 0: both users mask such"
        " rows (LiftedTiles by has_row / ok, GeneralizedLiftedTiles by live) in the value and "
        "the derivative, and their tile_grad keeps only negative entries, of which such a row "
        "has none",
    "dmlkit.losses.lifted.xǁGeneralizedLiftedStructureLossǁcompute__mutmut_2":
        "the early return taken only when there is neither a positive nor a negative (and "
        "instead of or): with only one kind the general path runs, where masked_logsumexp gives"
        " finite 0s on the empty rows and every anchor lacks a positive or a negative, so "
        "per_anchor is the masked 0 everywhere: the same connected 0 with a zero gradient "
        "(checked by the degenerate-batch tests, dense and tiled)",
    **{m: "st[\"n_kept\"] of an empty batch set to None / 1.0 or under another key: value, "
          "tile_grad and pair_grads read st[\"empty\"] first and never read n_kept when it is "
          "True"
       for m in ("dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_8",
                 "dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_9",
                 "dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_10",
                 "dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_11")},
    "dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_16":
        "nan_to_num(0.0) -> nan_to_num(None): None is nan_to_num's default for nan, which is "
        "0.0",
    "dmlkit.losses.tiles.x_elementwise_grad__mutmut_12":
        "the entries not kept filled with 1 instead of 0: a constant, whose gradient is 0 "
        "either way (the function returns only the gradient)",
    **{m: "the +-1 sign vector in float32 instead of s's dtype: +-1 is exact in every dtype and"
          " the product with the (B, 1) coefficients promotes to theirs"
       for m in ("dmlkit.losses.triplet.xǁTripletTilesǁpair_grads__mutmut_15",
                 "dmlkit.losses.triplet.xǁTripletTilesǁpair_grads__mutmut_18")},
    **{m: "device=... dropped (a CPU tensor): the same on CPU, the only device the test suite "
          "has"
       for m in ("dmlkit.losses.triplet.xǁTripletTilesǁpair_grads__mutmut_16",
                 "dmlkit.losses.triplet.xǁTripletTilesǁpair_grads__mutmut_19")},
    "dmlkit.losses.triplet.xǁTripletTilesǁpair_grads__mutmut_37":
        "x * sign -> x / sign with sign = +-1: the same float exactly",
    "dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_32":
        "nan_to_num(0.0) -> nan_to_num(None): None is nan_to_num's default, 0.0",
    "dmlkit.losses.triplet.xǁTripletTilesǁtile_grad__mutmut_1":
        "empty or no kept triplet -> empty and no kept triplet: with no kept triplet every keep"
        " mask is 0, so the gradient the tile then computes is all zeros, the same as none (and"
        " an empty batch keeps none)",
    "dmlkit.losses.npair.xǁTupletTilesǁaccumulate__mutmut_27":
        "the tie count left as int64 (.to(None)): torch.where with the float accumulator "
        "promotes it to the accumulator dtype and the result is stored into that float tensor, "
        "the same exact counts",
    "dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_23":
        "nan_to_num's fill 0 -> 1: s_lo gathers the positive slots' similarities (finite, 0 on "
        "padding) and c_lo holds counts, so T(s_lo) * c_lo is never NaN for the finite inputs "
        "the losses accept, and the fill is never used",
    "dmlkit.losses.triplet.xǁTripletTilesǁfinish__mutmut_39":
        "nan_to_num's fill 0 -> 1: s_hi gathers the positive slots' similarities (finite, 0 on "
        "padding) and c_hi holds counts, so T(s_hi) * c_hi is never NaN for the finite inputs "
        "the losses accept, and the fill is never used",
    "dmlkit.losses.tiling.x__slot_similarities__mutmut_42":
        "argsort(..., dim=1) -> argsort(...): the default dim is the last, dim 1 of this 2-D "
        "tensor",
    "dmlkit.losses.tiling.x__inputs__mutmut_22":
        "a half reference not promoted with .float(): the next line's r.to(q.dtype) converts it"
        " to the queries' float32 / float64 anyway, exactly",
    "dmlkit.losses.tiling.x_tiled_forward__mutmut_39":
        "the reference labels not passed to tiled_regularizer: no loss's regularizer reads them"
        " (N-pair's penalties read the embeddings, OSM/CAA's PairBatch carries them unread)",
}

_DECORATED = re.compile(r"^((?:@(?:torch\.no_grad\(\)|MINERS\.register\([^)]*\)"
                        r"|without_autocast)\n)+)def (\w+)\(", re.M)


def _undecorate(path: Path) -> int:
    """Rewrite top-level ``@torch.no_grad()`` / ``@MINERS.register(..)`` functions as plain
    definitions wrapped after the module's last line (decorators applied innermost first)."""
    text = path.read_text()
    tail = []

    def strip(m: re.Match) -> str:
        decorators = [d[1:] for d in m.group(1).splitlines()]
        wrapped = m.group(2)
        for d in reversed(decorators):
            wrapped = f"{d}({wrapped})"
        tail.append(f"{m.group(2)} = {wrapped}")
        return f"def {m.group(2)}("

    text = _DECORATED.sub(strip, text)
    if tail:
        path.write_text(text.rstrip("\n") + "\n\n\n" + "\n".join(tail) + "\n")
    return len(tail)


def _copy_tree(work: Path, worktree: bool) -> None:
    """The committed dmlkit/, tests/ and pyproject.toml (HEAD), or with ``worktree`` the
    files as they are now (uncommitted edits of others included)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    paths = ("dmlkit", "tests", "pyproject.toml")
    if not worktree:
        archive = subprocess.run(["git", "archive", "HEAD", *paths], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        return
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for sub in paths[:2]:
        shutil.copytree(ROOT / sub, work / sub, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")


def _config(sources: list[str], tests: list[str]) -> str:
    def arr(xs):
        return "[" + ", ".join(json.dumps(x) for x in xs) + "]"
    return "\n".join([
        "", "[tool.mutmut]",
        'source_paths = ["dmlkit/"]',
        f"only_mutate = {arr(sources)}",
        f"pytest_add_cli_args_test_selection = {arr(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
        'process_isolation = "forkserver"',
        "timeout_multiplier = 10.0",
        "timeout_constant = 5.0",
        "",
    ])


def _status(code) -> str:
    from mutmut.stats import status_by_exit_code
    return status_by_exit_code[code]


def run_module(name: str, children: int, worktree: bool = False, resume: bool = False,
               only: tuple[str, ...] = (), time_limit: float | None = None,
               report_only: bool = False, suffix: str = "") -> dict:
    """Run one module (``resume``: go on in its existing copy, rerunning nothing already
    judged; ``only``: mutant-name globs; ``time_limit``: stop after that many seconds, keeping
    what was judged; ``report_only``: read the results of an earlier run; ``suffix``: the
    copy in build/mutation/<name><suffix>, e.g. to check some survivors again beside a full
    run)."""
    sources, tests = MODULES[name]
    work = OUT / f"{name}{suffix}"
    fresh = not ((resume or report_only) and (work / "mutants").exists())
    if fresh:
        _copy_tree(work, worktree)
        rewritten = sum(_undecorate(work / s) for s in sources)
        with open(work / "pyproject.toml", "a") as f:
            f.write(_config(sources, [t for t in tests if (work / t).exists()]))
        (work / "rewritten.txt").write_text(str(rewritten))
    marker = work / "rewritten.txt"
    rewritten = int(marker.read_text()) if marker.exists() else None
    tests = [t for t in tests if (work / t).exists()]
    # no PYTHONPATH: mutmut puts mutants/ first itself (a PYTHONPATH to it leaves the
    # stats run without a covering test)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    rc = None
    if not report_only:
        with open(work / "mutmut.log", "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children",
                                     str(children), *only], cwd=work, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=time_limit)
            except subprocess.TimeoutExpired:
                # mutmut saves each verdict as it comes: stop it and its workers (SIGINT is
                # ignored by a job started in the background)
                os.killpg(proc.pid, signal.SIGTERM)
                rc = proc.wait()
    wall = time.time() - t0
    codes = {}
    for meta in (work / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    counts: dict[str, int] = {}
    survivors = []
    for mutant, code in sorted(codes.items()):
        status = _status(code)
        if status in ("survived", "no tests") and mutant in EQUIVALENT:
            status = "equivalent"
        elif status in ("survived", "no tests") and mutant in KILLED_OUTSIDE:
            status = "killed outside"
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests"):     # no test covers it: a survivor too
            survivors.append(mutant)
    show = ("import sys; from mutmut.__main__ import find_mutant, get_diff_for_mutant\n"
            "for name in sys.argv[1:]:\n"
            "    print('#', name); print(get_diff_for_mutant(name, path=find_mutant(name).path))")
    with open(work / "survivors.diff", "w") as f:
        subprocess.run([sys.executable, "-c", show, *survivors], cwd=work, env=env, stdout=f,
                       stderr=subprocess.STDOUT)
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("timeout", 0) + counts.get("killed outside", 0)
    # the score is over the mutants judged: not those left unchecked (a time limit) nor the
    # equivalent ones; a mutant no test covers ("no tests") counts as a survivor
    judged = total - counts.get("equivalent", 0) - counts.get("not checked", 0)
    report = {
        "module": name, "sources": sources, "tests": tests, "rc": rc,
        "date": datetime.date.today().isoformat(), "wall_s": round(wall),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "decorated_functions_rewritten": rewritten, "total": total,
        "checked": total - counts.get("not checked", 0), "counts": counts,
        "score": round(100 * killed / judged, 1) if judged else None,
        # listed as equivalent but killed: the entry names another mutant now (an edit above
        # it renumbered the function's mutants), its reason belongs to a neighbour
        "killed_equivalents": sorted(m for m, code in codes.items()
                                     if m in EQUIVALENT and _status(code) == "killed"),
        "stale_equivalents": sorted(m for m in EQUIVALENT
                                    if m.split(".x")[0] in {s[:-3].replace("/", ".")
                                                            for s in sources}
                                    and m not in codes),
        "survivors": survivors,
    }
    (work / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", default=["similarity", "retrieval"],
                    help=f"any of: {', '.join(MODULES)}")
    ap.add_argument("--children", type=int, default=2, help="mutants run at once")
    ap.add_argument("--worktree", action="store_true",
                    help="mutate the working tree as it is, not the last commit")
    ap.add_argument("--resume", action="store_true",
                    help="go on in the existing copy: only mutants not judged yet")
    ap.add_argument("--only", nargs="+", default=(),
                    help="mutant-name globs, e.g. 'dmlkit.evaluate.retrieval.x__ordered_topk*'")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds per module; stops there and reports what was judged")
    ap.add_argument("--report", action="store_true", help="only read an earlier run's results")
    ap.add_argument("--suffix", default="", help="work in build/mutation/<module><suffix>")
    ap.add_argument("--list", action="store_true", help="print the modules and their tests")
    args = ap.parse_args(argv)
    if args.list:
        for name, (sources, tests) in MODULES.items():
            tests = [t for t in tests if (ROOT / t).exists()]
            print(f"{name:17} {' '.join(sources)}  <-  {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown modules {unknown}; --list shows them")
    print("module            mutants checked killed timeout survived no-tests equivalent "
          "score   wall")
    for name in args.modules:
        r = run_module(name, args.children, args.worktree, args.resume, tuple(args.only),
                       args.time_limit, args.report, args.suffix)
        c = r["counts"]
        print(f"{name:17} {r['total']:7} {r['checked']:7} {c.get('killed', 0):6} "
              f"{c.get('timeout', 0):7} {c.get('survived', 0):8} {c.get('no tests', 0):8} "
              f"{c.get('equivalent', 0):10} {r['score']}%  {r['wall_s']} s", flush=True)
        other = {k: v for k, v in c.items() if k not in (
            "killed", "timeout", "survived", "no tests", "equivalent", "not checked")}
        if other:
            print(f"  also: {other}", flush=True)
        for m in r["stale_equivalents"]:
            print(f"  EQUIVALENT lists {m}, which this run did not produce", flush=True)
        for m in r.get("killed_equivalents", ()):
            print(f"  EQUIVALENT lists {m}, which a test killed (renumbered?)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
