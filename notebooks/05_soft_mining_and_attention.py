# %% [markdown]
# # 05 · Online soft mining and class-aware attention (Wang et al. 2019a)
#
# Wang et al. (2019a) weight a contrastive loss twice.
#
# **Online soft mining (OSM)** replaces hard selections by continuous weights from the distances $d_{ij}$ of unit embeddings:
#
# $$ s^+_{ij} = e^{-d_{ij}^2/\sigma^2}\ \ (\text{positives: closer ones count more}),\qquad
#    s^-_{ij} = [\alpha - d_{ij}]_+\ \ (\text{negatives: closer ones count more}).$$
#
# **Class-aware attention (CAA)** scores every sample by how likely its *own* label is given class centres $c_k$,
# $a_i = \frac{\exp(f_i^\top c_{y_i})}{\sum_k \exp(f_i^\top c_k)}$, and a pair by $a_{ij} = \min(a_i, a_j)$: a sample that does not
# look like its class (an outlier, a wrong label) gets little attention, and so do all its pairs. With
# $w^\pm_{ij} = s^\pm_{ij} a_{ij}$:
#
# $$\mathcal L = (1-\lambda)\frac{\sum_{\mathcal P} w^+_{ij} d_{ij}^2}{\sum_{\mathcal P} w^+_{ij}}
#  + \lambda\frac{\sum_{\mathcal N} w^-_{ij}[\alpha - d_{ij}]_+^2}{\sum_{\mathcal N} w^-_{ij}},\qquad
#  \sigma = 0.8,\ \alpha = 1.2,\ \lambda = 0.5 .$$
#
# `losses.build("osm_caa", num_classes=..., embedding_dim=...)` owns the centres and trains them with a softmax classifier
# (cross-entropy, as the official code); `attention="none"` gives OSM alone. We use `scale=16` (logits $16\cos(f_i, c_k)$):
# with unit vectors and scale 1 the logits lie in $[-1, 1]$, so over 60 classes every $a_i$ lies between
# $e^{-1}/(e^{-1} + 59e) \approx 0.002$ and $e/(e + 59e^{-1}) \approx 0.11$: a nearly flat attention.

# %% tags=["parameters"]
SEED = 0
NUM_CLASSES = 60          # glyph training classes
NUM_TEST_CLASSES = 40     # unseen test classes
IMAGES_PER_CLASS = 16
IMAGE_SIZE = 16
DIFFICULTY = 0.3
STEPS = 120               # optimisation steps per training run
NOISE = 0.3               # share of training labels flipped to another class
SCALE = 16.0              # logit scale of the CAA classifier
SEEDS = (0, 1)            # seeds of the noisy-label experiment
SOLUTIONS = False         # fill in the reference solutions of the exercises

# %%
from dmlkit import notebook
nb = notebook.setup("05_soft_mining_and_attention", seed=SEED)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from dmlkit import data, exercises, losses, paired, pairs, plotting, tables, tasks

# %% [markdown]
# ## 1. A toy: one mislabelled point
#
# Two classes in the plane, class 0 around $0^\circ$ and class 1 around $90^\circ$, plus one point **labelled 0 that lies among class 1**.
# The centres are set to the class means of the clean points.

# %% tags=["nbval-check-output"]
angles = torch.tensor([-0.2, 0.0, 0.2, 1.37, 1.57, 1.77, 1.6])          # radians; the last one is the outlier
toy = torch.stack([torch.cos(angles), torch.sin(angles)], 1).double()
toy_labels = torch.tensor([0, 0, 0, 1, 1, 1, 0])
caa = losses.build("osm_caa", num_classes=2, embedding_dim=2, scale=4.0).double()
with torch.no_grad():
    caa.centres.copy_(torch.stack([toy[:3].mean(0), toy[3:6].mean(0)]))
attention = caa.sample_attention(toy, toy_labels)
print("attention a_i:", [round(a, 3) for a in attention.tolist()])
pair_table = pairs.osm_caa_pair_table(caa, toy, toy_labels, flags=torch.arange(7) == 6)
print(pair_table.groupby(["pair", "flagged"])[["osm", "attention", "weight"]].mean().round(3).to_string())

# %%
toy_means = pair_table.groupby(["pair", "flagged"])[["osm", "attention", "weight"]].mean()
nb.record(**{f"toy_{col}[{pair}, {'outlier' if flag else 'clean'}]": float(v)
             for (pair, flag), row in toy_means.iterrows() for col, v in row.items()})

# %% [markdown]
# OSM alone would give the outlier's negative pairs (with the class-1 points right next to it) the **largest** weights ($[\alpha - d]_+$
# is largest for the closest negatives) and its positive pairs small ones: a wrong label would be pushed hard. CAA multiplies all
# of its pairs by its small attention: its negative pairs' weights drop to the order of the clean negative pairs' (column
# `weight`), its positive pairs' far below the clean positive pairs'.
#
# ### Your turn: the OSM weights and the attention
#
# **Exercise 1 (implement, ~10 min).** Write `osm_weights(D, pos, neg, sigma=0.8, alpha=1.2)`: from the distances $D$
# ($B \times B$, unit embeddings) and the masks of the positive and negative pairs, return `(w_pos, w_neg)`, two $(B, B)$
# tensors: $s^+_{ij} = e^{-d_{ij}^2/\sigma^2}$ on the positive pairs, $s^-_{ij} = [\alpha - d_{ij}]_+$ on the negative pairs, 0
# elsewhere (OSM alone). The next cell checks it against the weights of `losses.build("osm_caa", attention="none")` on
# several batches (one class, singletons, ties, half precision); stuck? `exercises.hint("osm_weights", 1)` (levels 1-3).

# %%
def osm_weights(D, pos, neg, sigma=0.8, alpha=1.2):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    osm_weights = exercises.solution("osm_weights")
exercises.check("osm_weights", osm_weights)

# %% [markdown]
# **Exercise 2 (implement, ~15 min).** Write `caa_attention(f, labels, centres, scale=1.0)`: with the logits
# $z_{ik} = \text{scale} \cdot \cos(f_i, c_k)$ of the embeddings $f$ $(B, E)$ against the centres $c$ $(C, E)$, the attention of
# sample $i$ is $a_i = \operatorname{softmax}_k(z_i)_{y_i}$; return the $(B, B)$ pair attention $a_{ij} = \min(a_i, a_j)$, stable
# for a large scale. Checked against the loss's `pair_attention`.

# %%
def caa_attention(f, labels, centres, scale=1.0):
    raise NotImplementedError  # your code here


# %%
if SOLUTIONS:
    caa_attention = exercises.solution("caa_attention")
exercises.check("caa_attention", caa_attention)

# %% [markdown]
# **Exercise 3 (experiment, ~10 min, not graded).** Re-run the toy cell of section 1 with `scale=1.0` instead of 4.0. Before
# you do, write what you expect for the outlier's attention, the clean samples' attention and the outlier's pair weights,
# and why; the check cell then tells you what should happen, and the rerun shows what does.

# %%
scale_expectation = ...  # your expectation, as a string


# %%
if SOLUTIONS:
    scale_expectation = exercises.solution("scale_experiment")
exercises.check("scale_experiment", scale_expectation)

# %% [markdown]
# ## 2. Training on noisy labels
#
# A share `NOISE` of the training labels is flipped to a random other class (`tasks.inject_label_noise`). The same small CNN is
# trained with OSM+CAA, with OSM alone, and (reference) with OSM+CAA on the clean labels; scores are on the unseen test classes.

# %%
task = tasks.image_task("glyphs", num_classes=NUM_CLASSES, num_test_classes=NUM_TEST_CLASSES,
                        images_per_class=IMAGES_PER_CLASS, size=IMAGE_SIZE, difficulty=DIFFICULTY)
display(task)

# %%
noisy_labels, flipped = tasks.inject_label_noise(task.y, NOISE, seed=SEED)
print(f"{int(flipped.sum())} of {len(flipped)} training labels flipped")
CONDITIONS = {"OSM+CAA": ("osm_caa", {"scale": SCALE}),
              "OSM only": ("osm_caa", {"scale": SCALE, "attention": "none"})}
runs = {}
noisy = tasks.run_ablation(task, CONDITIONS, seeds=SEEDS, steps=STEPS, labels=noisy_labels, runs=runs)
clean = tasks.run_ablation(task, {"OSM+CAA, clean labels": ("osm_caa", {"scale": SCALE})}, seeds=SEEDS, steps=STEPS)
ablation = pd.concat([noisy, clean], ignore_index=True)
summary = tasks.summarize(ablation, metrics=("untrained_map@r", "recall@1", "map@r"))
display(tables.summary_table(summary, metrics=("untrained_map@r", "recall@1", "map@r")))

# %% [markdown]
# Two questions, each a paired comparison by seed with a 95 % t interval over the `len(SEEDS)` seeds (with two seeds the
# interval has one degree of freedom, $t_{0.975} = 12.7$: only a large and consistent difference gets a verdict):
# does the attention help on flipped labels (OSM+CAA against OSM alone, same seed: same initialisation and batches), and
# what do the flipped labels cost OSM+CAA (clean against flipped labels, same seed: same initialisation)?

# %%
verdict_lines = []
caa_verdicts = paired.report(noisy, baseline="OSM only", metrics=("recall@1", "map@r"), run="loss", scale=100,
                             printer=verdict_lines.append)
noise_verdicts = paired.report(ablation, baseline="OSM+CAA", runs=["OSM+CAA, clean labels"],
                               metrics=("recall@1", "map@r"), run="loss", scale=100, printer=verdict_lines.append)
verdicts = pd.concat([caa_verdicts, noise_verdicts])
display(verdicts)
print("\n".join(verdict_lines))
nb.record(**paired.verdict_record(verdicts))

# %% [markdown]
# ## 3. What the attention does to the mislabelled samples
#
# After training, every training image is embedded and its attention $a_i$ computed with its (noisy) label.

# %%
caa_run = runs[("OSM+CAA", SEEDS[0])]
train_emb = tasks.embed(caa_run.model, task.X)
with torch.no_grad():
    a = caa_run.loss.sample_attention(train_emb, noisy_labels).numpy()
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
bins = np.linspace(0, 1, 31)
axes[0].hist(a[~flipped.numpy()], bins=bins, alpha=0.7, density=True, color=plotting.POS_COLOR, label="correct label")
axes[0].hist(a[flipped.numpy()], bins=bins, alpha=0.7, density=True, color=plotting.NEG_COLOR, label="flipped label")
axes[0].set_xlabel("class-aware attention $a_i$")
axes[0].set_ylabel("density")
axes[0].legend(fontsize="small")
axes[0].set_title("attention of the training samples")
batch_idx = torch.as_tensor(next(iter(data.PKSampler(noisy_labels.numpy(), P=8, K=4, seed=SEED))))
table = pairs.osm_caa_pair_table(caa_run.loss, train_emb[batch_idx], noisy_labels[batch_idx], flags=flipped[batch_idx])
for flag, color, name in ((False, plotting.POS_COLOR, "clean pairs"), (True, plotting.NEG_COLOR, "pairs with a flipped sample")):
    sel = table[table.flagged == flag]
    axes[1].scatter(sel.distance, sel.weight, s=8, alpha=0.5, color=color, label=name)
axes[1].set_xlabel("distance $d_{ij}$")
axes[1].set_ylabel("OSM x CAA weight $w_{ij}$")
axes[1].set_yscale("log")
axes[1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))   # beside the points
axes[1].set_title("pair weights of one batch")
nb.save_fig("attention")
att = pd.Series({"clean": a[~flipped.numpy()].mean(), "flipped": a[flipped.numpy()].mean()}, name="mean attention")
att.round(3)

# %%
nb.record(attention_clean=float(att["clean"]), attention_flipped=float(att["flipped"]),
          untrained_map_at_r=float(ablation["untrained_map@r"].mean()),
          **{f"map_at_r[{k}]": float(v) for k, v in summary["map@r_mean"].items()},
          **{f"recall_at_1[{k}]": float(v) for k, v in summary["recall@1_mean"].items()},
          noise=NOISE, flipped=int(flipped.sum()), seeds=len(SEEDS))

# %% [markdown]
# The attention does what Wang et al. 2019a claim on this run (first seed): samples whose label is wrong get a much lower mean
# $a_i$ than correctly labelled ones (table above), and every pair they take part in is down-weighted ($a_{ij} = \min(a_i, a_j)$).
# Whether this turns into better retrieval on *unseen* classes is a separate question, answered by the verdicts of section 2
# for this task and number of seeds. One more caveat: the attention is only as good as the classifier behind it. A classifier
# that fits the wrong labels too (more likely with few images per class and long training) gives the mislabelled samples a
# high $a_i$ as well, and the down-weighting is gone; this notebook does not run that case. The official code additionally maps
# $p_i$ through a Gaussian (`attention="gaussian"`) and treats the weights as constants in the backward pass
# (`detach_weights=True`, the default here).
