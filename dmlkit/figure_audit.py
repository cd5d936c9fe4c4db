"""An audit of a matplotlib figure for what makes it hard to read.

:func:`audit_figure` draws a figure (no file written) and returns its violations of three
rules, each a :class:`Violation`:

* ``overlap``: two text elements overlap, or the text of one axes runs into another
  axes' panel -- titles, the suptitle, axis labels, tick labels
  (major and minor, as drawn), offset texts ("1e-3"), annotations and figure texts, a legend
  taken as one box -- by the renderer's bounding boxes (``get_window_extent``); tick labels
  of one axis collide already when closer than :data:`MIN_GAP_PX` pixels (labels that touch,
  "-1.00-0.75", read as one);
* ``label``: an axes that holds data (lines, markers, bars, images, ...) and shows tick labels
  on an axis has no label on it (``fig.supxlabel`` / ``fig.supylabel`` count for every axes;
  an axis without tick labels, as an image gallery or a 2-D projection, needs none; colour
  bars are exempt);
* ``legend``: a legend covers plotted data: the data of its axes (every axes for a figure
  legend) is sampled in display coordinates -- line vertices and points every
  :data:`SAMPLE_PX` pixels along their segments, markers, error bars, bars as rectangles --
  and a sample inside the legend's box (or a bar meeting it) is a violation.

Notebooks save figures through :meth:`dmlkit.notebook.NotebookContext.save_fig`; with the
environment variable ``DMLKIT_FIGURE_AUDIT`` naming a file, each saved figure is audited and
one JSON line ``{"figure": ..., "violations": [...]}`` appended to it
(:func:`record_audit`). The notebook tests run with it and require no violation.

>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> fig, ax = plt.subplots()
>>> _ = ax.plot([0, 1], [0, 1])
>>> [v.rule for v in audit_figure(fig)]        # no axis labels
['label', 'label']
>>> _ = ax.set(xlabel="x", ylabel="y")
>>> audit_figure(fig)
[]
>>> plt.close(fig)
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text

__all__ = ["AUDIT_ENV", "MIN_GAP_PX", "PANEL_SLACK_PX", "SAMPLE_PX", "Violation", "audit_figure",
           "record_audit"]

#: Environment variable: a JSON-lines file to which :meth:`NotebookContext.save_fig` appends
#: the audit of every figure it saves.
AUDIT_ENV = "DMLKIT_FIGURE_AUDIT"
#: Two tick labels of one axis collide when closer than this many pixels in both directions.
MIN_GAP_PX = 2.0
#: Text may reach this many pixels into another panel (a text box's padding) unflagged.
PANEL_SLACK_PX = 3.0
#: Spacing of the samples along a line segment, in pixels.
SAMPLE_PX = 2.0


@dataclass(frozen=True)
class Violation:
    """One defect: ``rule`` (``overlap``, ``label`` or ``legend``), the ``axes`` it is in (its
    title, or ``axes <i>``; ``figure`` for figure-level text) and what it is."""

    rule: str
    axes: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.axes}: {self.detail}"


def _renderer(fig):
    fig.draw_without_rendering()
    return fig._get_renderer()


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def _axes_name(fig, ax) -> str:
    title = next((t.get_text() for t in (ax.title, ax._left_title, ax._right_title)
                  if t.get_text()), "")
    return repr(title) if title else f"axes {fig.axes.index(ax)}"


def _shown(text) -> bool:
    return bool(text.get_visible() and text.get_text().strip())


def _drawn_tick_labels(axis):
    out = []
    for tick in axis._update_ticks():
        out += [lab for lab in (tick.label1, tick.label2) if _shown(lab)]
    return out


def _texts(fig, renderer):
    """``[(name, owner, corners (4, 2), group, axes)]`` of every visible text element (a
    legend is one box); ``group``: the axis of a tick label, else None; ``axes``: the axes
    the text belongs to (None for figure texts)."""
    items = []
    current = None

    def add(name, owner, artist, group=None):
        bb = artist.get_window_extent(renderer)
        if bb.width > 0 and bb.height > 0:
            items.append((name, owner, _corners(artist, bb, renderer), group, current))

    sup = [getattr(fig, k, None) for k in ("_suptitle", "_supxlabel", "_supylabel")]
    for t in dict.fromkeys([*sup, *fig.texts]):      # the sup* texts may be in fig.texts
        if t is not None and _shown(t):
            add(f"figure text {t.get_text()!r}", "figure", t)
    for leg in fig.legends:
        if leg.get_visible():
            add("figure legend", "figure", leg)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        owner, current = _axes_name(fig, ax), ax
        for t in (ax.title, ax._left_title, ax._right_title):
            if _shown(t):
                add(f"title {t.get_text()!r}", owner, t)
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if not (ax.axison and axis.get_visible()):     # ax.axis("off") hides both
                continue
            if _shown(axis.label):
                add(f"{which} label {axis.label.get_text()!r}", owner, axis.label)
            if _shown(axis.offsetText):
                add(f"{which} offset text {axis.offsetText.get_text()!r}", owner,
                    axis.offsetText)
            for lab in _drawn_tick_labels(axis):
                add(f"{which} tick label {lab.get_text()!r}", owner, lab, axis)
        for t in ax.texts:
            if _shown(t):
                add(f"text {t.get_text()!r}", owner, t)
        leg = ax.get_legend()
        if leg is not None and leg.get_visible():
            add("legend", owner, leg)
    return items


def _corners(artist, bb, renderer) -> np.ndarray:
    """The four corners of what ``artist`` covers: its box, or for text rotated by other
    than a multiple of 90 degrees (slanted tick labels) the rotated box of its glyphs, not
    the larger upright box around it."""
    from matplotlib.text import Text

    angle = artist.get_rotation() % 90 if isinstance(artist, Text) else 0.0
    if not angle:
        return _box(bb)
    rotation = artist.get_rotation()
    artist.set_rotation(0)
    try:
        upright = artist.get_window_extent(renderer)
    finally:
        artist.set_rotation(rotation)
    t = np.deg2rad(rotation)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [upright.width / 2,
                                                              upright.height / 2]
    return np.array([(bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2]) + half @ rot.T


def _polygons_meet(p: np.ndarray, q: np.ndarray, gap: float = 0.0) -> bool:
    """Whether convex polygons ``p`` and ``q`` (corners in order) come closer than ``gap``
    pixels: no edge normal of either separates their projections by ``gap`` or more
    (the separating axis theorem)."""
    for poly in (p, q):
        edges = np.roll(poly, -1, axis=0) - poly
        for nx, ny in np.stack([-edges[:, 1], edges[:, 0]], axis=1):
            norm = np.hypot(nx, ny)
            if norm == 0:
                continue
            axis = np.array([nx, ny]) / norm
            a, b = p @ axis, q @ axis
            if a.max() + gap <= b.min() or b.max() + gap <= a.min():
                return False
    return True


def _overlap(a, b, gap: float = 0.0) -> bool:
    """Whether boxes ``a`` and ``b`` come closer than ``gap`` pixels in both directions
    (``gap`` 0: they share an area)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w > -gap and h > -gap


def _overlaps(fig, renderer) -> list[Violation]:
    items = _texts(fig, renderer)
    out = []
    for i, (name_a, owner_a, a, group_a, _) in enumerate(items):
        for name_b, owner_b, b, group_b, _ in items[i + 1:]:
            same_axis = group_a is not None and group_a is group_b
            if _polygons_meet(a, b, MIN_GAP_PX if same_axis else 0.0):
                where = owner_a if owner_a == owner_b else f"{owner_a} / {owner_b}"
                out.append(Violation("overlap", where, f"{name_a} overlaps {name_b}"))
    # the text of one axes (tick labels, labels, its legend) running into another panel
    panels = [(ax, _box(ax.get_window_extent(renderer))) for ax in fig.axes
              if ax.get_visible() and (ax.axison or _has_data(ax))]
    for name, owner, corners, _, ax in items:
        for other, box in panels:
            if ax is None or other is ax or (other.get_position().bounds ==
                                             ax.get_position().bounds):   # twins share a box
                continue
            if _polygons_meet(corners, box, -PANEL_SLACK_PX):
                out.append(Violation("overlap", f"{owner} / {_axes_name(fig, other)}",
                                     f"{name} runs into the panel {_axes_name(fig, other)}"))
    return out


def _box(bb) -> np.ndarray:
    return np.array([[bb.x0, bb.y0], [bb.x1, bb.y0], [bb.x1, bb.y1], [bb.x0, bb.y1]])


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.images or
                any(p.get_visible() for p in ax.patches))


def _labels(fig) -> list[Violation]:
    sup = {"x": _shown(fig._supxlabel) if getattr(fig, "_supxlabel", None) else False,
           "y": _shown(fig._supylabel) if getattr(fig, "_supylabel", None) else False}
    out = []
    for ax in fig.axes:
        if not ax.get_visible() or _is_colorbar(ax) or not _has_data(ax):
            continue
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if (ax.axison and axis.get_visible() and _drawn_tick_labels(axis)
                    and not _shown(axis.label)
                    and not sup[which]):
                out.append(Violation("label", _axes_name(fig, ax),
                                     f"no {which} label (the axis shows tick labels)"))
    return out


def _segment_samples(xy: np.ndarray, step: float = SAMPLE_PX) -> np.ndarray:
    """Points every ``step`` pixels along the polyline ``xy`` (N, 2), vertices included."""
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) < 2:
        return xy
    parts = [xy[:1]]
    for a, b in itertools.pairwise(xy):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        t = np.linspace(0.0, 1.0, n + 1)[1:, None]
        parts.append(a + t * (b - a))
    return np.concatenate(parts)


def _data_samples(ax, skip=()) -> tuple[np.ndarray, list]:
    """Display coordinates of the data of ``ax`` inside its box: ``(points (N, 2),
    rectangles [Bbox])``; artists in ``skip`` (a legend's handles) left out."""
    from matplotlib.collections import Collection, LineCollection, PolyCollection
    from matplotlib.patches import Rectangle

    points = []
    rects = []
    for line in ax.lines:
        if line in skip or not line.get_visible():
            continue
        xy = line.get_transform().transform(line.get_xydata())
        if line.get_linestyle() not in ("None", "", " ", "none"):
            points.append(_segment_samples(xy))
        elif line.get_marker() not in (None, "None", "", " ", "none"):
            points.append(xy)
    for coll in ax.collections:
        if coll in skip or not coll.get_visible() or not isinstance(coll, Collection):
            continue
        if isinstance(coll, (LineCollection, PolyCollection)):
            trans = coll.get_transform()
            for path in coll.get_paths():
                points.append(_segment_samples(trans.transform(path.vertices)))
        else:
            offsets = np.asarray(coll.get_offsets())
            if len(offsets):
                points.append(coll.get_offset_transform().transform(offsets))
    for patch in ax.patches:
        if patch in skip or not patch.get_visible() or not isinstance(patch, Rectangle):
            continue
        bb = patch.get_window_extent()
        if bb.width > 0.5 and bb.height > 0.5:
            rects.append(bb)
    pts = np.concatenate(points) if points else np.zeros((0, 2))
    box = ax.get_window_extent()
    inside = ((pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) &
              (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)) if len(pts) else []
    return pts[inside] if len(pts) else pts, rects


def _legend_cover(fig, renderer) -> list[Violation]:
    legends = [(ax.get_legend(), [ax]) for ax in fig.axes if ax.get_legend() is not None]
    legends += [(leg, list(fig.axes)) for leg in fig.legends]
    out = []
    for leg, axes in legends:
        if not leg.get_visible():
            continue
        box = leg.get_window_extent(renderer)
        handles = set(getattr(leg, "legend_handles", None) or leg.legendHandles)
        for ax in axes:
            if _is_colorbar(ax) or not ax.get_visible():
                continue
            pts, rects = _data_samples(ax, skip=handles)
            inside = ((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) &
                      (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)) if len(pts) else []
            n = int(np.sum(inside))
            n_rects = sum(_overlap(r, box) for r in rects)
            if n or n_rects:
                what = ", ".join(s for s in (f"{n} data points" if n else "",
                                             f"{n_rects} bars" if n_rects else "") if s)
                where = _axes_name(fig, leg.axes) if leg.axes is not None else "figure"
                out.append(Violation("legend", where,
                                     f"the legend covers {what} of {_axes_name(fig, ax)}"))
    return out


def audit_figure(fig) -> list[Violation]:
    """Every :class:`Violation` of ``fig`` (a matplotlib figure), in rule order: overlapping
    text, missing axis labels, legends over data. Draws the figure, writes nothing."""
    renderer = _renderer(fig)
    return _overlaps(fig, renderer) + _labels(fig) + _legend_cover(fig, renderer)


def record_audit(fig, name: str, path: str | os.PathLike | None = None) -> list[Violation]:
    """Audit ``fig`` and append ``{"figure": name, "violations": [...]}`` as one JSON line to
    ``path`` (default: the file named by ``$DMLKIT_FIGURE_AUDIT``; nothing is written when
    neither is set). Returns the violations."""
    path = path or os.environ.get(AUDIT_ENV)
    violations = audit_figure(fig)
    if path:
        path = Path(path)
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        line = json.dumps({"figure": name, "violations": [asdict(v) for v in violations]})
        atomic_write_text(path, before + line + "\n")
    return violations
