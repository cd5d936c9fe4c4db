# %% [markdown]
# # 08 · Evaluation metrics: what each one measures
#
# The test set is both the queries and the database (the query itself excluded), classes unseen
# in training; embeddings are compared by cosine similarity. `dmlkit.evaluate` computes, exactly:
#
# | metric | definition |
# |---|---|
# | Recall@K (R@K) | share of queries with at least one same-class item among their $K$ nearest neighbours |
# | R-precision | $R$ = number of other same-class items; share of same-class items among the top $R$ |
# | MAP@R | $\frac1R \sum_{i\le R} P@i \cdot \mathrm{rel}_i$ (Musgrave et al. 2020) |
# | NMI | k-means with $K$ = number of classes; $\frac{2\,I(\Omega; C)}{H(\Omega) + H(C)}$ |
# | F1 | pair counting over the same clustering: $P = TP/(TP+FP)$, $R = TP/(TP+FN)$, $F_1 = 2PR/(P+R)$ |
# | VRF | one positive and `neg` negatives per query: success when the positive is the most similar (N-pair paper, neg = 1, 71) |
# | CMC@k, mAP | re-identification: rank of the first correct match, and mean average precision over the whole ranking |
#
# Ranking ties are broken by database index, so every number is deterministic.

# %% tags=["parameters"]
SEED = 0
N_CLASSES = 20               # synthetic sweeps: classes, points per class, dimension
PER_CLASS = 12
DIM = 32
SPREADS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]      # distance between the modes of a class
NOISES = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]     # within-class noise (one mode per class)
GLYPH_CLASSES = 20           # retrieval gallery: unseen glyph classes
GLYPH_IMAGES = 10
GALLERY_QUERIES = 6
GALLERY_K = 6
SOLUTIONS = False            # fill in the reference solutions of the exercises

# %%
from dmlkit import notebook
nb = notebook.setup("08_evaluation_metrics", seed=SEED)

# %%
import numpy as np
import matplotlib.pyplot as plt

from dmlkit import data, evaluate, exercises, plotting, tables, tasks

# %% [markdown]
# ## A toy example, every metric
#
# Twelve 2-D points of three classes, small enough to check by hand.

# %% tags=["nbval-check-output"]
toy_x = np.array([[1.0, 0.1], [0.9, 0.3], [1.0, -0.2], [0.7, 0.7],
                  [0.1, 1.0], [-0.2, 1.0], [0.4, 0.9], [0.95, 0.2],
                  [-1.0, -0.1], [-0.8, -0.6], [-0.9, 0.4], [0.2, -1.0]])
toy_y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
toy = evaluate.evaluate(toy_x, toy_y, metrics=evaluate.METRICS, ks=(1, 2, 4, 8), vrf_negs=(1,),
                        cmc_ranks=(1, 5), seed=0)
tables.metrics_table({"value": toy}, short=False)

# %%
fig, ax = plt.subplots(figsize=(4.5, 4.5))
for c, marker in zip(range(3), "o^s"):
    sel = toy_y == c
    ax.scatter(toy_x[sel, 0], toy_x[sel, 1], marker=marker, s=60, label=f"class {c}")
for i, (x, y) in enumerate(toy_x):
    ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
ax.set_aspect("equal")
ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
ax.set(title="toy embeddings", xlabel="$x_1$", ylabel="$x_2$")
nb.save_fig("toy", fig)
plt.show()

# %% [markdown]
# **Checked against independent references.** The test-suite recomputes every one of these
# numbers with per-query loops in float64 (`tests/naive/metrics.py`); `dmlkit.evaluate` itself is
# chunked, exact, and fast enough for the 60,502 SOP test images. Here, one cross-check with
# scikit-learn: NMI of the k-means clustering behind NMI and F1 (run on the L2-normalised points,
# as `evaluate` does).

# %%
from sklearn.metrics import normalized_mutual_info_score

toy_unit = (toy_x / np.linalg.norm(toy_x, axis=1, keepdims=True)).astype(np.float32)
toy_clusters = evaluate.kmeans(toy_unit, n_clusters=3, seed=0)
sklearn_nmi = normalized_mutual_info_score(toy_y, toy_clusters)
assert np.isclose(toy["nmi"], sklearn_nmi)
nb.record(toy_embeddings=toy_x, toy_labels=toy_y, toy_metrics=toy, toy_clusters=toy_clusters)
print("k-means clusters of the toy points:", toy_clusters)
print(f"NMI: dmlkit.evaluate {toy['nmi']:.4f}, scikit-learn {sklearn_nmi:.4f}")

# %% [markdown]
# ### Your turn: the metrics from a distance matrix
#
# **Exercise 1 (implement, ~10 min).** Write `recall_at_k(D, labels, k)`: `D` is the $(N, N)$ matrix of distances between
# the items, every item is a query and its database is the $N - 1$ *other* items, ranked by increasing distance with ties
# broken by index (lowest first). Return the share of queries with an item of their class among their $k$ nearest, over
# the queries whose class has another item. The check compares with `evaluate.retrieval_metrics` on the embeddings behind
# `D` (one class, lone queries, ties, $k$ beyond the database); `exercises.hint("recall_at_k", 1)` if stuck.

# %%
def recall_at_k(D, labels, k):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    recall_at_k = exercises.solution("recall_at_k")
exercises.check("recall_at_k", recall_at_k)

# %% [markdown]
# **Exercise 2 (implement, ~15 min).** Write `map_at_r(D, labels)`: for a query with $R$ other items of its class,
# $\frac1R \sum_{i \le R} P@i \cdot \mathrm{rel}_i$ over its first $R$ neighbours (same ranking as above), averaged over the
# queries with $R > 0$.

# %%
def map_at_r(D, labels):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    map_at_r = exercises.solution("map_at_r")
exercises.check("map_at_r", map_at_r)

# %% [markdown]
# **Exercise 3 (implement, ~10 min).** The clustering behind NMI and F1 starts from k-means++ seeds
# (`evaluate.kmeans_plusplus`). Write one step, `kmeanspp_step(X, centres, u)`: with $D(x)^2$ the squared distance of
# point $x$ to its *nearest* chosen centre (`centres`: the indices chosen so far), draw the next centre with probability
# $D^2 / \sum D^2$ by inverse transform: return the index of the first point whose cumulative $D^2$ (in index order)
# reaches $u \sum D^2$, for the given $u \in (0, 1)$.

# %%
def kmeanspp_step(X, centres, u):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    kmeanspp_step = exercises.solution("kmeanspp_step")
exercises.check("kmeanspp_step", kmeanspp_step)

# %% [markdown]
# ## Recall@1 and MAP@R when a class splits into clumps
#
# A class made of several tight but scattered clumps: a bird photographed from the front and from
# the back, a car model in two colours. Synthetic embeddings (`tasks.multimodal_clusters`): each
# class is 3 tight modes at distance `spread` from the class centre, and the sweep below moves the
# modes apart.
#
# **Exercise 4 (predict, ~5 min).** Before running the sweep: which metric stays at 1.0 all along,
# `"recall@1"`, `"map@r"` or `"both"`?

# %%
stays_at_one = ...  # your prediction

# %%
if SOLUTIONS:
    stays_at_one = exercises.solution("recall_saturates")
exercises.check("recall_saturates", stays_at_one)

# %% [markdown]
# Recall@1 only asks whether the **single nearest** neighbour is of the right class, and every
# image's twin is in its own clump: Recall@1 stays at 1.0 (100 %). MAP@R asks whether **all** $R$
# same-class images come first, so it sees the scatter: MAP@R and R-precision fall from 100 % as
# the modes move apart (the table below). Recall@1 cannot tell these embeddings apart.

# %%
def sweep_table(sweep, knob):
    """A metric sweep for reading: the knob as it is, the metrics in %."""
    shown = tables.text_table(sweep, formats={knob: "{:g}"}, default=tables.percent)
    return shown.rename(columns={c: tables.metric_label(c) for c in shown.columns if c != knob})


sweep_spread = tasks.metric_sweep(
    SPREADS, lambda v: tasks.multimodal_clusters(N_CLASSES, PER_CLASS, DIM, modes=3,
                                                 mode_spread=v, noise=0.1, seed=SEED),
    seed=SEED, name="spread")
sweep_noise = tasks.metric_sweep(
    NOISES, lambda v: tasks.multimodal_clusters(N_CLASSES, PER_CLASS, DIM, modes=1,
                                                noise=v, seed=SEED),
    seed=SEED, name="noise")
sweep_table(sweep_spread, "spread")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, (df, x) in zip(axes, ((sweep_spread, "spread"), (sweep_noise, "noise"))):
    for m, lw in (("recall@1", 4), ("recall@4", 1.5), ("map@r", 1.5), ("r_precision", 1.5), ("nmi", 1.5)):
        ax.plot(df[x], 100 * df[m], marker="o", lw=lw, ls="--" if m == "recall@4" else "-",
                label=tables.metric_name(m))
    ax.set_xlabel(f"{x} ({'3 modes per class' if x == 'spread' else 'one Gaussian per class'})")
axes[1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
axes[0].set_ylabel("metric (%)")
axes[0].set_title("modes of a class drift apart")
axes[1].set_title("classes get noisier")
nb.save_fig("saturation", fig)
sweep_table(sweep_noise, "noise")

# %% [markdown]
# With one Gaussian per class (right), no metric rises as the noise grows, but Recall@1 stays at or
# near 100 % after MAP@R has started to fall (the table above). On these synthetic embeddings Recall@1
# saturates where MAP@R still separates them, one of the reasons Musgrave et al. 2020 give for
# reporting MAP@R; whether the papers' R@1 differences shrink in the same way is not measured here.

# %% [markdown]
# ## All metrics on real images, and a retrieval gallery
#
# Glyph test classes, embedded by their **raw pixels** (the baseline any learned embedding must
# beat). Each row of the gallery is a query (black frame) and its nearest neighbours, framed green
# when of the query's class and red otherwise; the first column agrees with Recall@1.

# %%
glyphs = data.load_dataset("glyphs", "test", num_classes=GLYPH_CLASSES, num_test_classes=GLYPH_CLASSES,
                           images_per_class=GLYPH_IMAGES)
images = [glyphs[i][0] for i in range(len(glyphs))]
pixels = np.stack([im.numpy().ravel() for im in images])
labels = np.asarray(glyphs.labels)
glyph_metrics = evaluate.evaluate(pixels, labels, metrics=evaluate.METRICS, ks=(1, 2, 4, 8), seed=SEED)
tables.metrics_table({"raw pixels": glyph_metrics}, short=False)

# %% [markdown]
# Reading the rows: `precision@K` is the share of same-class items among the $K$ nearest neighbours (not Recall@K's "at
# least one"). **`vrf_neg1` and `vrf_neg71` are the verification accuracy of the N-pair paper (Sohn 2016) with 1 and with 71
# negatives**: each query gets one random same-class item and `neg` random other-class items, and succeeds when the
# same-class item is the most similar of them; chance is $1/(\text{neg}+1)$, i.e. 50 % and 1.4 % (`evaluate`'s default
# `vrf_negs=(1, 71)`, the paper's two settings; a query needs at least `neg` items of other classes).
# `cmc@k` and `map` are the re-identification metrics (Wang et al. 2019a, on MARS): with the queries searching the same set, CMC@k is
# Recall@k, and `map` averages precision over the whole ranking, where MAP@R stops after $R$.

# %%
gallery = plotting.retrieval_gallery(pixels, labels, queries=GALLERY_QUERIES, k=GALLERY_K, seed=SEED)
fig = plotting.plot_retrieval_gallery(images, gallery)
nb.save_fig("gallery", fig)
plt.show()

# %%
nb.record(sweep_spread=sweep_spread.to_dict(orient="list"),
          sweep_noise=sweep_noise.to_dict(orient="list"),
          glyph_pixel_metrics=glyph_metrics,
          gallery_queries=gallery.query, gallery_neighbours=gallery.neighbours,
          gallery_correct=gallery.correct, glyph_labels=labels)
print(f"spread sweep: R@1 {sweep_spread['recall@1'].min():.2f}..{sweep_spread['recall@1'].max():.2f}, "
      f"MAP@R {sweep_spread['map@r'].min():.2f}..{sweep_spread['map@r'].max():.2f}")
