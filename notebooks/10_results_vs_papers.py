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

from dmlkit import results

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
    display(runs[cols].round(4))
published = results.published_results()
print(f"{len(published)} published numbers from {published['paper'].nunique()} sources")

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
