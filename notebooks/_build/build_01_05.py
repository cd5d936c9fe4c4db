"""Generate notebooks 01-05 (the source of truth for editing them).

    .venv/bin/python notebooks/_build/build_01_05.py [01 03 ...]   # writes notebooks/0[1-5]_*.ipynb
    .venv/bin/python notebooks/_build/build_01_05.py 04 --markdown  # prose edits only, keeps outputs
    .venv/bin/python -c "from dmlkit.nbrun import run_all; run_all(only=['01','02','03','04','05'])"

The generated notebooks have no outputs; run them (second line) before committing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent

# the glyph task every training experiment of 01-05 uses (small: seconds per run on a CPU)
TASK_PARAMS = '''NUM_CLASSES = 60          # glyph training classes
NUM_TEST_CLASSES = 40     # unseen test classes
IMAGES_PER_CLASS = 16
IMAGE_SIZE = 16
DIFFICULTY = 0.3
STEPS = 120               # optimisation steps per training run
'''

TASK_CELL = '''task = analysis.image_task("glyphs", num_classes=NUM_CLASSES, num_test_classes=NUM_TEST_CLASSES,
                          images_per_class=IMAGES_PER_CLASS, size=IMAGE_SIZE, difficulty=DIFFICULTY)
task'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, parameters: bool = False):
    cell = new_code_cell(text.strip("\n"))
    if parameters:
        cell.metadata["tags"] = ["parameters"]
    return cell


def setup_cell(stem: str, extra: str = "") -> object:
    return code(f'''from dmlkit import notebook
nb = notebook.setup("{stem}", seed=SEED)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from dmlkit import analysis, data, losses, miners, plotting, weights
{extra}''')


def write(stem: str, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    path = NOTEBOOKS / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


# =============================================================================================
# 03 unified weight view


def nb03() -> list:
    stem = "03_unified_weight_view"
    return [
        md(r"""
# 03 · The unified weight view (seed 004, Theorem 3.1)

Almost every pair-based loss is a function $H(S, y)$ of the similarity matrix $S$, $s_{ij} = \langle f_i, f_j\rangle$.
Wang et al. (2019) show that at any iteration such a loss is **gradient-equivalent** to a weighted sum of similarities:

$$
F(S) = \sum_i \Big[\sum_{k\in\mathcal N_i} w_{ik}\, s_{ik} \;-\; \sum_{j \in \mathcal P_i} w_{ij}\, s_{ij}\Big],
\qquad
w_{ij} = -\frac{\partial H}{\partial s_{ij}}\ (\text{positive}),\quad
w_{ij} = +\frac{\partial H}{\partial s_{ij}}\ (\text{negative}),
$$

with the weights held fixed at the current $S$ (seed 004 writes a factor $\tfrac12$ because it counts each unordered pair once;
on the ordered matrix it goes). So a loss *is* a rule that assigns a non-negative weight to every pair. This notebook

1. checks Theorem 3.1 numerically for **every** loss of `dmlkit` (`weights.theorem_3_1_check`),
2. draws weight-vs-similarity curves (seed 004, Figure 1) and overlays the closed forms on the autograd weights,
3. looks at the OSM weights, which need real embeddings, and
4. follows the weights of one loss during a short training run.

`dmlkit.weights.pair_weights(loss, embeddings, labels)` gives $W$ by autograd on a leaf $S$.
"""),
        code(f'''SEED = 0
{TASK_PARAMS}SNAPSHOTS = 3            # weight snapshots during training (first, ..., last step)
CURVE_POINTS = 101        # grid of the weight-vs-similarity curves''', parameters=True),
        setup_cell(stem),
        md(r"""
## 1. Theorem 3.1, every loss

For a fixed batch (24 random 8-d embeddings, 6 classes, float64) we compare the gradient of each loss with respect to the embeddings
with the gradient of its surrogate $F$. Where seed 004 gives a closed form (contrastive eq. 5, triplet eq. 7, generalised lifted
eq. 10-11, binomial eq. 13-14, RAW eq. 15-16 on the mined pairs) we also compare the autograd weights with it
(`analysis.closed_form_weights`, computed independently; triplet weights by brute-force enumeration of the triplets).
"""),
        code(r'''# NBVAL_CHECK_OUTPUT
THEOREM_SPECS = {
    "contrastive (distance)": "contrastive",
    "contrastive (similarity, eq. 5)": ("contrastive", {"form": "similarity"}),
    "triplet (distance)": "triplet",
    "triplet (similarity, eq. 7)": ("triplet", {"form": "similarity"}),
    "triplet semi-hard": ("triplet", {"mining": "semihard"}),
    "lifted structure": "lifted_structure",
    "generalised lifted (eq. 9)": "generalized_lifted_structure",
    "binomial (eq. 12)": "binomial",
    "RAW (all pairs)": "raw",
    "VTHM": "vthm",
    "binomial+VTHM": "binomial+vthm",
    "RAW+semi-hard": "raw+semihard",
    "RAW+DW (all eligible negatives)": ("raw+distance_weighted", {"num_negatives": 24}),
    "multi-similarity (RAW+VTHM)": "multi_similarity",
    "N-pair-mc": "npair", "N-pair-ovo": "npair_ovo", "(N+1)-tuplet": "tuplet",
    "angular": "angular", "DDML": "ddml", "OSM+CAA": "osm_caa",
}
g = torch.Generator().manual_seed(0)
check_emb = torch.randn(24, 8, generator=g, dtype=torch.float64)
check_labels = torch.arange(24) % 6
theorem = analysis.theorem_table(THEOREM_SPECS, check_emb, check_labels)
summary = pd.DataFrame({
    "loss": theorem["loss"],
    "grad(L) == grad(F)": theorem["max_grad_diff"] < 1e-10,
    "weights >= 0": theorem["min_weight"] >= 0,
    "closed form == autograd": theorem["closed_form_err"].map(
        lambda e: "n/a" if np.isnan(e) else bool(e < 1e-10)),
    "share of active pairs": theorem["active_pairs"].round(2),
})
print(summary.to_string(index=False))'''),
        code(r'''theorem.style.format({"max_grad_diff": "{:.1e}", "max_grad": "{:.3f}", "min_weight": "{:.1e}",
                      "active_pairs": "{:.2f}", "closed_form_err": "{:.1e}"})'''),
        code(r'''nb.record(theorem_max_grad_diff=float(theorem["max_grad_diff"].max()),
          closed_form_max_err=float(theorem["closed_form_err"].max(skipna=True)),
          theorem_losses=len(theorem), min_weight=float(theorem["min_weight"].min()))'''),
        md(r"""
The difference is at the level of float64 round-off for every loss: the gradient of a pair-based loss *is* the gradient of a
weighted sum of similarities. Two caveats the table hides. N-pair's L2 penalty on the norms is not a function of $S$: it is
added to both sides (`PairLoss.regularizer`) and has no pair weights. OSM+CAA satisfies the theorem because its official
code treats the weights as constants in the backward pass (`detach_weights=True`); with gradient through the weights some
positive-pair weights turn negative.

## 2. Weight versus similarity (seed 004, Figure 1)

One anchor faces three positives with $s = 0.6, 0.7, 0.8$, three negatives with $s = 0.2, 0.3, 0.4$ and one more pair whose
similarity sweeps $[-1, 1]$ (`weights.weight_curve`). Curves are scaled to a maximum of 1 so that shapes compare.
"""),
        code(r'''CURVE_LOSSES = {
    "contrastive": losses.build("contrastive", form="similarity", lam=0.5),
    "triplet": losses.build("triplet", form="similarity", margin=0.2),
    "lifted": losses.build("generalized_lifted_structure"),
    "binomial": losses.build("binomial"),
    "RAW": losses.build("raw"),
    "multi-similarity": losses.build("multi_similarity"),
}
grid = np.linspace(-1, 1, CURVE_POINTS)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
for ax, pair in zip(axes, ("negative", "positive")):
    curves = [weights.weight_curve(loss, pair, grid=grid, name=name) for name, loss in CURVE_LOSSES.items()]
    plotting.plot_weight_curves(curves, ax=ax, normalize=True, title=f"{pair} pair")
nb.save_fig("weight_curves")'''),
        md(r"""
What the curves say (seed 004, Sec. 3):

* **contrastive** weights a negative pair 1 once $s > \lambda$ and every positive 1: it ignores how hard a pair is;
* **triplet** weights a pair by the number of violated triplets it is in: a step each time $s$ crosses a context pair $\pm$ margin;
* **lifted** and **RAW** are *relative*: a negative's weight is a softmax of $s$ over the anchor's negatives, so it grows with its own
  similarity *and* shrinks when the other negatives are harder;
* **binomial** is *self-similarity* only (a sigmoid of $s - \lambda$): it does not look at the other pairs;
* **multi-similarity** is RAW restricted to the VTHM pairs: the negative weight is zero until $s$ comes within $\epsilon$ of the
  hardest positive (0.6 here), the positive weight is zero once $s$ exceeds the hardest negative (0.4) $+\,\epsilon$.

## 3. Closed forms on top of autograd, on real embeddings

Embeddings of one $P \times K$ batch of glyphs from an untrained network. The dots are autograd weights (`pair_weights`), the
crosses the closed forms (binomial eq. 13-14, multi-similarity eq. 15-16 on the VTHM pairs).
"""),
        code(TASK_CELL),
        code(r'''net0 = analysis.build_net(embedding_dim=32, seed=SEED)
batch_idx = torch.as_tensor(next(iter(data.PKSampler(task.y.numpy(), P=8, K=4, seed=SEED))))
probe_emb = analysis.embed(net0, task.X[batch_idx]).double()
probe_labels = task.y[batch_idx]

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
closed_errors = {}
for ax, name in zip(axes[:2], ("binomial", "multi_similarity")):
    loss = losses.build(name)
    S, W = weights.pair_weights(loss, probe_emb, probe_labels)
    _, W_closed = analysis.closed_form_weights(loss, probe_emb, probe_labels)
    b = losses.make_batch(probe_emb, probe_labels)
    plotting.plot_pair_weights(S, W, b.pos, b.neg, ax=ax, title=f"{name}: autograd (dots), closed form (x)")
    ax.scatter(S[b.pos | b.neg], W_closed[b.pos | b.neg], marker="x", s=12, color="k", lw=0.6)
    closed_errors[name] = float((W - W_closed).abs().max())

# OSM + CAA needs the embeddings themselves (class centres): weights of a real batch
osm = losses.build("osm_caa", num_classes=task.num_classes, embedding_dim=32).double()
S, W = weights.pair_weights(osm, probe_emb, probe_labels)
b = losses.make_batch(probe_emb, probe_labels)
plotting.plot_pair_weights(S, W, b.pos, b.neg, ax=axes[2], title="OSM+CAA (needs embeddings)")
nb.save_fig("closed_vs_autograd")
nb.record(batch_closed_form_err=max(closed_errors.values()))
closed_errors'''),
        md(r"""
OSM (seed 003) gives positives a weight that *decreases* with distance (closer positives count more, $e^{-d^2/\sigma^2}$) and negatives
one that grows as they get closer ($[\alpha - d]_+$); the class-aware attention then scales every pair by $\min(a_i, a_j)$, which is
why the OSM+CAA scatter is not a single curve of $s$ (notebook 05 looks at it closely).

## 4. How the weights move during training

A small CNN is trained with the multi-similarity loss; at a few steps we freeze a probe batch and read its pair weights.
"""),
        code(r'''snapshot_steps = sorted({int(round(t)) for t in np.linspace(0, STEPS, SNAPSHOTS)})
run = analysis.train_embedding(task, "multi_similarity", steps=STEPS, seed=SEED, snapshot_steps=snapshot_steps,
                               probe=(task.X[batch_idx], probe_labels), track_mining=True)
fig, axes = plt.subplots(1, len(snapshot_steps), figsize=(5 * len(snapshot_steps), 3.8), sharey=True)
active = {}
for ax, step in zip(np.atleast_1d(axes), snapshot_steps):
    S, W, pos, neg = run.snapshots[step]
    plotting.plot_pair_weights(S, W, pos, neg, ax=ax, title=f"step {step}")
    active[step] = {"positive pairs weighted": float((W[pos] > 0).mean()),
                    "negative pairs weighted": float((W[neg] > 0).mean()),
                    "mean positive s": float(S[pos].mean()), "mean negative s": float(S[neg].mean())}
nb.save_fig("weights_during_training")
pd.DataFrame(active).T.round(3)'''),
        code(r'''print("untrained:", {k: round(v, 3) for k, v in run.initial_scores.items()})
print("trained:  ", {k: round(v, 3) for k, v in run.scores.items()})
first, last = snapshot_steps[0], snapshot_steps[-1]
nb.record(untrained_map_at_r=run.initial_scores["map@r"], trained_map_at_r=run.scores["map@r"],
          untrained_recall_at_1=run.initial_scores["recall@1"], trained_recall_at_1=run.scores["recall@1"],
          neg_weighted_first=active[first]["negative pairs weighted"],
          neg_weighted_last=active[last]["negative pairs weighted"])'''),
        md(r"""
As training separates the classes, positive similarities rise and negative ones fall; VTHM then keeps fewer pairs (the share of
negative pairs with a non-zero weight drops) and the weight concentrates on the few pairs that still violate the margin. This is
the "hard mining for free" view of seed 004: the loss itself moves its attention to informative pairs.
"""),
    ]


# =============================================================================================
# 01 contrastive and triplet


def nb01() -> list:
    stem = "01_contrastive_and_triplet"
    return [
        md(r"""
# 01 · Pairs and triplets: contrastive and triplet losses, margins, mining

Deep metric learning trains an embedding $f$ so that images of the same class are close and images of different classes are
far apart, *for classes never seen in training*. The two oldest losses look at pairs and at triplets.

**Contrastive loss** (Hadsell, Chopra & LeCun 2006; seed 002), for a pair $(i, j)$ at Euclidean distance $d_{ij}$:

$$\ell_{ij} = \mathbb 1[y_i = y_j]\, d_{ij}^2 + \mathbb 1[y_i \ne y_j]\, [m - d_{ij}]_+^2 .$$

Positives are pulled together always; negatives are pushed apart only while they are closer than the margin $m$.
Seed 004 writes the same idea with cosine similarities: $\ell_{ij} = (1 - I_{ij})[s_{ij} - \lambda]_+ - I_{ij}\, s_{ij}$.

**Triplet loss** (Hoffer & Ailon 2015; Schroff et al. 2015), for an anchor $a$, a positive $p$ and a negative $n$:

$$\ell_{apn} = [\,d_{ap} - d_{an} + m\,]_+ .$$

It only asks the negative to be farther than the positive *by a margin*: a relative constraint, no absolute target.
`dmlkit.losses.build("contrastive")` and `build("triplet", mining=...)` compute both densely over a batch.
"""),
        code(f'''SEED = 0
{TASK_PARAMS}GRID = 41                 # resolution of the 2-D loss landscapes
MARGIN = 0.2              # triplet margin (distance form)
SEEDS = (0,)              # seeds of the training comparison''', parameters=True),
        setup_cell(stem),
        md(r"""
## 1. Margins: loss of one pair versus its distance

For a positive pair the contrastive loss is $d^2$ whatever the margin; for a negative pair it is $[m - d]_+^2$: zero beyond $m$.
"""),
        code(r'''d = torch.linspace(0, 2, 201, dtype=torch.float64)
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.plot(d, d ** 2, "--", color=plotting.POS_COLOR, label="positive pair: $d^2$")
for m in (0.5, 1.0, 1.5):
    ax.plot(d, torch.relu(m - d) ** 2, label=f"negative pair, margin m = {m}")
ax.set_xlabel("distance $d_{ij}$"); ax.set_ylabel("loss of the pair"); ax.set_ylim(0, 2.3); ax.legend(fontsize="small")
nb.save_fig("contrastive_margins")'''),
        md(r"""
## 2. Where pairs and triplets push and pull: 2-D loss landscapes

Five fixed points of three classes in the plane and one **moving point of class 0** (blue). For every position of the moving
point we compute the loss of the whole batch and its gradient with respect to that point (`analysis.loss_landscape_2d`;
`normalize=False` so the plane, not only the angle, matters). Arrows show minus the gradient: where gradient descent moves it.
"""),
        code(r'''toy_points = torch.tensor([[-1.0, 0.3], [-0.5, -0.6], [1.0, 0.5], [0.7, -0.7], [0.0, 1.2]], dtype=torch.float64)
toy_labels = torch.tensor([0, 0, 1, 1, 2])
toy_losses = {
    "contrastive (m = 1)": losses.build("contrastive", margin=1.0, reduction="sum", normalize=False),
    "triplet (m = 0.5)": losses.build("triplet", margin=0.5, reduction="sum", normalize=False),
}
fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
colors = np.array(["tab:blue", "tab:orange", "tab:green"])
for ax, (name, loss) in zip(axes, toy_losses.items()):
    land = analysis.loss_landscape_2d(loss, toy_points, toy_labels, moving_label=0, lim=2.0, n=GRID)
    cs = ax.contourf(land["x"], land["y"], land["loss"], levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, shrink=0.8, label="batch loss")
    step = max(1, GRID // 14)
    X, Y = np.meshgrid(land["x"], land["y"])
    ax.quiver(X[::step, ::step], Y[::step, ::step], -land["grad_x"][::step, ::step], -land["grad_y"][::step, ::step],
              color="white", alpha=0.8)
    ax.scatter(toy_points[:, 0], toy_points[:, 1], c=colors[toy_labels], s=90, edgecolors="k", zorder=3)
    ax.set_title(f"{name}: moving point of class 0 (blue)"); ax.set_aspect("equal")
nb.save_fig("landscapes")'''),
        md(r"""
The contrastive landscape is a bowl around the blue positives with **repelling disks of radius $m$** around the negatives:
outside those disks a negative exerts no force. The triplet landscape is **flat wherever every triplet is satisfied** (the moving
point is closer to its positives than to any negative by the margin): no gradient at all, which is why a triplet loss stops
learning from easy triplets and why mining matters.

## 3. Easy, semi-hard and hard triplets

For an anchor $a$, positive $p$ and negative $n$ with $T = -d$ (higher is more similar), a triplet is

* **easy** when $d_{an} \ge d_{ap} + m$: zero loss, no gradient;
* **semi-hard** (FaceNet) when $d_{ap} < d_{an} < d_{ap} + m$: the negative is farther than the positive but inside the margin;
* **hard** when $d_{an} \le d_{ap}$: the negative is closer than the positive.

`analysis.triplet_table` lists every triplet of a small batch; `losses.triplet.triplet_counts` counts them without enumerating
(sorted prefix counts). They agree:
"""),
        code(r'''# NBVAL_CHECK_OUTPUT
from dmlkit.losses.triplet import triplet_counts

g = torch.Generator().manual_seed(0)
emb16 = torch.randn(16, 4, generator=g, dtype=torch.float64)
lab16 = torch.arange(16) % 4
table16 = analysis.triplet_table(emb16, lab16, margin=0.2)
T = losses.build("triplet").scores(losses.make_batch(emb16, lab16))
b16 = losses.make_batch(emb16, lab16)
counts = {"all (non-zero loss)": "all", "semi-hard": "semihard", "hard": "hard"}
print("valid triplets:", len(table16))
for label, mining in counts.items():
    enumerated = {"all": (table16.category != "easy").sum(), "semihard": (table16.category == "semi-hard").sum(),
                  "hard": (table16.category == "hard").sum()}[mining]
    kept = int(triplet_counts(T, b16.pos, b16.neg, 0.2, mining)[2])
    print(f"{label:>20}: enumerated {enumerated:4d}   triplet_counts {kept:4d}")'''),
        code(TASK_CELL),
        code(r'''net0 = analysis.build_net(embedding_dim=32, seed=SEED)
batch_idx = torch.as_tensor(next(iter(data.PKSampler(task.y.numpy(), P=8, K=4, seed=SEED))))
run0 = analysis.train_embedding(task, "triplet", loss_params={"margin": MARGIN}, steps=STEPS // 2, seed=SEED)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
shares = {}
for ax, (title, net) in zip(axes, (("untrained network", net0), (f"after {STEPS // 2} triplet steps", run0.model))):
    tab = analysis.triplet_table(analysis.embed(net, task.X[batch_idx]), task.y[batch_idx], margin=MARGIN)
    for cat, color in (("easy", plotting.POS_COLOR), ("semi-hard", "#7570b3"), ("hard", plotting.NEG_COLOR)):
        ax.hist(tab.loc[tab.category == cat, "t_an"] - tab.loc[tab.category == cat, "t_ap"],
                bins=40, alpha=0.7, color=color, label=cat)
    ax.axvline(-MARGIN, color="k", ls=":"); ax.axvline(0, color="k", ls="--")
    ax.set_xlabel("$d_{ap} - d_{an}$  (loss is $[d_{ap} - d_{an} + m]_+$)"); ax.set_title(title); ax.legend(fontsize="small")
    shares[title] = tab.category.value_counts(normalize=True).reindex(["easy", "semi-hard", "hard"]).fillna(0)
nb.save_fig("triplet_categories")
pd.DataFrame(shares).round(3)'''),
        md(r"""
An untrained network maps all images to nearly the same point, so most triplets are hard or semi-hard. After a little training
most triplets are easy: they carry no gradient, and averaging over *all* triplets dilutes the few informative ones.

## 4. Miners: which pairs each one keeps

`dmlkit.miners` expresses mining as boolean masks over the similarity matrix. On the same batch (trained network):
"""),
        code(r'''b = losses.make_batch(analysis.embed(run0.model, task.X[batch_idx]), task.y[batch_idx])
mined = {}
for name, params in {"none": {}, "semihard": {"margin": 0.1}, "hard": {}, "vthm": {"epsilon": 0.1},
                     "distance_weighted": {"dim": 32, "generator": torch.Generator().manual_seed(SEED)}}.items():
    pk, nk = miners.build(name, **params)(b.S, b.pos, b.neg)
    mined[name] = {"positive pairs kept": float(pk.sum() / b.pos.sum()), "negative pairs kept": float(nk.sum() / b.neg.sum())}
pd.DataFrame(mined).T.round(3)'''),
        md(r"""
## 5. Training with each variant

The same small CNN trained with the contrastive loss and with the triplet loss over all / semi-hard / hard / batch-hard triplets
(`analysis.run_ablation`, which also logs the share of triplets each step keeps). Scores are on the **unseen** test classes.
"""),
        code(r'''VARIANTS = {
    "contrastive": ("contrastive", {"margin": 1.0}),
    "triplet (all)": ("triplet", {"margin": MARGIN}),
    "triplet semi-hard": ("triplet", {"margin": MARGIN, "mining": "semihard"}),
    "triplet hard": ("triplet", {"margin": MARGIN, "mining": "hard"}),
    "triplet batch-hard": ("triplet", {"margin": MARGIN, "mining": "batch_hard"}),
}
histories = {}
results = analysis.run_ablation(task, VARIANTS, seeds=SEEDS, steps=STEPS, track_mining=True, histories=histories)
summary = analysis.summarize(results, metrics=("untrained_map@r", "recall@1", "map@r"))
summary.round(3)'''),
        code(r'''fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for label in ("triplet (all)", "triplet semi-hard", "triplet hard"):
    h = histories[(label, SEEDS[0])]
    axes[0].plot(h["step"], h["triplets_kept"], marker="o", ms=3, label=label)
axes[0].set_xlabel("step"); axes[0].set_ylabel("share of valid triplets used"); axes[0].legend(fontsize="small")
axes[0].set_title("mining during training")
summary["map@r_mean"].plot.barh(ax=axes[1], xerr=summary["map@r_std"], color="#7570b3")
axes[1].axvline(summary["untrained_map@r_mean"].mean(), color="k", ls=":", label="untrained")
axes[1].set_xlabel("MAP@R on unseen classes"); axes[1].legend(fontsize="small")
nb.save_fig("training")
h_all = histories[("triplet (all)", SEEDS[0])]
nb.record(untrained_map_at_r=float(results["untrained_map@r"].mean()),
          **{f"map_at_r[{k}]": float(v) for k, v in summary["map@r_mean"].items()},
          **{f"recall_at_1[{k}]": float(v) for k, v in summary["recall@1_mean"].items()},
          triplets_kept_first=float(h_all["triplets_kept"].iloc[0]),
          triplets_kept_last=float(h_all["triplets_kept"].iloc[-1]),
          semihard_kept_mean=float(results.loc[results.loss == "triplet semi-hard", "triplets_kept"].mean()))'''),
        md(r"""
Every variant beats the untrained network by a wide margin on classes it never saw. The share of triplets with a non-zero loss
falls quickly as training proceeds: the loss over "all" triplets is then an average over mostly easy ones, which is what
semi-hard and hard mining, and the pair weightings of notebooks 03-05, try to fix. (At this scale, one seed, differences between
variants of a few points are within the seed-to-seed spread; see notebook 04 for several seeds.)
"""),
    ]

# =============================================================================================
# 04 multi-similarity ablation


def nb04() -> list:
    stem = "04_multi_similarity_ablation"
    return [
        md(r"""
# 04 · Multi-similarity: VTHM mining, RAW weighting, and the Table 1 ablation (seed 004)

Seed 004 splits a pair-based loss into **mining** (which pairs) and **weighting** (how much each kept pair counts).

**VTHM, valid-triplet-based hard mining.** For anchor $i$ with hardest positive $\min_{k\in\mathcal P_i} s_{ik}$ and hardest
negative $\max_{k \in \mathcal N_i} s_{ik}$, keep

$$ \text{negative } j \text{ if } s_{ij} > \min_{k\in\mathcal P_i} s_{ik} - \epsilon, \qquad
   \text{positive } j \text{ if } s_{ij} < \max_{k\in\mathcal N_i} s_{ik} + \epsilon \qquad (\epsilon = 0.1).$$

**RAW, relative and absolute weighting** (eq. 17); on the VTHM pairs it is the multi-similarity (MS) loss:

$$ \mathcal L = \frac1m \sum_i \Big[ \frac1\alpha \log\big(1 + \sum_{k\in\hat{\mathcal P}_i} e^{-\alpha(s_{ik}-\lambda)}\big)
 + \frac1\beta \log\big(1 + \sum_{k\in\hat{\mathcal N}_i} e^{\beta(s_{ik}-\lambda)}\big)\Big],
 \quad \alpha = 2,\ \beta = 50,\ \lambda = 0.5 .$$

Its pair weights (eq. 15-16) depend on the pair's own similarity (*self*), on the other pairs of the anchor (*relative*) and on
$\lambda$ (*absolute*). Table 1 of seed 004 ablates the two parts; here we rerun it on glyphs with several seeds.
"""),
        code(f'''SEED = 0
{TASK_PARAMS}SEEDS = (0, 1, 2)         # seeds per loss of the ablation''', parameters=True),
        setup_cell(stem),
        md(r"""
## 1. VTHM on a hand-made anchor

One anchor with positives at $s = 0.9, 0.5$ and negatives at $s = 0.55, 0.45, 0.3$. The hardest positive is 0.5, so negatives
above $0.5 - 0.1 = 0.4$ are kept; the hardest negative is 0.55, so positives below $0.55 + 0.1 = 0.65$ are kept:
"""),
        code(r'''# NBVAL_CHECK_OUTPUT
S_demo = torch.tensor([[0.9, 0.5, 0.55, 0.45, 0.3]])
pos_demo = torch.tensor([[True, True, False, False, False]])
pos_keep, neg_keep = miners.vthm(S_demo, pos_demo, ~pos_demo, epsilon=0.1)
print("positives kept:", [round(v, 2) for v in S_demo[pos_keep].tolist()])
print("negatives kept:", [round(v, 2) for v in S_demo[neg_keep].tolist()])
ms = losses.build("multi_similarity")
batch_demo = losses.PairBatch(S=S_demo.double().requires_grad_(), pos=pos_demo, neg=~pos_demo, labels=torch.tensor([0]),
                              ref_labels=torch.tensor([0, 0, 1, 2, 3]), embeddings=torch.zeros(1, 1),
                              ref_embeddings=torch.zeros(5, 1), in_batch=False, normalized=True)
_, W_demo = weights.pair_weights_from_batch(ms, batch_demo)
print("MS weights (eq. 15-16, x 1/m):", [round(w, 4) + 0.0 for w in W_demo[0].tolist()])'''),
        md(r"""
The easy positive (0.9) and the easy negative (0.3) get weight exactly 0; among the kept negatives the harder one (0.55) gets
most of the weight: RAW's relative term is a softmax of $\beta s$ over the kept negatives.

## 2. The ablation (seed 004, Table 1) on glyphs

Seven combinations, each trained from the same initialisation per seed, `STEPS` steps of $8 \times 4$ batches
(`analysis.run_ablation`). The share of positive / negative pairs each loss gives a non-zero weight is logged during training.
"""),
        code(TASK_CELL),
        code(r'''ABLATION = {
    "Binomial": "binomial",
    "RAW": "raw",
    "VTHM": "vthm",
    "Binomial+VTHM": "binomial+vthm",
    "RAW+DW": ("raw+distance_weighted", {"seed": SEED}),
    "RAW+SemiHard": "raw+semihard",
    "RAW+VTHM (MS)": "multi_similarity",
}
histories = {}
results = analysis.run_ablation(task, ABLATION, seeds=SEEDS, steps=STEPS, track_mining=True, histories=histories)
summary = analysis.summarize(results, metrics=("recall@1", "map@r", "pos_kept", "neg_kept"))
summary.round(3)'''),
        md(r"""
Next to the published numbers (R@1 in %, BN-Inception, 512-d, CUB-200-2011 and Cars196; read from the package copy of
`published_results.csv`). The absolute numbers are not comparable (a 16-pixel glyph task and a tiny CNN vs ImageNet-pretrained
networks on birds and cars); the *ordering* is what the ablation is about.
"""),
        code(r'''published = analysis.published_results()
table1 = published[published.note.fillna("").str.contains("Table 1") & (published.metric == "R@1")]
table1 = table1.pivot_table(index="method", columns="dataset", values="value")
table1.index = table1.index.str.replace("RAW+VTHM", "RAW+VTHM (MS)", regex=False)
ours = (100 * summary[["recall@1_mean", "recall@1_std", "map@r_mean"]]).rename(
    columns={"recall@1_mean": "glyphs R@1", "recall@1_std": "glyphs R@1 std", "map@r_mean": "glyphs MAP@R"})
comparison = ours.join(table1, how="left")
comparison.round(2)'''),
        code(r'''fig, axes = plt.subplots(1, 2, figsize=(13, 4))
x = np.arange(len(summary))
axes[0].bar(x - 0.2, summary["recall@1_mean"], 0.4, yerr=summary["recall@1_std"], capsize=3, label="glyphs R@1 (ours)")
axes[0].bar(x + 0.2, summary["map@r_mean"], 0.4, yerr=summary["map@r_std"], capsize=3, label="glyphs MAP@R (ours)")
untrained = results["untrained_map@r"].mean()
axes[0].axhline(untrained, color="k", ls=":", label=f"untrained MAP@R ({untrained:.2f})")
axes[0].set_xticks(x, summary.index, rotation=30, ha="right"); axes[0].legend(fontsize="small")
axes[0].set_title(f"mean ± std over {len(SEEDS)} seed(s)")
for col in [c for c in ("CUB-200-2011", "Cars196") if c in comparison]:
    axes[1].plot(comparison.index, comparison[col], marker="o", label=f"published {col} R@1 (%)")
axes[1].tick_params(axis="x", rotation=30); axes[1].legend(fontsize="small"); axes[1].set_title("seed 004, Table 1")
for lab in axes[1].get_xticklabels():
    lab.set_ha("right")
nb.save_fig("ablation")'''),
        md(r"""
## 3. How many pairs each mining keeps during training
"""),
        code(r'''fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), sharey=True)
for label in ABLATION:
    h = histories[(label, SEEDS[0])]
    axes[0].plot(h["step"], h["pos_kept"], marker="o", ms=2, label=label)
    axes[1].plot(h["step"], h["neg_kept"], marker="o", ms=2, label=label)
axes[0].set_title("positive pairs with non-zero weight"); axes[1].set_title("negative pairs with non-zero weight")
for ax in axes:
    ax.set_xlabel("step"); ax.set_yscale("log")
axes[1].legend(fontsize="x-small", ncol=2)
nb.save_fig("mining_during_training")
kept_last = {label: float(histories[(label, SEEDS[0])]["neg_kept"].iloc[-1]) for label in ABLATION}
pd.Series(kept_last, name="negative pairs kept at the last step").round(4)'''),
        code(r'''nb.record(untrained_map_at_r=float(results["untrained_map@r"].mean()),
          **{f"map_at_r[{k}]": float(v) for k, v in summary["map@r_mean"].items()},
          **{f"recall_at_1[{k}]": float(v) for k, v in summary["recall@1_mean"].items()},
          **{f"recall_at_1_std[{k}]": float(v) for k, v in summary["recall@1_std"].items()},
          **{f"pos_kept[{k}]": float(v) for k, v in summary["pos_kept_mean"].items()},
          **{f"neg_kept[{k}]": float(v) for k, v in summary["neg_kept_mean"].items()},
          seeds=len(SEEDS))'''),
        md(r"""
What to read from it:

* **RAW and Binomial weight every pair** (kept share 1): they never mine, they only weight; under RAW most negatives get
  a weight that is non-zero but tiny ($\beta = 50$).
* **VTHM keeps a shrinking share** of the negatives as training separates the classes; semi-hard keeps fewer still, and
  distance-weighted sampling keeps one negative per anchor.
* **Mining alone (VTHM, equal weights) is the weakest** in seed 004 (61.6 / 76.6 R@1 on CUB / Cars196) and RAW+VTHM the
  best. On glyphs (default parameters, three seeds) the RAW-weighted variants (RAW, RAW+DW, RAW+VTHM) come out on top as in the
  paper, but VTHM alone is not the weakest: **Binomial+VTHM** is, clearly, and its share of kept negatives stays high, i.e. it
  separates the classes less within the same number of steps. Its per-anchor means over the *kept* sets (eq. 12 restricted to
  VTHM pairs) change the balance between positives and negatives as the kept sets shrink; seed 004 does not give its exact
  normalisation, so this is one reading of the ablation, not necessarily the paper's.
* With a few hundred steps and three seeds, differences smaller than about two standard deviations should not be read as a
  ranking.
"""),
    ]

# =============================================================================================
# 02 lifted structure and N-pair


def nb02() -> list:
    stem = "02_lifted_structure_and_npair"
    return [
        md(r"""
# 02 · Lifted structure, (N+1)-tuplet and N-pair losses (seed 002)

A triplet compares an anchor with **one** negative at a time. The losses of this notebook look at many negatives at once.

**Lifted structure** (Oh Song et al. 2016): for every positive pair $(i,j)$,

$$J_{ij} = \log\Big(\sum_{k\in\mathcal N_i} e^{m - d_{ik}} + \sum_{l\in\mathcal N_j} e^{m - d_{jl}}\Big) + d_{ij},\qquad
\mathcal L = \frac{1}{2|\mathcal P|}\sum_{(i,j)\in\mathcal P} [J_{ij}]_+^2 ,$$

a smooth version of "the hardest negative of either end of the pair". The generalised form of seed 004 (eq. 9) is
$\frac1m\sum_i [\log\sum_{\mathcal P_i} e^{-s_{ik}} + \log\sum_{\mathcal N_i} e^{s_{ik}} + \lambda]_+$.

**(N+1)-tuplet** (Sohn 2016): one anchor $f$, its positive $f^+$ and $N-1$ negatives $f_i$:
$\log\big(1 + \sum_{i=1}^{N-1} e^{f^\top f_i - f^\top f^+}\big)$; with one negative it is a smooth triplet.

**N-pair-mc**: a batch of $N$ pairs $(f_i, f_i^+)$ from $N$ different classes; every other pair's positive is a negative:

$$\mathcal L = \frac1N\sum_i \log\Big(1 + \sum_{j\ne i} e^{f_i^\top f_j^+ - f_i^\top f_i^+}\Big),$$

a softmax cross-entropy over the $N\times N$ matrix $f_i^\top f_j^+$ with the diagonal as targets: $2N$ embeddings give $N(N-1)$
negative comparisons. **N-pair-ovo** sums $N-1$ separate binary terms instead,
$\frac1N\sum_i\sum_{j\ne i}\log(1 + e^{f_i^\top f_j^+ - f_i^\top f_i^+})$. Sohn's embeddings are not normalised
(an L2 penalty keeps the norms in check), which is `dmlkit`'s default for these losses.
"""),
        code(f'''SEED = 0
{TASK_PARAMS}N_PAIRS = 16              # N: classes (pairs) per batch
CANDIDATES = 32           # C: candidate classes of hard negative class mining
SEEDS = (0, 1)            # seeds of the comparison''', parameters=True),
        setup_cell(stem, "import torch.nn.functional as F\n"),
        md(r"""
## 1. Two identities, checked

N-pair-mc is a softmax cross-entropy, and the (2+1)-tuplet (one negative) is $\log(1 + e^{f^\top f^- - f^\top f^+})$:
"""),
        code(r'''# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
anchors, positives = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
pairs = torch.stack([anchors, positives], 1).reshape(12, 5)          # [a_1, p_1, a_2, p_2, ...]
pair_labels = torch.arange(6).repeat_interleave(2)
npair = losses.build("npair", l2_reg=0.0)(pairs, pair_labels)
cross_entropy = F.cross_entropy(anchors @ positives.T, torch.arange(6))
print("N-pair-mc == softmax cross-entropy:", bool(torch.isclose(npair, cross_entropy, atol=1e-12)))
triple = torch.randn(3, 5, generator=g, dtype=torch.float64)            # anchor, positive, negative
tuplet = losses.build("tuplet", l2_reg=0.0)(triple[:1], torch.tensor([0]), triple[1:], torch.tensor([0, 1]))
smooth = F.softplus(triple[0] @ triple[2] - triple[0] @ triple[1])
print("(2+1)-tuplet == smooth triplet:", bool(torch.isclose(tuplet, smooth, atol=1e-12)))'''),
        md(r"""
(The tuplet call uses the query-vs-reference form: the anchor is the only query, the positive and the negative are the references.)

## 2. Comparison at small scale: triplet vs lifted vs (N+1)-tuplet vs N-pair-mc vs N-pair-ovo

Seed 002's comparison: every loss sees the same batches of `N_PAIRS` classes x 2 images (so the N-pair losses get their $N$ pairs),
trains the same small CNN for `STEPS` steps, and is scored on the unseen glyph classes.
"""),
        code(TASK_CELL),
        code(r'''LOSSES = {
    "triplet": "triplet",
    "lifted structure": "lifted_structure",
    "(N+1)-tuplet": "tuplet",
    "N-pair-ovo": "npair_ovo",
    "N-pair-mc": "npair",
}
results = analysis.run_ablation(task, LOSSES, seeds=SEEDS, steps=STEPS, P=N_PAIRS, K=2)
summary = analysis.summarize(results, metrics=("untrained_map@r", "recall@1", "map@r"))
summary.round(3)'''),
        code(r'''fig, ax = plt.subplots(figsize=(8, 3.8))
x = np.arange(len(summary))
ax.bar(x - 0.2, summary["recall@1_mean"], 0.4, yerr=summary["recall@1_std"], capsize=3, label="R@1")
ax.bar(x + 0.2, summary["map@r_mean"], 0.4, yerr=summary["map@r_std"], capsize=3, label="MAP@R")
ax.axhline(summary["untrained_map@r_mean"].mean(), color="k", ls=":", label="untrained MAP@R")
ax.set_xticks(x, summary.index); ax.legend(fontsize="small"); ax.set_title(f"unseen classes, mean ± std over {len(SEEDS)} seeds")
nb.save_fig("comparison")
published = analysis.published_results()
sohn = published[published.paper.str.startswith("Sohn") & (published.dataset == "CUB-200-2011")
                 & published.metric.isin(["R@1", "NMI"])]
sohn.pivot_table(index="method", columns="metric", values="value").round(1)'''),
        md(r"""
Above: Sohn's own CUB-200-2011 numbers (from the package copy of the published results) for reference: there N-pair-mc beats
N-pair-ovo and both beat the triplet loss at equal batch sizes. The glyph run does **not** reproduce that ordering: with
normalised embeddings and dmlkit's distance-form margin the triplet loss is at least as good as the N-pair losses here, and the
lifted structure loss (margin 1 on unit vectors, every negative of the batch) learns the slowest. Three things differ from
seed 002: a few hundred steps instead of convergence, 60 training classes instead of thousands, and a tiny CNN; the
differences between the middle three losses are of the order of the seed-to-seed spread (error bars).

## 3. Hard negative class mining

Sohn's sampler (seed 002, FORMULAS.md): pick `CANDIDATES` classes, embed one pair of each, then greedily build the batch from the
classes that violate the triplet constraint most with those already chosen (`dmlkit.data.HardNegativeClassSampler`, fed by
the current network through `embed_fn`). First: are its batches harder than random ones for the same network?
"""),
        code(r'''run_random = analysis.train_embedding(task, "npair", steps=STEPS, P=N_PAIRS, K=2, seed=SEED)
net = run_random.model
hard_sampler = data.HardNegativeClassSampler(task.y.numpy(), N=N_PAIRS, C=CANDIDATES, seed=SEED,
                                             embed_fn=lambda idx: analysis.embed(net, task.X[idx]))
random_sampler = data.PKSampler(task.y.numpy(), P=N_PAIRS, K=2, seed=SEED)
npair_loss = losses.build("npair")
hardness = pd.DataFrame({"random classes": analysis.batch_losses(net, task, npair_loss, random_sampler, 20),
                         "hard negative classes": analysis.batch_losses(net, task, npair_loss, hard_sampler, 20)})
hardness.describe().loc[["mean", "std", "min", "max"]].round(3)'''),
        md(r"""
The mined batches have a clearly larger N-pair loss for the same network: their classes are confusable with each other.
Now train with them from scratch (the sampler embeds the candidates with the network being trained):
"""),
        code(r'''mined_runs = []
for s in SEEDS:
    net_s = analysis.build_net(embedding_dim=32, seed=s)
    sampler = data.HardNegativeClassSampler(task.y.numpy(), N=N_PAIRS, C=CANDIDATES, seed=s,
                                            embed_fn=lambda idx, net_s=net_s: analysis.embed(net_s, task.X[idx]))
    run = analysis.train_embedding(task, "npair", model=net_s, sampler=sampler, steps=STEPS, seed=s)
    mined_runs.append({"loss": "N-pair-mc + hard classes", "seed": s, **run.scores})
mined = pd.DataFrame(mined_runs)
both = pd.concat([results[results.loss == "N-pair-mc"], mined])
hnm = analysis.summarize(both, metrics=("recall@1", "map@r"))
hnm.round(3)'''),
        code(r'''nb.record(untrained_map_at_r=float(results["untrained_map@r"].mean()),
          **{f"map_at_r[{k}]": float(v) for k, v in summary["map@r_mean"].items()},
          **{f"recall_at_1[{k}]": float(v) for k, v in summary["recall@1_mean"].items()},
          hard_batch_loss=float(hardness["hard negative classes"].mean()),
          random_batch_loss=float(hardness["random classes"].mean()),
          map_at_r_hard_classes=float(hnm["map@r_mean"].iloc[-1]),
          recall_at_1_hard_classes=float(hnm["recall@1_mean"].iloc[-1]))'''),
        md(r"""
Hard negative class mining makes every batch harder; whether that helps depends on scale. Sohn reports gains on large class
counts (thousands of product classes) where random batches rarely contain confusable classes. With 60 training classes and
16 classes per batch, random batches already contain a quarter of all classes, and the mined batches concentrate on the few
most confusable ones early in training, which can as well slow training down: compare the two rows above.
"""),
    ]

# =============================================================================================
# 05 soft mining and attention


def nb05() -> list:
    stem = "05_soft_mining_and_attention"
    return [
        md(r"""
# 05 · Online soft mining and class-aware attention (seed 003)

Wang et al. (2019) weight a contrastive loss twice.

**Online soft mining (OSM)** replaces hard selections by continuous weights from the distances $d_{ij}$ of unit embeddings:

$$ s^+_{ij} = e^{-d_{ij}^2/\sigma^2}\ \ (\text{positives: closer ones count more}),\qquad
   s^-_{ij} = [\alpha - d_{ij}]_+\ \ (\text{negatives: closer ones count more}).$$

**Class-aware attention (CAA)** scores every sample by how likely its *own* label is given class centres $c_k$,
$a_i = \frac{\exp(f_i^\top c_{y_i})}{\sum_k \exp(f_i^\top c_k)}$, and a pair by $a_{ij} = \min(a_i, a_j)$: a sample that does not
look like its class (an outlier, a wrong label) gets little attention, and so do all its pairs. With
$w^\pm_{ij} = s^\pm_{ij} a_{ij}$:

$$\mathcal L = (1-\lambda)\frac{\sum_{\mathcal P} w^+_{ij} d_{ij}^2}{\sum_{\mathcal P} w^+_{ij}}
 + \lambda\frac{\sum_{\mathcal N} w^-_{ij}[\alpha - d_{ij}]_+^2}{\sum_{\mathcal N} w^-_{ij}},\qquad
 \sigma = 0.8,\ \alpha = 1.2,\ \lambda = 0.5 .$$

`losses.build("osm_caa", num_classes=..., embedding_dim=...)` owns the centres and trains them with a softmax classifier
(cross-entropy, as the official code); `attention="none"` gives OSM alone. We use `scale=16` (logits $16\cos(f_i, c_k)$):
with unit vectors and scale 1 the softmax over 60 classes is almost uniform and the attention carries no information.
"""),
        code(f'''SEED = 0
{TASK_PARAMS}NOISE = 0.3               # share of training labels flipped to another class
SCALE = 16.0              # logit scale of the CAA classifier
SEEDS = (0, 1)            # seeds of the noisy-label experiment''', parameters=True),
        setup_cell(stem),
        md(r"""
## 1. A toy: one mislabelled point

Two classes in the plane, class 0 around $0^\circ$ and class 1 around $90^\circ$, plus one point **labelled 0 that lies among class 1**.
The centres are set to the class means of the clean points.
"""),
        code(r'''# NBVAL_CHECK_OUTPUT
angles = torch.tensor([-0.2, 0.0, 0.2, 1.37, 1.57, 1.77, 1.6])          # radians; the last one is the outlier
toy = torch.stack([torch.cos(angles), torch.sin(angles)], 1).double()
toy_labels = torch.tensor([0, 0, 0, 1, 1, 1, 0])
caa = losses.build("osm_caa", num_classes=2, embedding_dim=2, scale=4.0).double()
with torch.no_grad():
    caa.centres.copy_(torch.stack([toy[:3].mean(0), toy[3:6].mean(0)]))
attention = caa.sample_attention(toy, toy_labels)
print("attention a_i:", [round(a, 3) for a in attention.tolist()])
pairs = analysis.osm_caa_pair_table(caa, toy, toy_labels, flags=torch.arange(7) == 6)
print(pairs.groupby(["pair", "flagged"])[["osm", "attention", "weight"]].mean().round(3).to_string())'''),
        md(r"""
OSM alone would give the outlier's negative pairs (with the class-1 points right next to it) the **largest** weights ($[\alpha - d]_+$
is largest for the closest negatives) and its positive pairs small ones: a wrong label would be pushed hard. CAA multiplies all
of its pairs by its tiny attention, so they hardly count.

## 2. Training on noisy labels

A share `NOISE` of the training labels is flipped to a random other class (`analysis.inject_label_noise`). The same small CNN is
trained with OSM+CAA, with OSM alone, and (reference) with OSM+CAA on the clean labels; scores are on the unseen test classes.
"""),
        code(TASK_CELL),
        code(r'''noisy_labels, flipped = analysis.inject_label_noise(task.y, NOISE, seed=SEED)
print(f"{int(flipped.sum())} of {len(flipped)} training labels flipped")
CONDITIONS = {"OSM+CAA": ("osm_caa", {"scale": SCALE}),
              "OSM only": ("osm_caa", {"scale": SCALE, "attention": "none"})}
runs = {}
noisy = analysis.run_ablation(task, CONDITIONS, seeds=SEEDS, steps=STEPS, labels=noisy_labels, runs=runs)
clean = analysis.run_ablation(task, {"OSM+CAA, clean labels": ("osm_caa", {"scale": SCALE})}, seeds=SEEDS, steps=STEPS)
results = pd.concat([noisy, clean], ignore_index=True)
summary = analysis.summarize(results, metrics=("untrained_map@r", "recall@1", "map@r"))
summary.round(3)'''),
        md(r"""
## 3. What the attention does to the mislabelled samples

After training, every training image is embedded and its attention $a_i$ computed with its (noisy) label.
"""),
        code(r'''caa_run = runs[("OSM+CAA", SEEDS[0])]
train_emb = analysis.embed(caa_run.model, task.X)
with torch.no_grad():
    a = caa_run.loss.sample_attention(train_emb, noisy_labels).numpy()
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
bins = np.linspace(0, 1, 31)
axes[0].hist(a[~flipped.numpy()], bins=bins, alpha=0.7, density=True, color=plotting.POS_COLOR, label="correct label")
axes[0].hist(a[flipped.numpy()], bins=bins, alpha=0.7, density=True, color=plotting.NEG_COLOR, label="flipped label")
axes[0].set_xlabel("class-aware attention $a_i$"); axes[0].set_ylabel("density"); axes[0].legend(fontsize="small")
axes[0].set_title("attention of the training samples")
batch_idx = torch.as_tensor(next(iter(data.PKSampler(noisy_labels.numpy(), P=8, K=4, seed=SEED))))
table = analysis.osm_caa_pair_table(caa_run.loss, train_emb[batch_idx], noisy_labels[batch_idx], flags=flipped[batch_idx])
for flag, color, name in ((False, plotting.POS_COLOR, "clean pairs"), (True, plotting.NEG_COLOR, "pairs with a flipped sample")):
    sel = table[table.flagged == flag]
    axes[1].scatter(sel.distance, sel.weight, s=8, alpha=0.5, color=color, label=name)
axes[1].set_xlabel("distance $d_{ij}$"); axes[1].set_ylabel("OSM x CAA weight $w_{ij}$"); axes[1].set_yscale("log")
axes[1].legend(fontsize="small"); axes[1].set_title("pair weights of one batch")
nb.save_fig("attention")
att = pd.Series({"clean": a[~flipped.numpy()].mean(), "flipped": a[flipped.numpy()].mean()}, name="mean attention")
att.round(3)'''),
        code(r'''nb.record(attention_clean=float(att["clean"]), attention_flipped=float(att["flipped"]),
          untrained_map_at_r=float(results["untrained_map@r"].mean()),
          **{f"map_at_r[{k}]": float(v) for k, v in summary["map@r_mean"].items()},
          **{f"recall_at_1[{k}]": float(v) for k, v in summary["recall@1_mean"].items()},
          noise=NOISE, flipped=int(flipped.sum()))'''),
        md(r"""
The attention does what seed 003 claims: samples whose label is wrong get a much lower $a_i$ than correctly labelled ones, and
every pair they take part in is down-weighted. Whether this turns into better retrieval on *unseen* classes is a separate
question: compare the MAP@R rows of the table (mean ± std over seeds). On this small task the gain, if any, is within the
seed-to-seed spread; the noise mostly costs OSM and OSM+CAA alike relative to the clean-label reference. One more caveat: the
attention is only as good as the classifier behind it. With few images per class and long training the classifier memorises
the wrong labels too, and every $a_i$ goes to 1 (we saw this on a 160-image version of this task). The official code
additionally maps $p_i$ through a Gaussian (`attention="gaussian"`) and treats the weights as constants in the backward pass
(`detach_weights=True`, the default here).
"""),
    ]

BUILDERS = {"01_contrastive_and_triplet": nb01, "03_unified_weight_view": nb03,
            "02_lifted_structure_and_npair": nb02, "04_multi_similarity_ablation": nb04,
            "05_soft_mining_and_attention": nb05}


def sync_markdown(stem: str, cells: list) -> Path:
    """Update only the Markdown cells of an executed notebook (keeps its outputs); refuses when
    a code cell differs from the generator (then the notebook must be rebuilt and rerun)."""
    path = NOTEBOOKS / f"{stem}.ipynb"
    nb = nbformat.read(path, as_version=4)
    if len(nb.cells) != len(cells) or any(
            old.cell_type != new.cell_type or (old.cell_type == "code" and old.source != new.source)
            for old, new in zip(nb.cells, cells)):
        raise SystemExit(f"{stem}: code cells changed; rebuild and rerun instead of --markdown")
    for old, new in zip(nb.cells, cells):
        if old.cell_type == "markdown":
            old.source = new.source
    nbformat.write(nb, path)
    return path


def main(args: list[str]) -> None:
    markdown_only = "--markdown" in args
    only = [a for a in args if not a.startswith("--")]
    for stem, build in BUILDERS.items():
        if only and not any(stem.startswith(o) for o in only):
            continue
        if markdown_only:
            print("updated Markdown of", sync_markdown(stem, build()))
        else:
            print("wrote", write(stem, build()))


if __name__ == "__main__":
    main(sys.argv[1:])
