# %% [markdown]
# # 01 · Pairs and triplets: contrastive and triplet losses, margins, mining
#
# Deep metric learning trains an embedding $f$ so that images of the same class are close and images of different classes are
# far apart, *for classes never seen in training*. The two oldest losses look at pairs and at triplets.
#
# **Contrastive loss** (Hadsell et al. 2006, in the form Sohn 2016 uses), for a pair $(i, j)$ at Euclidean distance $d_{ij}$:
#
# $$\ell_{ij} = \mathbb 1[y_i = y_j]\, d_{ij}^2 + \mathbb 1[y_i \ne y_j]\, [m - d_{ij}]_+^2 .$$
#
# Positives are pulled together always; negatives are pushed apart only while they are closer than the margin $m$.
# Wang et al. 2019b (eq. 5) write the same idea with cosine similarities: $\ell_{ij} = (1 - I_{ij})[s_{ij} - \lambda]_+ - I_{ij}\, s_{ij}$.
#
# **Triplet loss** (Hoffer & Ailon 2015; Schroff et al. 2015), for an anchor $a$, a positive $p$ and a negative $n$:
#
# $$\ell_{apn} = [\,d_{ap} - d_{an} + m\,]_+ .$$
#
# It only asks the negative to be farther than the positive *by a margin*: a relative constraint, no absolute target.
# `dmlkit.losses.build("contrastive")` and `build("triplet", mining=...)` compute both densely over a batch.

# %% tags=["parameters"]
SEED = 0
NUM_CLASSES = 60          # glyph training classes
NUM_TEST_CLASSES = 40     # unseen test classes
IMAGES_PER_CLASS = 16
IMAGE_SIZE = 16
DIFFICULTY = 0.3
STEPS = 120               # optimisation steps per training run
GRID = 41                 # resolution of the 2-D loss landscapes
MARGIN = 0.2              # triplet margin (distance form)
SEEDS = (0,)              # seeds of the training comparison
SOLUTIONS = False         # fill in the reference solutions of the exercises

# %%
from dmlkit import notebook
nb = notebook.setup("01_contrastive_and_triplet", seed=SEED)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from dmlkit import data, exercises, losses, miners, pairs, paired, plotting, tables, tasks, train

# %% [markdown]
# ## 1. Margins: loss of one pair versus its distance
#
# For a positive pair the contrastive loss is $d^2$ whatever the margin; for a negative pair it is $[m - d]_+^2$: zero beyond $m$.

# %%
d = torch.linspace(0, 2, 201, dtype=torch.float64)
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.plot(d, d ** 2, "--", color=plotting.POS_COLOR, label="positive pair: $d^2$")
for m in (0.5, 1.0, 1.5):
    ax.plot(d, torch.relu(m - d) ** 2, label=f"negative pair, margin m = {m}")
ax.set_xlabel("distance $d_{ij}$")
ax.set_ylabel("loss of the pair")
ax.set_ylim(0, 2.3)
ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))   # beside the curves
nb.save_fig("contrastive_margins")

# %% [markdown]
# ### Your turn: the masks and the contrastive loss on $S$
#
# A dmlkit loss never loops over pairs: it sees the similarity matrix $S$ ($B \times B$, cosine similarities of the
# L2-normalised embeddings) and two boolean masks, `pos` and `neg`, of the positive and negative pairs.
#
# **Exercise 1 (implement, ~5 min).** Write `pair_masks(labels)`: from labels $(B,)$ return `(pos, neg)`, two $(B, B)$
# bool tensors; `pos[i, j]` when $y_i = y_j$ and $i \ne j$, `neg[i, j]` when $y_i \ne y_j$. A sample paired with itself is in
# neither. The next cell checks your function on several label sets (one class, singletons, a single sample) against
# `dmlkit.similarity.pair_masks`; stuck? `exercises.hint("pair_masks", 1)` (levels 1-3).

# %%
def pair_masks(labels):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    pair_masks = exercises.solution("pair_masks")
exercises.check("pair_masks", pair_masks)

# %% [markdown]
# **Exercise 2 (implement, ~10 min).** Write `contrastive_loss(S, pos, neg, lam=0.5)`, the similarity form above: each
# positive pair adds $-s_{ij}$, each negative pair $[s_{ij} - \lambda]_+$, and the loss is the **mean** over all the
# positive and negative pairs (ordered: $(i, j)$ and $(j, i)$ both count). A batch without any positive pair or without
# any negative pair gives 0, as a tensor that still depends on $S$. Return a 0-dim tensor that autograd can differentiate.
# The check compares value **and** $\partial L / \partial S$ with `losses.build("contrastive", form="similarity")` on random,
# degenerate, tied and float16 batches, and names the usual mistakes.

# %%
def contrastive_loss(S, pos, neg, lam=0.5):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    contrastive_loss = exercises.solution("contrastive_loss")
exercises.check("contrastive_loss", contrastive_loss)

# %% [markdown]
# ## 2. Where pairs and triplets push and pull: 2-D loss landscapes
#
# Five fixed points of three classes in the plane and one **moving point of class 0** (blue). For every position of the moving
# point we compute the loss of the whole batch and its gradient with respect to that point (`pairs.loss_landscape_2d`;
# `normalize=False` so the plane, not only the angle, matters). Arrows show minus the gradient: where gradient descent moves it.

# %%
toy_points = torch.tensor([[-1.0, 0.3], [-0.5, -0.6], [1.0, 0.5], [0.7, -0.7], [0.0, 1.2]], dtype=torch.float64)
toy_labels = torch.tensor([0, 0, 1, 1, 2])
toy_losses = {
    "contrastive (m = 1)": losses.build("contrastive", margin=1.0, reduction="sum", normalize=False),
    "triplet (m = 0.5)": losses.build("triplet", margin=0.5, reduction="sum", normalize=False),
}
fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained")
colors = np.array(["tab:blue", "tab:orange", "tab:green"])
for ax, (name, loss) in zip(axes, toy_losses.items()):
    land = pairs.loss_landscape_2d(loss, toy_points, toy_labels, moving_label=0, lim=2.0, n=GRID)
    cs = ax.contourf(land["x"], land["y"], land["loss"], levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, shrink=0.8, label="batch loss")
    step = max(1, GRID // 14)
    X, Y = np.meshgrid(land["x"], land["y"])
    ax.quiver(X[::step, ::step], Y[::step, ::step], -land["grad_x"][::step, ::step], -land["grad_y"][::step, ::step],
              color="white", alpha=0.8)
    ax.scatter(toy_points[:, 0], toy_points[:, 1], c=colors[toy_labels], s=90, edgecolors="k", zorder=3)
    ax.set(title=name, xlabel="$x_1$ of the moving point", ylabel="$x_2$")
    ax.set_aspect("equal")
fig.suptitle("batch loss and where descent moves the moving point of class 0 (blue)")
nb.save_fig("landscapes")

# %% [markdown]
# The contrastive landscape is a bowl around the blue positives with **repelling disks of radius $m$** around the negatives:
# outside those disks a negative exerts no force. The triplet landscape is **flat wherever every triplet is satisfied** (the moving
# point is closer to its positives than to any negative by the margin): no gradient at all. A satisfied (easy) triplet gives a
# triplet loss nothing to learn from, the motivation for mining.
#
# ## 3. Easy, semi-hard and hard triplets
#
# For an anchor $a$, positive $p$ and negative $n$ with $T = -d$ (higher is more similar), a triplet is
#
# * **easy** when $d_{an} \ge d_{ap} + m$: zero loss, no gradient;
# * **semi-hard** (FaceNet) when $d_{ap} < d_{an} < d_{ap} + m$: the negative is farther than the positive but inside the margin;
# * **hard** when $d_{an} \le d_{ap}$: the negative is closer than the positive.
#
# **Exercise 3 (predict, ~5 min).** An anchor with $d_{ap} = 0.5$ and three negatives at $d_{an} = 0.3$, $0.6$ and $0.8$;
# margin $m = 0.2$. Before reading on, write the category of each triplet (`"easy"`, `"semi-hard"` or `"hard"`).

# %%
triplet_categories = ...  # your prediction: a list of three categories

# %%
if SOLUTIONS:
    triplet_categories = exercises.solution("triplet_categories")
exercises.check("triplet_categories", triplet_categories)

# %% [markdown]
# `pairs.triplet_table` lists every triplet of a small batch; `losses.triplet.triplet_counts` counts them without enumerating
# (sorted prefix counts). They agree:

# %% tags=["nbval-check-output"]
from dmlkit.losses.triplet import triplet_counts

g = torch.Generator().manual_seed(0)
emb16 = torch.randn(16, 4, generator=g, dtype=torch.float64)
lab16 = torch.arange(16) % 4
table16 = pairs.triplet_table(emb16, lab16, margin=0.2)
T = losses.build("triplet").scores(losses.make_batch(emb16, lab16))
b16 = losses.make_batch(emb16, lab16)
counts = {"all (non-zero loss)": "all", "semi-hard": "semihard", "hard": "hard"}
print("valid triplets:", len(table16))
for label, mining in counts.items():
    enumerated = {"all": (table16.category != "easy").sum(), "semihard": (table16.category == "semi-hard").sum(),
                  "hard": (table16.category == "hard").sum()}[mining]
    kept = int(triplet_counts(T, b16.pos, b16.neg, 0.2, mining)[2])
    print(f"{label:>20}: enumerated {enumerated:4d}   triplet_counts {kept:4d}")

# %% [markdown]
# **Exercise 4 (implement, ~15 min).** Write `triplet_loss(S, pos, neg, margin=0.2)` in the similarity form: over every
# valid triplet $(i, p, n)$ (`pos[i, p]` and `neg[i, n]`) the loss $[s_{in} - s_{ip} + m]_+$, averaged over the triplets with a
# **non-zero** loss (dmlkit's default reduction), 0 when there is none. A $(B, B, B)$ tensor is fine at these sizes; dmlkit
# itself counts instead (`triplet_counts`). Checked against `losses.build("triplet", form="similarity")`.

# %%
def triplet_loss(S, pos, neg, margin=0.2):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    triplet_loss = exercises.solution("triplet_loss")
exercises.check("triplet_loss", triplet_loss)

# %%
task = tasks.image_task("glyphs", num_classes=NUM_CLASSES, num_test_classes=NUM_TEST_CLASSES,
                        images_per_class=IMAGES_PER_CLASS, size=IMAGE_SIZE, difficulty=DIFFICULTY)
display(task)

# %%
net0 = tasks.build_net(embedding_dim=32, seed=SEED)
batch_idx = torch.as_tensor(next(iter(data.PKSampler(task.y.numpy(), P=8, K=4, seed=SEED))))
run0 = train.train_embedding(task, "triplet", loss_params={"margin": MARGIN}, steps=STEPS // 2, seed=SEED)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
shares = {}
for ax, (title, net) in zip(axes, (("untrained network", net0), (f"after {STEPS // 2} triplet steps", run0.model))):
    tab = pairs.triplet_table(tasks.embed(net, task.X[batch_idx]), task.y[batch_idx], margin=MARGIN)
    for cat, color in (("easy", plotting.POS_COLOR), ("semi-hard", "#7570b3"), ("hard", plotting.NEG_COLOR)):
        ax.hist(tab.loc[tab.category == cat, "t_an"] - tab.loc[tab.category == cat, "t_ap"],
                bins=40, alpha=0.7, color=color, label=cat)
    ax.axvline(-MARGIN, color="k", ls=":")
    ax.axvline(0, color="k", ls="--")
    ax.set_xlabel("$d_{ap} - d_{an}$  (loss is $[d_{ap} - d_{an} + m]_+$)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    shares[title] = tab.category.value_counts(normalize=True).reindex(["easy", "semi-hard", "hard"]).fillna(0)
axes[0].set_ylabel("triplets")
nb.save_fig("triplet_categories")
nb.record(easy_share_untrained=float(shares["untrained network"]["easy"]),
          easy_share_trained=float(shares[f"after {STEPS // 2} triplet steps"]["easy"]))
tables.text_table(pd.DataFrame(shares), default=tables.percent).rename(columns=lambda c: f"{c} (%)")

# %% [markdown]
# For the untrained network almost no triplet of this batch is easy (its embeddings of different glyphs point in nearly the
# same direction: notebook 03, section 4). After a little training most triplets of the same batch are easy: they carry no
# gradient, and averaging over *all* triplets dilutes the few informative ones.
#
# ## 4. Miners: which pairs each one keeps
#
# `dmlkit.miners` expresses mining as boolean masks over the similarity matrix. On the same batch (trained network):

# %%
b = losses.make_batch(tasks.embed(run0.model, task.X[batch_idx]), task.y[batch_idx])
mined = {}
for name, params in {"none": {}, "semihard": {"margin": 0.1}, "hard": {}, "vthm": {"epsilon": 0.1},
                     "distance_weighted": {"dim": 32, "generator": torch.Generator().manual_seed(SEED)}}.items():
    pk, nk = miners.build(name, **params)(b.S, b.pos, b.neg)
    mined[name] = {"positive pairs kept": float(pk.sum() / b.pos.sum()), "negative pairs kept": float(nk.sum() / b.neg.sum())}
tables.text_table(pd.DataFrame(mined).T, default=tables.percent).rename(columns=lambda c: f"{c} (%)")

# %% [markdown]
# ## 5. Training with each variant
#
# The same small CNN trained with the contrastive loss and with the triplet loss over all / semi-hard / hard / batch-hard triplets
# (`tasks.run_ablation`, which also logs the share of triplets each step keeps). Scores are on the **unseen** test classes.

# %%
VARIANTS = {
    "contrastive": ("contrastive", {"margin": 1.0}),
    "triplet (all)": ("triplet", {"margin": MARGIN}),
    "triplet semi-hard": ("triplet", {"margin": MARGIN, "mining": "semihard"}),
    "triplet hard": ("triplet", {"margin": MARGIN, "mining": "hard"}),
    "triplet batch-hard": ("triplet", {"margin": MARGIN, "mining": "batch_hard"}),
}
histories = {}
ablation = tasks.run_ablation(task, VARIANTS, seeds=SEEDS, steps=STEPS, track_mining=True, histories=histories)
summary = tasks.summarize(ablation, metrics=("untrained_map@r", "recall@1", "map@r"))
tables.summary_table(summary, metrics=("untrained_map@r", "recall@1", "map@r"))

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), layout="constrained")
for label in ("triplet (all)", "triplet semi-hard", "triplet hard"):
    h = histories[(label, SEEDS[0])]
    axes[0].plot(h["step"], h["triplets_kept"], marker="o", ms=3, label=label)
axes[0].set_xlabel("step")
axes[0].set_ylabel("share of valid triplets used")
axes[0].legend(fontsize="small")
axes[0].set_title("mining during training")
(100 * summary["map@r_mean"]).plot.barh(ax=axes[1], xerr=100 * summary["map@r_std"], color="#7570b3")
axes[1].axvline(100 * summary["untrained_map@r_mean"].mean(), color="k", ls=":", label="untrained")
axes[1].set(xlabel="MAP@R on unseen classes (%)", ylabel="loss", title="after training")
axes[1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
nb.save_fig("training")
h_all = histories[("triplet (all)", SEEDS[0])]
nb.record(untrained_map_at_r=float(ablation["untrained_map@r"].mean()),
          **{f"map_at_r[{k}]": float(v) for k, v in summary["map@r_mean"].items()},
          **{f"recall_at_1[{k}]": float(v) for k, v in summary["recall@1_mean"].items()},
          triplets_kept_first=float(h_all["triplets_kept"].iloc[0]),
          triplets_kept_last=float(h_all["triplets_kept"].iloc[-1]),
          semihard_kept_mean=float(ablation.loc[ablation.loss == "triplet semi-hard", "triplets_kept"].mean()))

# %% [markdown]
# Every variant has a higher MAP@R than the untrained network on classes it never saw (the dotted line). The share of triplets
# with a non-zero loss falls during training (left panel): the loss over "all" triplets is then an average over mostly easy
# ones, which is what semi-hard and hard mining, and the pair weightings of notebooks 03-05, try to fix.
#
# Do the variants differ from each other? Each against the triplet loss over all triplets, paired by seed with a 95 % t
# interval over the `len(SEEDS)` seeds. With the default single seed there is no interval, and the verdicts say so: one seed
# cannot rank these variants, whatever the ordering of the bars (notebook 04 compares losses over several seeds).

# %%
verdict_lines = []
verdicts = paired.report(ablation, baseline="triplet (all)", metrics=("recall@1", "map@r"), run="loss", scale=100,
                         printer=verdict_lines.append)
display(verdicts)
print("\n".join(verdict_lines))
nb.record(**paired.verdict_record(verdicts))
