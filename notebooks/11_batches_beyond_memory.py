# %% [markdown]
# # 11 · Batches beyond memory: exact tiled pair losses
#
# Every pair-based loss of dmlkit is a function of the similarity matrix $S$ ($B \times M$), and
# the dense path holds $S$ and several buffers of its size: $O(BM)$ memory, about 20 bytes per
# pair for multi-similarity (`dmlkit.scaling.BYTES_PER_PAIR`, measured at $B = 4096$; so about
# 5.4 GB at $B = 16{,}384$ and 86 GB at $65{,}536$). By Theorem 3.1 the
# gradient only needs the pair weights $W_{ij} = \mp\,\partial L / \partial S_{ij}$, and those are
# functions of $S_{ij}$ and a few **per-row statistics** (hardest positive / negative,
# log-sum-exp accumulators, counts, sorted positive thresholds). So a loss can be computed in
# tiles $S_{IJ} = Q_I R_J^\top$ of at most `chunk_size` rows and columns:
#
# 1. stream the tiles once and accumulate the row statistics (no autograd),
# 2. read the value from them,
# 3. in the backward pass recompute each tile (as flash attention does), form
#    $G_{IJ} = \partial L/\partial S_{IJ}$ from $S_{IJ}$ and the statistics, and accumulate
#    $dQ_I \mathrel{+}= G_{IJ} R_J$, $dR_J \mathrel{+}= G_{IJ}^\top Q_I$.
#
# Peak memory is $O(\text{chunk}^2 + (B + M) D)$, and the result is the dense loss and gradient up
# to summation order (float64: $10^{-15}$; the tests require $10^{-10}$ for every covered loss).
#
# ```python
# loss = losses.build("multi_similarity", chunk_size=4096)    # tiles of <= 4096 x 4096
# loss = losses.build("multi_similarity", chunk_size="auto")  # dense while it fits the budget
# python -m dmlkit train --chunk-size 4096 ...                # the same for training
# ```

# %% tags=["parameters"]
SEED = 0
LOSS = "multi_similarity"     # any loss with a tile formulation (see dmlkit.losses.tiling)
ANGULAR_ALPHA = 40.0          # the angular loss's angle bound (degrees)
SWEEP_LOSSES = ["multi_similarity", "angular"]   # losses of dmlkit.scaling.CASES to time
SIZES = [256, 512, 1024]      # batch sizes of the time / memory sweep (one process per method)
DIM = 64                      # embedding dimension of the sweep
CHUNK = 256                   # tile side of the sweep's tiled runs
RUN_PML = True                # also time pytorch-metric-learning (same loss, proven equal)
WEIGHT_B = 48                 # the batch whose pair weights are compared
WEIGHT_CHUNK = 10             # tile side there (does not divide B)
RESULTS_CSV = None            # a CSV of benchmarks/large_batch.py --out to tabulate (optional)
SOLUTIONS = False             # fill in the reference solutions of the exercises

# %%
from dmlkit import notebook
nb = notebook.setup("11_batches_beyond_memory", seed=SEED)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from dmlkit import exercises, plotting, scaling, tables
from dmlkit.losses import tiling

# %% [markdown]
# **Exercise 1 (predict, ~5 min).** How many GiB does ONE dense float32 similarity matrix take at
# $B = M = 65{,}536$ (a single buffer, not the loss's several)?

# %%
dense_gib = ...  # your prediction, in GiB

# %%
if SOLUTIONS:
    dense_gib = exercises.solution("dense_memory_gib")
exercises.check("dense_memory_gib", dense_gib)

# %% [markdown]
# ## The tiled weights are the dense ones
#
# The weight view (`weights.pair_weights`) of a tiled loss reads $\partial L / \partial S$ from the
# tiles the engine uses. On a float64 batch with tiles that do not divide $B$, they coincide with
# the dense autograd weights, and so do the loss and its gradient.

# %%
g = torch.Generator().manual_seed(SEED)
emb = torch.randn(WEIGHT_B, 16, generator=g, dtype=torch.float64)
labels = torch.arange(WEIGHT_B) % 6
W_dense, W_tiled, check = tiling.dense_agreement(LOSS, emb, labels, WEIGHT_CHUNK)
nb.record(**{f"weights_{k}": v for k, v in check.items()})
pd.Series({k: tables.scientific(v) for k, v in check.items()}).to_frame("tiled vs dense")

# %%
pos = (labels[:, None] == labels[None, :]) & ~torch.eye(WEIGHT_B, dtype=torch.bool)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
for ax, (title, W) in zip(axes[:2], [("dense W", W_dense), (f"tiled W (chunk {WEIGHT_CHUNK})",
                                                           W_tiled)]):
    im = ax.imshow(W.numpy(), cmap="viridis")
    ax.set(title=title, xlabel="j (reference)", ylabel="i (query)")
    ax.grid(False)   # no grid lines across the heatmap
    fig.colorbar(im, ax=ax, fraction=0.046, label="weight $W_{ij}$")
for kind, mask, marker in (("positive", pos, "o"), ("negative", ~pos, "x")):
    axes[2].scatter(W_dense[mask].numpy(), W_tiled[mask].numpy(), s=8, marker=marker,
                    label=kind)
top = float(W_dense.max())
axes[2].plot([0, top], [0, top], color="grey", lw=0.8)
axes[2].set(xlabel="dense weight", ylabel="tiled weight", title="every pair")
axes[2].legend(fontsize="small")
fig.tight_layout()
nb.save_fig("weights", fig)
plt.show()

# %% [markdown]
# ## Your turn: a row's log-sum-exp, one tile at a time
#
# The lifted, N-pair, multi-similarity and angular losses need per row a log-sum-exp over its
# negatives, $\log \sum_k e^{z_k}$, but a tile shows only a few columns at a time. The engine keeps
# per row the running maximum $m$ and the running sum $a = \sum e^{z_k - m}$ over the entries seen
# so far; the row's value is then $m + \log a$ (`dmlkit.losses.tiles.lse_update_`).
#
# **Exercise 2 (implement, ~15 min).** Write `lse_update(m, acc, z)`: the state `m`, `acc` $(r,)$ and
# the next tile `z` $(r, c)$ ($-\infty$ = a masked entry) in, the new `(m, acc)` out. The stream starts
# at $m = -\infty$, $a = 0$, and a row that has seen only $-\infty$ keeps them (no NaN). The check
# streams tiles through your function and compares the state after every tile with dmlkit's
# (a growing maximum, masked tiles, values near 1000, float16).

# %%
def lse_update(m, acc, z):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    lse_update = exercises.solution("lse_update")
exercises.check("lse_update", lse_update)

# %% [markdown]
# ## The angular loss: every positive meets every negative
#
# The angular loss (Wang et al. 2017) couples each positive pair $(a, p)$ with every negative
# $n$ of the anchor through the similarity of the *positive* to the negative:
#
# $$\ell_{ap} = \log\Big(1 + \sum_{n \in N_a} e^{4t(s_{an} + s_{pn}) - 2(1+t)s_{ap}}\Big),
# \qquad t = \tan^2\alpha .$$
#
# Its dense path forms the inner sums of all pairs as one $(B, M) \times (M, M)$ product:
# $O(BM^2)$ work and $(M, M)$ memory. In tiles, each tile also brings the similarities of
# every row's $w$ positives to the tile's columns, $s_{pn}$, and a log-sum-exp per positive
# pair streams over the tiles: $O(BwMD)$ work. The gradient of a term reaches three entries
# of $S$: $s_{ap}$, $s_{an}$ and $s_{pn}$, and the tiled weights are again the dense ones.

# %%
_, _, angular_check = tiling.dense_agreement("angular", emb, labels, WEIGHT_CHUNK,
                                              alpha=ANGULAR_ALPHA)
nb.record(**{f"angular_{k}": v for k, v in angular_check.items()})
pd.Series({k: tables.scientific(v) for k, v in angular_check.items()}).to_frame(
    "angular: tiled vs dense")

# %% [markdown]
# ## Time and memory against B
#
# The benchmark's own functions (`dmlkit.scaling`, which `benchmarks/large_batch.py` runs) at
# small sizes: one process per implementation runs the sizes in ascending order and reports
# the forward + backward time and the growth of its peak resident memory. Dense memory grows as $B^2$; the tiled path's as
# $B \cdot D$ once $B$ exceeds the tile side. The full table (B up to 65,536) is in the README,
# "Batches beyond memory".

# %% [markdown]
# **Exercise 3 (experiment, ~10 min, not graded).** Halve `CHUNK` and re-run the sweep. Before you
# do, write what you expect for the tiled path's time, its peak memory and its values; the check
# cell then tells you what to expect, and the sweep shows what happened.

# %%
chunk_expectation = ...  # your expectation, as a string

# %%
if SOLUTIONS:
    chunk_expectation = exercises.solution("chunk_experiment")
exercises.check("chunk_experiment", chunk_expectation)

# %% tags=["varies"]
rows = []
for name in SWEEP_LOSSES:
    impls = ["dense", "tiled"] + (["pml"] if RUN_PML and scaling.CASES[name][1] else [])
    for impl in impls:
        rows += scaling.run_series(impl, name, SIZES, dim=DIM, chunk=CHUNK)
sweep = pd.DataFrame(rows)[["loss", "impl", "B", "time_s", "peak_mb"]]
nb.record(sweep=sweep.to_dict(orient="records"))
sweep.pivot(index="B", columns=["loss", "impl"], values="time_s").round(3)

# %% tags=["varies"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
colors = {impl: f"C{i}" for i, impl in enumerate(["dense", "tiled", "pml"])}
for (name, impl), part in sweep.groupby(["loss", "impl"]):
    style = dict(marker="o", color=colors[impl], label=f"{name} {impl}",
                 linestyle="-" if name == SWEEP_LOSSES[0] else "--")
    axes[0].plot(part["B"], part["time_s"], **style)
    axes[1].plot(part["B"], part["peak_mb"].clip(lower=1.0), **style)
axes[0].set(ylabel="seconds (forward + backward)", title=f"time per step (D = {DIM})")
axes[1].set(ylabel="peak RSS increase (MB)", title=f"memory growth (tiles of {CHUNK})")
for ax in axes:   # log axes labelled with plain numbers: the batch sizes themselves on x
    plotting.plain_log_axis(ax, "x", SIZES)
    plotting.plain_log_axis(ax, "y")
    ax.set_xlabel("batch size B")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
nb.save_fig("time_memory", fig)
plt.show()

# %% tags=["varies"]
times = sweep.pivot_table(index=["loss", "B"], columns="impl", values="time_s")
for name, part in (times["tiled"] > times["dense"]).groupby(level="loss", sort=False):
    sizes = part.index.get_level_values("B")
    print(f"{name}: tiled slower than dense at B = {list(sizes[part.to_numpy()])}, "
          f"not slower at B = {list(sizes[~part.to_numpy()])} (one timing per size)")

# %% [markdown]
# Which path was faster at these small sizes is printed above: each number is one timing, and on
# a machine shared with other work a timing can move by a factor of ten between runs, so read
# the time panel as an illustration, not a benchmark (`benchmarks/large_batch.py` takes the
# median of repeated runs, interleaved with `--interleave`). The tiled path's advantage is the
# slope of the memory: from the smallest to the largest B the dense path's peak grows several
# times as much as the tiled path's, as the dense buffers grow as $B^2$ (the angular loss's
# dense path also holds $(M, M)$ buffers). The forward pass keeps its first tiles for the
# backward pass (up to `tiling.cache_budget()`, 512 MiB), so here no tile is computed twice.
# With `chunk_size="auto"` a loss stays dense while its estimated buffers fit the budget
# (`dmlkit.losses.tiling.auto_budget()`, 2 GiB by default, `set_auto_budget`) and tiles beyond.

# %%
saved = pd.read_csv(RESULTS_CSV) if RESULTS_CSV and Path(RESULTS_CSV).exists() else None
if saved is None:
    print("no saved results given (RESULTS_CSV); see the README table")
else:
    print(saved.pivot_table(index=["loss", "B", "M"], columns="impl",
                            values=["time_s", "peak_mb"]).round(2).to_string())
