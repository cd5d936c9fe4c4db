# %% [markdown]
# # 10 · Our results next to the papers'
#
# This notebook reads the results log of notebook 09 (`results/runs.csv`, one row per training
# run) and the published tables of the papers (docs/references.md; shipped with dmlkit as
# `dmlkit/resources/published_results.csv`), and puts them side by side, **with the settings
# that differ**: data set, backbone, embedding size, image size, number of iterations, and how
# the reported model was selected.
#
# Read the comparison with care:
# * runs on `glyphs` / `digits` have no published counterpart (they check the pipeline, not the
#   papers); only CUB-200-2011, Cars196, SOP and In-shop runs are comparable;
# * most papers report the best *test* score over training; dmlkit selects on held-out training
#   classes and tests once (Musgrave et al. 2020 show how much this matters);
# * values are percentages, as printed in the papers;
# * a paper's number is itself uncertain where the package copy says so: rows read from a table
#   reconstructed from a garbled text copy are marked in the column `uncertain` and hatched in
#   the figure (the `note` column of `published_results.csv` says what could not be read); no
#   paper row comes with a spread over runs.

# %% tags=["parameters"]
SEED = 0
RUNS_CSV = None              # None: results/runs.csv (written by notebook 09)
DATASETS = None              # paper data set names to show; None: those of our runs + CUB / Cars196
METRICS = ["R@1", "R@2", "R@4", "R@8", "NMI", "F1", "MAP@R"]
PLOT_DATASET = "CUB-200-2011"

# %%
from dmlkit import notebook
nb = notebook.setup("10_results_vs_papers", seed=SEED)

# %%
from pathlib import Path

import pandas as pd
import matplotlib.pyplot as plt
from IPython.display import display

from dmlkit import leaderboard, paired, reality, results

# %%
csv_path = Path(RUNS_CSV) if RUNS_CSV else nb.results_dir / "runs.csv"
runs = results.read_runs(csv_path)
if runs.empty:
    print(f"No runs yet ({csv_path.name} is missing or empty): run notebook 09 first. "
          "Showing the published results only.")
else:
    print(f"{len(runs)} run(s) in {csv_path.name}:")
    cols = [c for c in ("dataset", "loss", "backbone", "embedding_dim", "epochs", "iterations",
                        "test_recall@1", "test_map@r") if c in runs.columns]
    shown = runs[cols].copy()
    for metric in ("test_recall@1", "test_map@r"):   # x 100, as every table here
        if metric in shown:
            shown[metric] = (100 * shown[metric]).round(1)
    display(shown.rename(columns={"test_recall@1": "test R@1 (%)", "test_map@r": "test MAP@R (%)"}))
published = results.published_results()
print(f"{len(published)} published numbers from {published['paper'].nunique()} sources")

# %% [markdown]
# ## Our own table: eight losses on Fashion-MNIST
#
# The data sets of the papers (CUB-200-2011, Cars196, Stanford Online Products) are not in this
# collection; Fashion-MNIST (Xiao et al. 2017, see docs/references.md) is. The
# table below is a run saved with the package
# (`dmlkit/resources/reality_check_fashion_mnist.csv`, its configuration printed above the
# table), made with `benchmarks/reality_check.py --dataset fashion_mnist ... --save`: the
# reality check of notebook 13 (Musgrave et al. 2020): every loss with the same small CNN,
# embedding size, optimiser, batches and steps; its hyper-parameters tuned with Optuna on
# class-disjoint folds of the five *training* classes; the best setting retrained once per seed
# and tested on the five unseen classes. Ours: mean and 95 % t interval over the seeds, x 100.
#
# Beside it, what each loss's own paper reports (R@1, the source named in the last column) and
# Musgrave et al. 2020's re-run (MAP@R, 128-d). **The rows are not comparable across data
# sets**: 28 x 28 grey photos, five test classes and a small CNN trained from scratch on a short
# budget (printed below), against ImageNet-pretrained GoogLeNet / BN-Inception networks on 98 to
# 11,316 test classes. With five test classes a query's nearest neighbour is often of its class
# even for an untrained network (its scores are printed below): R@1 needs one such neighbour,
# MAP@R all of them ranked first (notebook 08). The table says what this collection measures on
# the data it has, next to what the papers report on theirs.

# %%
fm_runs, fm_config = reality.load_saved(dataset="fashion_mnist")
proto = fm_config["protocol"]
print("data set:", ", ".join(f"{k} = {v}" for k, v in fm_config["dataset"].items()),
      f"({fm_config['train_classes']} training classes, {fm_config['train_images']} images; "
      f"{fm_config['test_classes']} unseen test classes, {fm_config['test_images']} images)")
print(f"every loss: {proto['steps']} Adam steps at lr {proto['lr']}, P x K = {proto['P']} x "
      f"{proto['K']} (as many classes as there are), embedding size {proto['embedding_dim']}, "
      f"CNN width {proto['width']}")
print(f"tuned: {proto['trials']} Optuna trials per loss (TPE, seed {proto['study_seed']}, the "
      f"paper's default first) on {proto['folds']} class-disjoint folds of the training classes; "
      f"retrained over seeds {proto['seeds']}; Optuna {fm_config['versions']['optuna']}, "
      f"torch {fm_config['versions']['torch']}, {fm_config['minutes']} min")
print("command:", fm_config["command"])
print(f"untrained (the same CNN, random weights; mean over the seeds): "
      f"MAP@R {100 * fm_runs['untrained_map@r'].mean():.1f}, "
      f"R@1 {100 * fm_runs['untrained_recall@1'].mean():.1f}")
fm_table = leaderboard.beside_papers(fm_runs, published)
leaderboard.format_beside(fm_table, ours="ours, Fashion-MNIST:", labels=reality.LABELS)

# %% [markdown]
# Which of our differences are within the noise: each loss against contrastive, paired by seed
# (a seed gives every loss the same initial network and batches), and against the loss with the
# highest mean MAP@R. Each interval is a separate 95 % interval, with no correction for the
# number of comparisons.

# %%
fm_lines = []
fm_verdicts = paired.report(fm_runs, baseline="contrastive", metrics=("map@r", "recall@1"),
                            run="loss", scale=100, labels=reality.LABELS, printer=fm_lines.append)
display(fm_verdicts)
print("\n".join(fm_lines))
fm_top = fm_table["MAP@R"].idxmax()
fm_against_top = reality.compare(fm_runs, baseline=fm_top)
if fm_top == "contrastive":
    print("contrastive has the highest mean MAP@R: the verdicts above are those against the top")
else:
    print(paired.summary_sentence(fm_against_top, "map@r", reality.LABELS))
    print(paired.summary_sentence(fm_against_top, "recall@1", reality.LABELS))
nb.record(fm_seeds=int(fm_table["n"].min()), fm_top_map_at_r=reality.LABELS[fm_top],
          fm_optuna=fm_config["versions"]["optuna"],
          untrained_map_at_r=float(fm_runs["untrained_map@r"].mean()),
          fm_untrained_recall_at_1=float(100 * fm_runs["untrained_recall@1"].mean()),
          **{f"map_at_r[{reality.LABELS[k]}]": float(v) for k, v in fm_table["MAP@R"].items()},
          **{f"recall_at_1[{reality.LABELS[k]}]": float(v) for k, v in fm_table["R@1"].items()},
          **paired.verdict_record(fm_verdicts))

# %% [markdown]
# ## The published tables
#
# Every source, data set and metric the papers report (counts of numbers):

# %% tags=["nbval-check-output"]
pd.crosstab([published["paper"], published["dataset"]], published["metric"]
            .where(published["metric"].isin(METRICS), "other"))

# %% [markdown]
# ## Side by side
#
# Our runs first (paper "dmlkit (this repository)"), then the papers' rows on the same data set.

# %%
datasets = DATASETS
if datasets is None:
    datasets = set(results.runs_long(runs)["dataset"]) | {"CUB-200-2011", "Cars196"}
table = results.results_vs_papers(runs, published, datasets=datasets, metrics=METRICS)
garbled = published[published["note"].fillna("").str.contains("garbled")]
uncertain_keys = set(zip(garbled["paper"], garbled["dataset"], garbled["method"]))
table["uncertain"] = [(p, d, m) in uncertain_keys
                      for p, d, m in zip(table["paper"], table["dataset"], table["method"])]
for (paper, dataset), part in garbled.groupby(["paper", "dataset"]):
    notes = "; ".join(sorted(set(part["note"])))
    print(f"uncertain: {len(part)} entries of published_results.csv for {paper} on {dataset} ({notes})")
with pd.option_context("display.max_rows", 200):
    display(table.round(1))

# %% [markdown]
# ## What differs
#
# For each run and each paper reporting on its data set (for the toy data sets, the CUB-200-2011
# papers are listed for orientation): ours vs theirs.

# %%
differences = results.setting_differences(runs, published)
if differences.empty:
    print("no runs: nothing to compare")
display(differences)

# %%
sub = table[table["dataset"] == PLOT_DATASET].dropna(subset=["R@1"])
labels = [f"{m}, {d}-d [{p[:45]}]" for m, d, p in zip(sub["method"], sub["embedding_dim"], sub["paper"])]
fig, ax = plt.subplots(figsize=(7, 0.22 * len(sub) + 1))
colors = ["#d95f02" if p == "dmlkit (this repository)" else "#7570b3" for p in sub["paper"]]
bars = ax.barh(range(len(sub)), sub["R@1"], color=colors)
for bar, uncertain in zip(bars, sub["uncertain"]):
    if uncertain:  # read from a table reconstructed from a garbled copy
        bar.set_hatch("///")
        bar.set_edgecolor("white")
ax.set_yticks(range(len(sub)), labels, fontsize=6)
ax.invert_yaxis()
ax.set_xlabel("R@1 (%)")
ax.set_ylabel("method, embedding size [paper]")
ax.set_title(f"R@1 on {PLOT_DATASET} (orange: dmlkit runs; hatched: from a garbled table)")
nb.save_fig("r_at_1")
plt.show()

# %%
ours = table[table["paper"] == "dmlkit (this repository)"]
nb.record(n_runs=len(runs), n_published=len(published), n_table_rows=len(table),
          n_paper_rows=int((table["paper"] != "dmlkit (this repository)").sum()),
          n_our_rows=len(ours), datasets=sorted(datasets),
          papers=sorted(table["paper"].unique()), n_differences=len(differences),
          n_uncertain_rows=int(table["uncertain"].sum()),
          uncertain_rows=[list(k) for k in sorted(uncertain_keys)],
          marked_rows=[[p, d, m] for p, d, m, u in zip(table["paper"], table["dataset"], table["method"],
                                                       table["uncertain"]) if u])
print(f"{len(table)} table rows: {len(ours)} from our runs, {len(table) - len(ours)} from the papers")
