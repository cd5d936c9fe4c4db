# %% [markdown]
# # 03 · The unified weight view (Wang et al. 2019b, Theorem 3.1)
#
# Almost every pair-based loss is a function $H(S, y)$ of the similarity matrix $S$, $s_{ij} = \langle f_i, f_j\rangle$.
# Wang et al. (2019b) show that at any iteration such a loss is **gradient-equivalent** to a weighted sum of similarities:
#
# $$
# F(S) = \sum_i \Big[\sum_{k\in\mathcal N_i} w_{ik}\, s_{ik} \;-\; \sum_{j \in \mathcal P_i} w_{ij}\, s_{ij}\Big],
# \qquad
# w_{ij} = -\frac{\partial H}{\partial s_{ij}}\ (\text{positive}),\quad
# w_{ij} = +\frac{\partial H}{\partial s_{ij}}\ (\text{negative}),
# $$
#
# with the weights held fixed at the current $S$ (Wang et al. 2019b write a factor $\tfrac12$ because it counts each unordered pair once;
# on the ordered matrix it goes). So a loss *is* a rule that assigns a non-negative weight to every pair. This notebook
#
# 1. checks Theorem 3.1 numerically for **every** loss of `dmlkit` (`weights.theorem_3_1_check`),
# 2. draws weight-vs-similarity curves (Wang et al. 2019b, Figure 1) and overlays the closed forms on the autograd weights,
# 3. looks at the OSM weights, which need real embeddings, and
# 4. follows the weights of one loss during a short training run, and
# 5. ends with the **weight explorer**: move $\alpha$, $\beta$, $\lambda$, $\epsilon$ or a margin and watch the curves of section 2 change.
#
# `dmlkit.weights.pair_weights(loss, embeddings, labels)` gives $W$ by autograd on a leaf $S$.

# %% tags=["parameters"]
SEED = 0
NUM_CLASSES = 60          # glyph training classes
NUM_TEST_CLASSES = 40     # unseen test classes
IMAGES_PER_CLASS = 16
IMAGE_SIZE = 16
DIFFICULTY = 0.3
STEPS = 120               # optimisation steps per training run
SNAPSHOTS = 3            # weight snapshots during training (first, ..., last step)
CURVE_POINTS = 101        # grid of the weight-vs-similarity curves
SOLUTIONS = False         # fill in the reference solutions of the exercises

# %%
from dmlkit import notebook
nb = notebook.setup("03_unified_weight_view", seed=SEED)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, display

from dmlkit import data, exercises, losses, plotting, tables, tasks, train, weights

# %% [markdown]
# ## 1. Theorem 3.1, every loss
#
# For a fixed batch (24 random 8-d embeddings, 6 classes, float64) we compare the gradient of each loss with respect to the embeddings
# with the gradient of its surrogate $F$. Where Wang et al. 2019b give a closed form (contrastive eq. 6, triplet eq. 8, generalised lifted
# eq. 10-11, binomial eq. 13-14, RAW eq. 15-16 on the mined pairs) we also compare the autograd weights with it
# (`weights.closed_form_weights`, computed independently; triplet weights by brute-force enumeration of the triplets).

# %% tags=["nbval-check-output"]
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
theorem = weights.theorem_table(THEOREM_SPECS, check_emb, check_labels)
summary = pd.DataFrame({
    "loss": theorem["loss"],
    "grad(L) == grad(F)": theorem["max_grad_diff"] < 1e-10,
    "weights >= 0": theorem["min_weight"] >= 0,
    "closed form == autograd": theorem["closed_form_err"].map(
        lambda e: "n/a" if np.isnan(e) else bool(e < 1e-10)),
    "share of active pairs": theorem["active_pairs"].round(2),
})
print(summary.to_string(index=False))

# %%
# as HTML with a fixed table id (a Styler shows a random id and its memory address): a rerun
# writes the same notebook; a loss without a closed form shows n/a, as in the table above
HTML(theorem.style.set_uuid("theorem").format({
    "max_grad_diff": "{:.1e}", "max_grad": "{:.3f}", "min_weight": "{:.1e}",
    "active_pairs": "{:.2f}", "closed_form_err": "{:.1e}"}, na_rep="n/a").to_html())

# %%
nb.record(theorem_max_grad_diff=float(theorem["max_grad_diff"].max()),
          closed_form_max_err=float(theorem["closed_form_err"].max(skipna=True)),
          theorem_losses=len(theorem), min_weight=float(theorem["min_weight"].min()))
# OSM+CAA with gradient through its weights (not the official code's default): the smallest positive-pair weight
osm_live = losses.build("osm_caa", num_classes=6, embedding_dim=8, detach_weights=False).double()
_, W_live = weights.pair_weights(osm_live, check_emb, check_labels)
live_pos = losses.make_batch(check_emb, check_labels).pos
print(f"OSM+CAA, detach_weights=False: smallest positive-pair weight {float(W_live[live_pos].min()):.2e}")
nb.record(osm_caa_live_min_pos_weight=float(W_live[live_pos].min()))

# %% [markdown]
# The difference is at the level of float64 round-off for every loss: the gradient of a pair-based loss *is* the gradient of a
# weighted sum of similarities. Two caveats the table hides. N-pair's L2 penalty on the norms is not a function of $S$: it is
# added to both sides (`PairLoss.regularizer`) and has no pair weights. OSM+CAA satisfies the theorem because its official
# code treats the weights as constants in the backward pass (`detach_weights=True`); with gradient through the weights some
# positive-pair weights turn negative (the line printed under the table: the smallest one on the same batch).
#
# ## 2. Weight versus similarity (Wang et al. 2019b, Figure 1)
#
# One anchor faces three positives with $s = 0.6, 0.7, 0.8$, three negatives with $s = 0.2, 0.3, 0.4$ and one more pair whose
# similarity sweeps $[-1, 1]$ (`weights.weight_curve`). Curves are scaled to a maximum of 1 so that shapes compare.
#
# **Exercise 1 (predict, ~5 min).** Before the curves: the contrastive loss in its similarity form (sum reduction,
# $\lambda = 0.5$) of an anchor with three negative pairs of similarities 0.2, 0.6 and 0.9. Predict the weight
# $w_{ij} = \partial L / \partial s_{ij}$ of each (three numbers).

# %%
contrastive_weights = ...  # your prediction: three weights


# %%
if SOLUTIONS:
    contrastive_weights = exercises.solution("contrastive_weights")
exercises.check("contrastive_weights", contrastive_weights)

# %% [markdown]
# The curves:

# %%
CURVE_LOSSES = {
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
nb.save_fig("weight_curves")

# %% [markdown]
# What the curves say (Wang et al. 2019b, Sec. 4):
#
# * **contrastive** weights a negative pair 1 once $s > \lambda$ and every positive 1: it ignores how hard a pair is;
# * **triplet** weights a pair by the number of violated triplets it is in: a step each time $s$ crosses a context pair $\pm$ margin;
# * **lifted** and **RAW** are *relative*: a negative's weight is a softmax of $s$ over the anchor's negatives, so it grows with its own
#   similarity *and* shrinks when the other negatives are harder;
# * **binomial** is *self-similarity* only (a sigmoid of $s - \lambda$): it does not look at the other pairs;
# * **multi-similarity** is RAW restricted to the VTHM pairs: the negative weight is zero until $s$ comes within $\epsilon$ of the
#   hardest positive (0.6 here), the positive weight is zero once $s$ exceeds the hardest negative (0.4) $+\,\epsilon$.
#
# **Exercise 2 (implement, ~10 min).** The negative part of the multi-similarity loss of anchor $i$ is
# $\frac1\beta \log\big(1 + \sum_{k\in\mathcal N_i} e^{\beta(s_{ik} - \lambda)}\big)$. Write `ms_negative_weights(S, neg, beta=50.0, lam=0.5)`:
# the closed form of its weight $w_{ij} = \partial L / \partial s_{ij}$ on every negative pair, 0 elsewhere, a $(B, B)$ tensor that
# stays finite for float16 `S` too. The check compares it with dmlkit's RAW weights (eq. 16); stuck?
# `exercises.hint("ms_negative_weights", 1)`.

# %%
def ms_negative_weights(S, neg, beta=50.0, lam=0.5):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    ms_negative_weights = exercises.solution("ms_negative_weights")
exercises.check("ms_negative_weights", ms_negative_weights)

# %% [markdown]
# ## 3. Closed forms on top of autograd, on real embeddings
#
# Embeddings of one $P \times K$ batch of glyphs from an untrained network. The dots are autograd weights (`pair_weights`), the
# black rings around them the closed forms (binomial eq. 13-14, multi-similarity eq. 15-16 on the VTHM pairs).

# %%
task = tasks.image_task("glyphs", num_classes=NUM_CLASSES, num_test_classes=NUM_TEST_CLASSES,
                        images_per_class=IMAGES_PER_CLASS, size=IMAGE_SIZE, difficulty=DIFFICULTY)
display(task)

# %%
net0 = tasks.build_net(embedding_dim=32, seed=SEED)
batch_idx = torch.as_tensor(next(iter(data.PKSampler(task.y.numpy(), P=8, K=4, seed=SEED))))
probe_emb = tasks.embed(net0, task.X[batch_idx]).double()
probe_labels = task.y[batch_idx]

fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
closed_errors = {}
for ax, (name, label) in zip(axes[:2], (("binomial", "binomial"), ("multi_similarity", "multi-similarity"))):
    loss = losses.build(name)
    S, W = weights.pair_weights(loss, probe_emb, probe_labels)
    _, W_closed = weights.closed_form_weights(loss, probe_emb, probe_labels)
    b = losses.make_batch(probe_emb, probe_labels)
    plotting.plot_pair_weights(S, W, b.pos, b.neg, ax=ax, title=label, legend=False)
    # the closed forms as hollow rings around the dots: both stay visible
    ax.scatter(S[b.pos | b.neg], W_closed[b.pos | b.neg], marker="o", s=40, facecolors="none",
               edgecolors="k", lw=0.5, label="closed form (ring)")
    closed_errors[label] = float((W - W_closed).abs().max())

# OSM + CAA needs the embeddings themselves (class centres): weights of a real batch
osm = losses.build("osm_caa", num_classes=task.num_classes, embedding_dim=32).double()
S, W = weights.pair_weights(osm, probe_emb, probe_labels)
b = losses.make_batch(probe_emb, probe_labels)
plotting.plot_pair_weights(S, W, b.pos, b.neg, ax=axes[2], title="OSM+CAA (no closed form here)", legend=False)
handles, names = axes[0].get_legend_handles_labels()
fig.legend(handles, ["positive pairs (autograd)", "negative pairs (autograd)", names[-1]],
           loc="outside lower center", ncols=3, fontsize="small")
fig.suptitle("pair weights of one batch of the untrained network")
nb.save_fig("closed_vs_autograd")
nb.record(batch_closed_form_err=max(closed_errors.values()))
pd.Series({k: tables.scientific(v) for k, v in closed_errors.items()}).to_frame(
    "largest |autograd - closed form| weight")

# %% [markdown]
# OSM (Wang et al. 2019a) gives positives a weight that *decreases* with distance (closer positives count more, $e^{-d^2/\sigma^2}$) and negatives
# one that grows as they get closer ($[\alpha - d]_+$); the class-aware attention then scales every pair by $\min(a_i, a_j)$, which is
# why the OSM+CAA scatter is not a single curve of $s$ (notebook 05 looks at it closely).
#
# ## 4. How the weights move during training
#
# A small CNN is trained with the multi-similarity loss; at a few steps we freeze a probe batch and read its pair weights.
# The panels share the similarity axis: at step 0 the untrained network maps every glyph of the probe batch to nearly the
# same direction, so every pair sits at $s \approx 1$ (one column at the right; the range is in the panel's title) and VTHM
# keeps all of them; training spreads the similarities out.

# %%
snapshot_steps = sorted({round(t) for t in np.linspace(0, STEPS, SNAPSHOTS)})
run = train.train_embedding(task, "multi_similarity", steps=STEPS, seed=SEED, snapshot_steps=snapshot_steps,
                            probe=(task.X[batch_idx], probe_labels), track_mining=True)
fig, axes = plt.subplots(1, len(snapshot_steps), figsize=(5 * len(snapshot_steps), 3.8), sharey=True,
                         sharex=True)
active = {}
for ax, step in zip(np.atleast_1d(axes), snapshot_steps):
    S, W, pos, neg = run.snapshots[step]
    spread = S[pos | neg]
    title = f"step {step}" + (f" (every s in [{spread.min():.4f}, {spread.max():.4f}])" if step == 0 else "")
    plotting.plot_pair_weights(S, W, pos, neg, ax=ax, title=title)
    active[step] = {"positive pairs weighted": float((W[pos] > 0).mean()),
                    "negative pairs weighted": float((W[neg] > 0).mean()),
                    "mean positive s": float(S[pos].mean()), "mean negative s": float(S[neg].mean())}
nb.save_fig("weights_during_training")
tables.text_table(pd.DataFrame(active).T.rename_axis("step"), formats={
    "positive pairs weighted": tables.percent, "negative pairs weighted": tables.percent}).rename(
    columns={"positive pairs weighted": "positives weighted (%)",
             "negative pairs weighted": "negatives weighted (%)",
             "mean positive s": "mean s, positives", "mean negative s": "mean s, negatives"})

# %%
display(tables.metrics_table({"untrained": run.initial_scores, f"after {STEPS} steps": run.scores}))
first, last = snapshot_steps[0], snapshot_steps[-1]
gap = {t: active[t]["mean positive s"] - active[t]["mean negative s"] for t in (first, last)}
print(f"mean positive s {active[first]['mean positive s']:.3f} -> {active[last]['mean positive s']:.3f}, "
      f"mean negative s {active[first]['mean negative s']:.3f} -> {active[last]['mean negative s']:.3f}: "
      f"their gap {gap[first]:.3f} -> {gap[last]:.3f} (step {first} -> {last})")
S0, _, pos0, neg0 = run.snapshots[first]
nb.record(untrained_map_at_r=run.initial_scores["map@r"], trained_map_at_r=run.scores["map@r"],
          untrained_recall_at_1=run.initial_scores["recall@1"], trained_recall_at_1=run.scores["recall@1"],
          neg_weighted_first=active[first]["negative pairs weighted"],
          neg_weighted_last=active[last]["negative pairs weighted"],
          pos_weighted_first=active[first]["positive pairs weighted"],
          mean_pos_s_first=active[first]["mean positive s"], mean_pos_s_last=active[last]["mean positive s"],
          mean_neg_s_first=active[first]["mean negative s"], mean_neg_s_last=active[last]["mean negative s"],
          s_gap_first=gap[first], s_gap_last=gap[last], probe_min_s_first=float(S0[pos0 | neg0].min()))

# %% [markdown]
# Training separates the classes: starting from one column at $s \approx 1$, the mean negative similarity falls far below the
# mean positive one, so the gap between them widens (the line above; both means start at 1, so both can fall, and between
# later snapshots they can move together). VTHM then keeps fewer pairs (the share of negative pairs with a non-zero weight
# drops) and the weight concentrates on the pairs that still come within $\epsilon$ of the other side. This is the view of
# Wang et al. 2019b: with mining and weighting inside the loss, the loss itself moves its weight to the pairs it has not yet
# separated.

# %% [markdown]
# ## 5. The weight explorer
#
# `dmlkit.explorer.weight_explorer()` draws the curves of section 2 for one loss at a time, with a slider per hyper-parameter
# (the paper's symbols) and per context pair (the anchor's other similarities, the same defaults as above), computed by the
# same `weights.weight_curve`. Weights are unscaled here (`scale to max 1` scales them as in section 2). Run the notebook to
# move the sliders; a page without a live kernel shows the default state as an image. With multi-similarity (VTHM keeps
# a negative once $s > 0.6 - \epsilon$, the hardest positive minus $\epsilon$, and a positive while $s < 0.4 + \epsilon$):
#
# * **move $\beta$**: the swept negative is the only one VTHM keeps here, so its weight is $\sigma(\beta(s - \lambda))$: a
#   large $\beta$ makes it a step at $s = \lambda$, a small one a ramp;
# * **move $\lambda$**: shifts that step (and the positive's ramp $\sigma(-\alpha(s - \lambda))$), while the VTHM cut-offs stay;
# * **move $\alpha$**: the same for the swept positive, $\sigma(-\alpha(s - \lambda))$: a large $\alpha$ keeps every positive
#   below $\lambda$ at a weight near 1 and drops it sharply at $\lambda$, a small one lowers it gradually;
# * **move $\epsilon$**: the zero regions shrink: VTHM admits harder-to-separate pairs on both sides;
# * **move the context**: raise *negative 3* to 0.55: positives up to $s = 0.65$ now get a weight, and a swept negative near
#   $s = 0.55$ shares its weight with negative 3 (a softmax over the kept negatives) and halves;
# * **select `binomial`**: no context slider changes anything: binomial deviance weights a pair by its own similarity only.
#
# The second row weights the real probe batch of section 4 with the same loss and sliders (`weights.pair_weights`): untrained,
# every pair sits at $s \approx 1$; after training, raise $\epsilon$ and watch VTHM admit more of the batch's pairs.
#
# (`tests/test_explorer.py` checks each of these statements on the curves.)

# %%
from dmlkit.explorer import weight_explorer

# the second row: the probe batch of section 4 before and after training, weighted by the loss at the sliders' values
trained_emb = tasks.embed(run.model, task.X[batch_idx]).double()
explorer = weight_explorer("multi_similarity", points=CURVE_POINTS,
                           batches={"untrained": (probe_emb, probe_labels),
                                    f"after {STEPS} steps": (trained_emb, probe_labels)})
nb.save_fig("explorer", explorer.figure())
display(explorer)   # live sliders; where widgets cannot run, the default state as an image
