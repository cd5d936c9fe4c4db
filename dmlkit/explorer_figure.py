"""The weight explorer's figure: one matplotlib Figure of a fixed pixel size, updated in place.

:class:`ExplorerFigure` lays out the weight curves of the swept negative and positive pair
(first row) and, when the explorer has real batches, one scatter panel per batch (second row),
once; :meth:`ExplorerFigure.update` then only changes the artists' data, limits and texts, and
:meth:`ExplorerFigure.png` renders it at :data:`DPI` with ``bbox_inches=None`` (whatever
``savefig.bbox`` the notebook style sets), so every loss gives an image of the same
:attr:`ExplorerFigure.size_px`, and the page around it does not move. Fixed margins, fixed
tick locators, titles at a fixed height and one figure legend above the panels (outside every
axes: it covers no data) keep the draw cheap (no layout engine, no legend placement search).

A batch panel's x axis spans the batch's own similarities (an untrained network puts every
pair near s = 1: the panel zooms there, and its title gives the range, s ∈ [a, b]). For a
proxy loss the panel shows sample-to-proxy pairs (the caller computes them; the footnote says
so).

:data:`SYMBOLS` maps the loss parameters to the symbols of the papers; the sliders and the
suptitle use them, the Python parameter names stay ``alpha``, ``beta``, ``lam``, ...
"""

from __future__ import annotations

import io
import math

import numpy as np

__all__ = ["DPI", "SYMBOLS", "ExplorerFigure", "symbol"]

#: the paper's symbol of each parameter name (Wang et al. 2019b; Kim et al. 2020 for delta)
SYMBOLS = {"alpha": "α", "beta": "β", "lam": "λ", "epsilon": "ε", "delta": "δ", "margin": "m",
           "tau": "τ", "sigma": "σ", "gamma": "γ", "temperature": "T"}
#: where a loss's parameter has a unit
_UNITS = {("angular", "alpha"): "α (°)"}
DPI = 80
#: inches: figure width, one row (axes and the gap below it), the suptitle and legend above,
#: the footnote below the batches, the x label under a row, the gap between the rows
_WIDTH_IN, _ROW_IN, _HEAD_IN, _FOOT_IN, _XLABEL_IN, _GAP_IN = 10.0, 2.9, 0.95, 0.25, 0.55, 0.85


def symbol(loss_name: str, name: str) -> str:
    """The label of parameter ``name`` of ``loss_name``: the paper's symbol (else the name)."""
    return _UNITS.get((loss_name, name)) or SYMBOLS.get(name, name)


def _fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3g}"


def _tick(value, _pos=None) -> str:
    """A short tick label: at most 4 significant digits, 1.5e5 rather than 150000."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}".replace("-", "\u2212")
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}".replace("-", "\u2212")


def _bound(lo: float, hi: float, rounding) -> str:
    """``lo`` (rounding=floor) or ``hi`` (ceil) to enough decimals to tell them apart."""
    digits = max(3, 1 + math.ceil(-math.log10(max(hi - lo, 1e-9))))
    value = rounding((lo if rounding is math.floor else hi) * 10 ** digits) / 10 ** digits
    return f"{value:.{digits}f}"


def _ylim(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = min(0.0, float(v.min())), float(v.max())
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):   # a flat line (all zero: no pair weighted)
        return (lo - 0.05, lo + 1.0) if lo == 0 else (lo - 0.5 * abs(lo), lo + 0.5 * abs(lo))
    pad = 0.06 * (hi - lo)
    return lo - (pad if lo < 0 else 0.02 * (hi - lo)), hi + pad


def _xlim(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return -1.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    pad = max(0.05 * (hi - lo), 1e-6)
    return max(-1.0, lo - pad) if lo > -1 else lo - pad, min(1.0, hi + pad) if hi < 1 else hi + pad


class ExplorerFigure:
    """The explorer's figure for ``n_pos`` / ``n_neg`` context pairs and the real batches
    ``batch_names`` (none: one row); see the module docstring."""

    def __init__(self, n_pos: int, n_neg: int, batch_names=()):
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FixedLocator, MaxNLocator, ScalarFormatter

        from .plotting import NEG_COLOR, POS_COLOR

        self.batch_names = list(batch_names)
        self._background = None   # the static part, drawn once (png)
        rows = 2 if self.batch_names else 1
        height = self._height(rows)
        self.fig = fig = Figure(figsize=(_WIDTH_IN, height), dpi=DPI)
        self.size_px = self.size_for(len(self.batch_names))
        fig.subplots_adjust(left=0.1, right=0.975, top=1 - _HEAD_IN / height,
                            bottom=(_FOOT_IN * (rows - 1) + _XLABEL_IN) / height, wspace=0.3,
                            hspace=_GAP_IN / (_ROW_IN - _GAP_IN))
        grid = fig.add_gridspec(rows, 2)
        self.curve_axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
        self.lines, self.context = [], []
        for ax, pair, color in zip(self.curve_axes, ("negative", "positive"),
                                   (NEG_COLOR, POS_COLOR)):
            (line,) = ax.plot([], [], color=color, lw=2)
            self.lines.append(line)
            self.context.append((
                ax.vlines([0.0] * n_pos, 0, 1, transform=ax.get_xaxis_transform(),
                          colors=POS_COLOR, linestyles=":", lw=1.2),
                ax.vlines([0.0] * n_neg, 0, 1, transform=ax.get_xaxis_transform(),
                          colors=NEG_COLOR, linestyles=":", lw=1.2)))
            ax.set_xlim(-1, 1)
            ax.xaxis.set_major_locator(FixedLocator([-1, -0.5, 0, 0.5, 1]))
            ax.yaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlabel(f"similarity s of the {pair} pair")
            ax.set_ylabel("weight w")
            self._place_labels(ax)
            ax.set_title(f"{pair} pair", y=1.01, fontsize="medium")
        self.batch_axes, self.scatters, self.empty = [], [], []
        if self.batch_names:
            sub = grid[1, :].subgridspec(1, len(self.batch_names), wspace=0.3)
            for i, _name in enumerate(self.batch_names):
                ax = fig.add_subplot(sub[0, i])
                self.batch_axes.append(ax)
                self.scatters.append(tuple(
                    ax.scatter(np.empty(0), np.empty(0), s=9, alpha=0.5, color=c)
                    for c in (POS_COLOR, NEG_COLOR)))
                self.empty.append(ax.text(0.5, 0.5, "", ha="center", va="center",
                                          transform=ax.transAxes))
                ax.xaxis.set_major_locator(MaxNLocator(5))
                ax.yaxis.set_major_locator(MaxNLocator(4))
                ax.xaxis.set_major_formatter(ScalarFormatter(useOffset=False))
                ax.set_ylabel("weight w_ij")
                ax.set_title("", y=1.01, fontsize="medium")
                self._place_labels(ax)
            self.footnote = fig.text(0.5, 0.008, "", ha="center", va="bottom",
                                     fontsize="small")
        self.suptitle = fig.text(0.5, 1 - 0.08 / height, "", ha="center", va="top",
                                 fontsize="medium", fontweight="bold")
        handles = [Line2D([], [], color=NEG_COLOR, lw=2), Line2D([], [], color=POS_COLOR, lw=2),
                   Line2D([], [], color=NEG_COLOR, ls=":", lw=1.2),
                   Line2D([], [], color=POS_COLOR, ls=":", lw=1.2)]
        fig.legend(handles, ["weight of the swept negative", "weight of the swept positive",
                             "other negatives", "other positives"],
                   loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / height), ncol=4,
                   fontsize="small", frameon=False)

    @staticmethod
    def _place_labels(ax) -> None:
        """Axis labels at fixed places (clear of the widest tick labels: tested), so that a
        draw need not measure the tick labels to place them."""
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(_tick))
        ax.xaxis.set_label_coords(0.5, -0.15)
        ax.yaxis.set_label_coords(-0.19, 0.5)

    @staticmethod
    def _height(rows: int) -> float:
        return _HEAD_IN + rows * _ROW_IN + (rows - 1) * _FOOT_IN

    @classmethod
    def size_for(cls, n_batches: int) -> tuple[int, int]:
        """``(width, height)`` in pixels of the figure with ``n_batches`` real batches."""
        return round(_WIDTH_IN * DPI), round(cls._height(2 if n_batches else 1) * DPI)

    def update(self, *, loss_name: str, params: dict, curves, column: str, context_pos,
               context_neg, batches=None, proxies: bool = False) -> None:
        """Show ``curves`` (``ExplorerState.curves()``: similarity, pair, ``column``) with
        the context lines at ``context_pos`` / ``context_neg`` and, per batch, the pairs of
        ``batches`` (batch, similarity, pair, weight); ``proxies``: those are sample-to-proxy
        pairs."""
        for ax, line, (pos_lines, neg_lines), pair in zip(
                self.curve_axes, self.lines, self.context, ("negative", "positive")):
            part = curves[curves["pair"] == pair]
            y = part[column].to_numpy()
            line.set_data(part["similarity"].to_numpy(), y)
            for lines, values in ((pos_lines, context_pos), (neg_lines, context_neg)):
                lines.set_segments([[(v, 0.0), (v, 1.0)] for v in values])
            ax.set_ylim(*_ylim(y))
        self.curve_axes[0].set_ylabel("weight w" + (" (scaled to max 1)"
                                                    if column == "scaled_weight" else ""))
        shown = ", ".join(f"{symbol(loss_name, k)} = {_fmt(v)}" for k, v in params.items())
        self.suptitle.set_text(loss_name + (f"  ({shown})" if shown else ""))
        for i, name in enumerate(self.batch_names):
            self._update_batch(i, name, batches, loss_name, proxies)
        if self.batch_names:
            what = "sample-to-proxy pairs, proxies at the batch's class means" if proxies \
                else "the batch's pairs"
            self.footnote.set_text(f"dots: {what} (green positive, orange negative), "
                                   "weighted at the sliders' values")

    def _update_batch(self, i, name, batches, loss_name, proxies) -> None:
        ax, (pos_dots, neg_dots), empty = self.batch_axes[i], self.scatters[i], self.empty[i]
        part = batches[batches["batch"] == name] if batches is not None else None
        has = part is not None and not part.empty
        for dots, pair in ((pos_dots, "positive"), (neg_dots, "negative")):
            sel = part[part["pair"] == pair] if has else None
            dots.set_offsets(np.column_stack([sel["similarity"], sel["weight"]]) if has
                             else np.empty((0, 2)))
        empty.set_text("" if has else f"{loss_name} cannot weight this batch")
        ax.tick_params(labelbottom=has, labelleft=has)
        ax.set_xlabel(("similarity s_ij (sample, proxy)" if proxies else "similarity s_ij")
                      if has else "")
        ax.set_ylabel("weight w_ij" if has else "")
        if not has:
            ax.set_title(f"batch: {name}", y=1.01, fontsize="medium")
            return
        s = part["similarity"].to_numpy()
        lo, hi = _xlim(s)
        ax.set_xlim(lo, hi)
        ax.set_ylim(*_ylim(part["weight"].to_numpy()))
        zoom = "" if hi - lo > 1.5 else f", s ∈ [{_bound(s.min(), s.max(), math.floor)}, " \
            f"{_bound(s.min(), s.max(), math.ceil)}]"
        ax.set_title(f"batch: {name}{zoom}", y=1.01, fontsize="medium")

    def _dynamic(self) -> list:
        """The artists an update changes, in the order a full draw draws them (by zorder
        within each axes; the frames too, which lie over the data); the rest (axes
        backgrounds, the curves' x axes and titles, the legend) is drawn once."""
        out = []
        for ax, line, (pos_lines, neg_lines) in zip(self.curve_axes, self.lines, self.context):
            out += self._in_order(ax, [ax.yaxis, pos_lines, neg_lines, line])
        for ax, dots, empty in zip(self.batch_axes, self.scatters, self.empty):
            out += self._in_order(ax, [ax.xaxis, ax.yaxis, *dots, empty, ax.title])
        return out + [self.suptitle] + ([self.footnote] if self.batch_names else [])

    @staticmethod
    def _in_order(ax, artists) -> list:
        children = ax.get_children()
        chosen = [*artists, *ax.spines.values()]
        return sorted(chosen, key=lambda a: (a.get_zorder(), children.index(a)))

    def png(self, blit: bool = True) -> bytes:
        """The figure as PNG bytes, :attr:`size_px` pixels whatever ``savefig.bbox`` says
        (drawn by Agg, encoded by Pillow at a low compression level). ``blit``: draw the
        static part once and, on each call, only the artists an update changes on a copy of
        it (the same image as a full draw: tested)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from PIL import Image

        canvas = self.fig.canvas
        if not isinstance(canvas, FigureCanvasAgg):
            canvas = FigureCanvasAgg(self.fig)
        if not blit:
            canvas.draw()
        else:
            if self._background is None:
                for artist in self._dynamic():
                    artist.set_animated(True)
                canvas.draw()
                self._background = canvas.copy_from_bbox(self.fig.bbox)
            canvas.restore_region(self._background)
            renderer = canvas.get_renderer()
            for artist in self._dynamic():
                artist.draw(renderer)
        buf = io.BytesIO()
        Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).save(
            buf, format="png", compress_level=1)
        return buf.getvalue()
