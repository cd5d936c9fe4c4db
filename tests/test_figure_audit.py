"""dmlkit.figure_audit: each rule fails on a small figure with its defect and passes without."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from dmlkit import figure_audit, notebook, plotting
from dmlkit.figure_audit import audit_figure, record_audit


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def rules(fig):
    return [v.rule for v in audit_figure(fig)]


def labelled(ax, x="x", y="y"):
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    return ax


def test_titles_that_run_into_each_other():
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax in axes:
        labelled(ax).plot([0, 1], [0, 1])
    axes[0].set_title("a long title that runs into the next panel's own title")
    axes[1].set_title("the next panel's own long title")
    found = audit_figure(fig)
    assert [v.rule for v in found] == ["overlap"]
    assert "title" in found[0].detail and "next panel" in found[0].detail
    axes[0].set_title("left")
    axes[1].set_title("right")
    assert audit_figure(fig) == []


def test_colliding_tick_labels():
    fig, ax = plt.subplots(figsize=(2.5, 2.5))
    labelled(ax).plot(np.linspace(-1, 1, 9), np.zeros(9))
    ax.set_xticks(np.linspace(-1, 1, 9))
    found = audit_figure(fig)
    assert found and {v.rule for v in found} == {"overlap"}
    assert all("x tick label" in v.detail for v in found)
    ax.set_xticks([-1, 0, 1])
    assert audit_figure(fig) == []


def test_log_axis_minor_labels_collide():
    """Matplotlib's minor labels "3x10^2 4x10^2 ..." on a narrow log axis."""
    fig, ax = plt.subplots(figsize=(2.0, 2.0))
    labelled(ax).plot([256, 512, 1024], [1, 2, 3])
    ax.set_xscale("log")
    assert "overlap" in rules(fig)
    plotting.plain_log_axis(ax, "x", [256, 512, 1024])   # the batch sizes themselves
    assert "overlap" not in rules(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["256", "512", "1,024"]


def test_axis_labels_required_where_ticks_are_shown():
    fig, axes = plt.subplots(1, 2, figsize=(6, 3), sharey=True)
    axes[0].plot([0, 1], [0, 1])
    axes[0].set_xlabel("epoch")
    axes[1].plot([0, 1], [1, 0])
    axes[1].set_xlabel("epoch")
    found = audit_figure(fig)
    # the first panel lacks its y label; the shared y axis of the second shows no tick labels
    assert [(v.rule, v.axes, v.detail) for v in found] == [
        ("label", "axes 0", "no y label (the axis shows tick labels)")]
    axes[0].set_ylabel("loss")
    assert audit_figure(fig) == []


def test_colorbar_and_empty_axes_are_exempt():
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    im = labelled(axes[0], "column", "row").imshow(np.arange(9).reshape(3, 3))
    fig.colorbar(im, ax=axes[0])
    axes[1].imshow(np.eye(3))                  # an image without ticks needs no labels
    axes[1].set(xticks=[], yticks=[])
    assert audit_figure(fig) == []
    fig.supylabel("shared")    # a figure-level label counts for every axes
    axes[0].set_ylabel("")
    assert audit_figure(fig) == []


def test_legend_over_a_line():
    fig, ax = plt.subplots(figsize=(4, 3))
    x = np.linspace(0, 1, 50)
    labelled(ax).plot(x, x, label="rising")
    ax.plot(x, 1 - x, label="falling")
    ax.legend(loc="upper left")       # the falling line starts in the upper left corner
    found = audit_figure(fig)
    assert [v.rule for v in found] == ["legend"] and "data points" in found[0].detail
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))   # beside the axes
    assert audit_figure(fig) == []


def test_legend_over_an_error_bar_and_a_bar():
    fig, ax = plt.subplots(figsize=(4, 3))
    labelled(ax).errorbar([0, 1, 2], [1, 1, 9], yerr=[0.5, 0.5, 1.5], fmt="none",
                          label="interval")
    ax.set(xlim=(-0.5, 2.5), ylim=(0, 11))
    ax.legend(loc="upper right")
    assert rules(fig) == ["legend"]
    ax.legend(loc="upper left")
    assert audit_figure(fig) == []

    fig, ax = plt.subplots(figsize=(4, 3))
    labelled(ax).bar([0, 1, 2], [1, 1, 9], label="bars")
    ax.legend(loc="upper right")
    found = audit_figure(fig)
    assert [v.rule for v in found] == ["legend"] and "1 bars" in found[0].detail
    ax.legend(loc="upper left")
    assert audit_figure(fig) == []


def test_scatter_under_a_legend():
    fig, ax = plt.subplots(figsize=(4, 3))
    labelled(ax).scatter([0.05, 0.5], [0.95, 0.5], label="points")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    assert rules(fig) == ["legend"]
    ax.legend(loc="lower right")
    assert audit_figure(fig) == []


def test_record_audit_appends_one_line_per_figure(tmp_path):
    path = tmp_path / "audit.jsonl"
    good, ax = plt.subplots()
    labelled(ax).plot([0, 1])
    bad, ax = plt.subplots()
    ax.plot([0, 1])
    assert record_audit(good, "good", path) == []
    assert len(record_audit(bad, "bad", path)) == 2
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    assert [r["figure"] for r in lines] == ["good", "bad"]
    assert lines[0]["violations"] == []
    assert {v["rule"] for v in lines[1]["violations"]} == {"label"}


def test_save_fig_audits_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("DMLKIT_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("DMLKIT_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv(figure_audit.AUDIT_ENV, str(tmp_path / "audit.jsonl"))
    nb = notebook.setup("99_audit", seed=0)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    nb.save_fig("curve", fig)
    assert (tmp_path / "figures" / "99_audit_curve.png").exists()
    (line,) = (json.loads(s) for s in (tmp_path / "audit.jsonl").read_text().splitlines())
    assert line["figure"] == "99_audit_curve" and len(line["violations"]) == 2


def test_tick_labels_that_touch():
    """Notebook 03's weight curves: "-1.00-0.75-0.50" at a gap of 0 px reads as one label."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax in axes:
        labelled(ax).plot(np.linspace(-1, 1, 11), np.linspace(0, 1, 11))
    found = audit_figure(fig)
    assert found and all(v.rule == "overlap" and "x tick label '−" in v.detail for v in found)
    for ax in axes:
        ax.set_xticks(np.linspace(-1, 1, 5))
    assert audit_figure(fig) == []


def test_slanted_tick_labels_by_their_glyphs():
    """Labels at 30 degrees: their upright boxes overlap, the slanted text does not."""
    names = ["metric/every negative", "control/dmlkit", "daml/dmlkit", "control/official"]
    fig, ax = plt.subplots(figsize=(5, 3))
    labelled(ax).bar(range(4), [1, 2, 3, 4])
    ax.set_xticks(range(4), names, rotation=30, ha="right")
    assert audit_figure(fig) == []
    ax.set_xticks(range(4), names, rotation=0, ha="center")   # upright they run together
    assert {v.rule for v in audit_figure(fig)} == {"overlap"}


def test_tick_labels_running_into_the_next_panel():
    """Notebook 01's training figure: long y tick labels of the right panel reach into the
    left one (no text overlaps text there)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    labelled(axes[0]).plot([0, 1], [0, 1])
    labelled(axes[1], "MAP@R (%)", "loss").barh(range(3), [1, 2, 3])
    axes[1].set_yticks(range(3), ["a long loss name", "another long loss name", "a third"])
    found = audit_figure(fig)
    assert found and all(v.rule == "overlap" and "runs into the panel" in v.detail for v in found)
    fig.set_layout_engine("constrained")
    assert audit_figure(fig) == []
