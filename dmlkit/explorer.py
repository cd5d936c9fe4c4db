"""The weight explorer: Figure 1 of Wang et al. 2019b with sliders (an ipywidgets app).

``weight_explorer(loss="multi_similarity", **params)`` draws the weight of one positive and of
one negative pair of an anchor as their similarity sweeps [-1, 1], computed by
:func:`dmlkit.weights.weight_curve` (the code and the default context of notebook 03: the anchor's
other positives at s = 0.6, 0.7, 0.8, its other negatives at 0.2, 0.3, 0.4). It has

* a loss selector with every registered S-based loss that ``weight_curve`` can draw
  (:func:`supported_losses`, read from the registry each time, so a newly registered loss
  appears; aliases of one loss are listed once),
* one slider per hyper-parameter of the selected loss that changes its weights, named by the
  paper's symbol (``alpha``, ``beta``, ``lam``, ``epsilon``, ``margin``, ...), and
* one slider per context pair (``pos_1`` .. ``neg_3``: the anchor's other similarities).

The returned :class:`WeightExplorer` has ``.widget`` (the container to display), ``.sliders``
(name -> slider, hyper-parameters and context), ``.curves()`` (a DataFrame of what is drawn) and
``.figure()`` / ``.png()`` / ``.show_static()`` (the current state as a static image).

The plot is a PNG in an ``ipywidgets.Image``, redrawn by the kernel (matplotlib's Agg) when a
slider is released: the image is swapped in place, so nothing flickers, and only core widgets are
used, which JupyterLab and VS Code render without an extension (ipympl would need one in every
front end). Displaying the explorer itself (a cell ending in ``explorer``) also attaches the PNG
of its current state to the output: a page without a widget manager (GitHub, nbviewer, a
committed notebook whose widget state is stripped by :func:`dmlkit.nbrun.clean_notebook`) shows
that image instead of the live widget.

``batches={"untrained": (emb0, labels), "trained": (emb1, labels)}`` adds a second row: the
pair weights of real batches (:func:`dmlkit.weights.pair_weights`) as a scatter over S, for the
loss at the sliders' values (:meth:`WeightExplorer.batch_weights`).

Settings, on purpose: the curves are drawn unscaled by default (their scale is what alpha and
beta change; ``normalize=True`` scales each to a maximum of 1 as notebook 03 does); contrastive
and triplet are drawn in the similarity forms of Wang et al. 2019b, as in notebook 03
(:data:`CURVE_SETTINGS`; their defaults are the distance forms, whose weights reach 1e5 near
s = 1); a loss that owns class parameters (the proxy losses) is built with one class per
reference label of the curve.

>>> ex = weight_explorer("multi_similarity", points=21)
>>> sorted(ex.sliders)[:4]
['alpha', 'beta', 'epsilon', 'lam']
>>> ex.sliders["epsilon"].value = 0.3
>>> table = ex.curves()
>>> list(table.columns[:3]), len(table)
(['similarity', 'pair', 'weight'], 42)
"""

from __future__ import annotations

import base64
import inspect
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import losses as _losses
from . import weights as _weights

__all__ = ["CURVE_SETTINGS", "SYMBOL_RANGES", "WeightExplorer", "supported_losses",
           "weight_explorer"]

_CURVE_DEFAULTS = inspect.signature(_weights.weight_curve).parameters
#: the context of :func:`dmlkit.weights.weight_curve` (and of notebook 03)
CONTEXT_POS = tuple(_CURVE_DEFAULTS["context_pos"].default)
CONTEXT_NEG = tuple(_CURVE_DEFAULTS["context_neg"].default)

#: settings a loss is drawn with unless the caller passes others (notebook 03's Figure 1)
CURVE_SETTINGS: dict[str, dict] = {
    "contrastive": {"form": "similarity", "lam": 0.5},
    "triplet": {"form": "similarity", "margin": 0.2},
}
#: the selector lists these first, in this order (notebook 03's), then the rest by name
_FIRST = ("multi_similarity", "binomial", "raw", "vthm", "contrastive", "triplet",
          "generalized_lifted_structure", "lifted_structure")

#: slider range (min, max, step) of each paper symbol; a default outside it widens it
SYMBOL_RANGES: dict[str, tuple[float, float, float]] = {
    "alpha": (0.1, 10.0, 0.1),
    "beta": (1.0, 100.0, 1.0),
    "lam": (-0.5, 1.0, 0.01),
    "epsilon": (0.0, 0.5, 0.01),
    "margin": (0.0, 1.0, 0.01),
    "delta": (0.0, 0.5, 0.01),
    "tau": (0.0, 4.0, 0.05),
    "sigma": (0.05, 2.0, 0.05),
}
#: where a loss gives a symbol another meaning
_LOSS_RANGES = {
    ("angular", "alpha"): (10.0, 60.0, 1.0),                     # degrees
    ("lifted_structure", "margin"): (0.0, 2.0, 0.02),            # a distance margin
    ("generalized_lifted_structure", "lam"): (-3.0, 2.0, 0.05),  # the hinge's offset
    ("ddml", "beta"): (0.1, 10.0, 0.1),                          # a sharpness
}
#: numeric parameters that are not about the pair weights (regularisers, sampling, sizes)
_NOT_WEIGHTS = {"l2_reg", "seed", "num_negatives", "num_classes", "embedding_dim", "scale",
                "classifier_weight"}
_PROBE_GRID = np.linspace(-1.0, 1.0, 21)


def _widgets():
    try:
        import ipywidgets
    except ImportError as exc:  # pragma: no cover - the notebooks extra installs it
        raise ImportError("the weight explorer needs ipywidgets: "
                          "pip install 'dmlkit[notebooks]'") from exc
    return ipywidgets


def _signature_defaults(cls) -> dict:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v.default for k, v in params.items() if v.default is not inspect.Parameter.empty}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _build(name: str, params: Mapping, n_neg: int = len(CONTEXT_NEG)) -> _losses.PairLoss:
    """The loss ``name`` with ``params``; losses that own class parameters (proxies, centres)
    get as many classes as weight_curve's references have labels (one for the positives, one
    per negative: ``n_neg`` context negatives and the swept one) and a 2-d embedding."""
    try:
        return _losses.build(name, **params)
    except (ValueError, TypeError):
        accepted = _losses.parameters(name) or []
        extra = {k: v for k, v in (("num_classes", 2 + n_neg),
                                   ("embedding_dim", 2)) if k in accepted and k not in params}
        if not extra:
            raise
        return _losses.build(name, **extra, **params)


def _curves(loss, grid, context_pos, context_neg):
    return {pair: _weights.weight_curve(loss, pair, grid=grid, context_pos=context_pos,
                                        context_neg=context_neg)
            for pair in ("negative", "positive")}


def _drawable(name: str) -> bool:
    """Whether weight_curve draws ``name`` at its defaults: finite weights, not all zero."""
    try:
        c = _curves(_build(name, CURVE_SETTINGS.get(name, {})), _PROBE_GRID, CONTEXT_POS,
                    CONTEXT_NEG)
    except Exception:   # any loss that weight_curve cannot draw is simply not offered
        return False
    w = np.concatenate([c["negative"].weight, c["positive"].weight])
    return bool(np.isfinite(w).all() and np.abs(w).max() > 0)


_SUPPORTED: dict[tuple, list[str]] = {}


def supported_losses() -> list[str]:
    """Registered loss names that :func:`dmlkit.weights.weight_curve` can draw (S-based: not
    losses that need the embeddings themselves, such as OSM+CAA's class centres or distance-
    weighted sampling), one name per loss class: notebook 03's first, then by name.

    Read from the registry on each call (cached per set of registered names).
    """
    names = _losses.available()
    key = tuple(names)
    if key not in _SUPPORTED:
        rest = sorted((n for n in names if n not in _FIRST), key=lambda n: ("-" in n, n))
        ordered = [n for n in _FIRST if n in names] + rest   # one spelling: snake_case first
        seen, out = set(), []
        for n in ordered:
            cls = _losses.get(n)
            if cls in seen:
                continue
            seen.add(cls)
            if _drawable(n):
                out.append(n)
        _SUPPORTED[key] = out
    return list(_SUPPORTED[key])


def _as_batch(name, embeddings, labels):
    """``(embeddings, labels)`` of a real batch as float64 / int64 CPU tensors, checked."""
    import torch

    emb = torch.as_tensor(embeddings).detach().cpu().double()
    lab = torch.as_tensor(labels).detach().cpu().long()
    if emb.ndim != 2 or lab.ndim != 1 or len(emb) != len(lab):
        raise ValueError(f"batch {name!r}: embeddings must be (B, D) and labels (B,), got "
                         f"{tuple(emb.shape)} and {tuple(lab.shape)}")
    return emb, lab


def _option(loss: str, options: Sequence[str]) -> str:
    """The selector's name of ``loss`` (any spelling or alias of a supported loss)."""
    cls = _losses.get(loss)
    same = [o for o in options if _losses.get(o) is cls]
    if not same:
        raise ValueError(f"weight_curve cannot draw loss {loss!r} (it needs the embeddings, "
                         f"not only S); the explorer has: {', '.join(options)}")
    return same[0]


@dataclass(frozen=True)
class SliderSpec:
    """One hyper-parameter slider: symbol, default and range."""

    name: str
    value: float
    min: float
    max: float
    step: float
    integer: bool = False


def _range(loss_name: str, symbol: str, value: float) -> tuple[float, float, float]:
    lo, hi, step = _LOSS_RANGES.get((loss_name, symbol)) or SYMBOL_RANGES.get(
        symbol, (0.0, max(1.0, 2 * abs(value)), max(1.0, 2 * abs(value)) / 100))
    if value < lo:
        lo = value - abs(value) if value < 0 else 0.0
    if value > hi:
        hi = 2 * value
        step = max(step, hi / 200)
    return float(lo), float(hi), float(step)


def slider_specs(loss_name: str, params: Mapping | None = None,
                 context_pos: Sequence[float] = CONTEXT_POS,
                 context_neg: Sequence[float] = CONTEXT_NEG) -> list[SliderSpec]:
    """The sliders of ``loss_name``: its numeric hyper-parameters (``hyperparameters``, the
    paper's symbols) that change its weight curves when moved to an end of their range.
    ``params``: fixed settings (defaults: :data:`CURVE_SETTINGS`, then the constructor's)."""
    name = _losses.LOSSES.canonical(loss_name)
    cls = _losses.get(name)
    values = {**_signature_defaults(cls), **CURVE_SETTINGS.get(name, {}), **dict(params or {})}
    fixed = {**CURVE_SETTINGS.get(name, {}), **dict(params or {})}
    base = _curves(_build(name, fixed, len(context_neg)), _PROBE_GRID, context_pos, context_neg)
    specs = []
    for symbol in getattr(cls, "hyperparameters", ()):
        value = values.get(symbol)
        if symbol in _NOT_WEIGHTS or not _is_number(value):
            continue
        lo, hi, step = _range(name, symbol, float(value))
        for probe in (hi, lo):
            try:
                moved = _curves(_build(name, {**fixed, symbol: probe}, len(context_neg)),
                                _PROBE_GRID, context_pos, context_neg)
            except ValueError:
                continue
            if any(not np.allclose(moved[p].weight, base[p].weight, rtol=1e-9, atol=1e-12,
                                   equal_nan=True) for p in base):
                specs.append(SliderSpec(symbol, value, lo, hi, step,
                                        integer=isinstance(value, int)))
                break
    return specs


class WeightExplorer:
    """Weight-vs-similarity curves of one loss, driven by sliders; see the module docstring.

    ``draw=False`` does not redraw the plot on each change (code that only reads
    :meth:`curves`; :meth:`png` and :meth:`figure` still draw on request). ``batches``:
    name -> ``(embeddings (B, D), labels (B,))`` of real batches (e.g. a network before and
    after training): a second row of panels scatters their pair weights over S
    (:func:`dmlkit.weights.pair_weights` of the loss at the sliders' values; :meth:`batch_weights`).

    Attributes:
        widget: the ipywidgets container (``display(explorer.widget)``).
        sliders: name -> slider; the hyper-parameters of the selected loss (paper symbols) and
            the context ``pos_1 .. pos_n``, ``neg_1 .. neg_m``. Selecting another loss replaces
            the hyper-parameter sliders in this same dict.
        selector: the loss dropdown.
    """

    def __init__(self, loss: str = "multi_similarity", *, points: int = 101,
                 context_pos: Sequence[float] = CONTEXT_POS,
                 context_neg: Sequence[float] = CONTEXT_NEG, normalize: bool = False,
                 draw: bool = True, batches: Mapping[str, tuple] | None = None, **params):
        w = _widgets()
        options = supported_losses()
        name = _option(loss, options)
        if int(points) < 2:
            raise ValueError(f"points must be >= 2, got {points}")
        for v in (*context_pos, *context_neg):
            if not -1.0 <= float(v) <= 1.0:
                raise ValueError(f"context similarities must lie in [-1, 1], got {v}")
        self.grid = np.linspace(-1.0, 1.0, int(points))
        self._initial, self._fixed = name, dict(params)   # the caller's settings, this loss
        self.draw = bool(draw)
        self.batches = {str(k): _as_batch(k, *v) for k, v in (batches or {}).items()}
        self.sliders: dict = {}
        self._cached = None
        self.selector = w.Dropdown(options=options, value=name, description="loss")
        self.normalize = w.Checkbox(value=bool(normalize), description="scale to max 1",
                                    indent=False)
        self._context = {}
        for prefix, values, label in (("pos", context_pos, "positive"),
                                      ("neg", context_neg, "negative")):
            for i, v in enumerate(values, 1):
                self._context[f"{prefix}_{i}"] = w.FloatSlider(
                    value=float(v), min=-1.0, max=1.0, step=0.01, description=f"{label} {i}",
                    continuous_update=False, readout_format=".2f")
        self._param_box = w.VBox([])
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.status = w.HTML()
        context_box = w.VBox([w.HTML("<b>the anchor's other pairs (similarity)</b>"),
                              *self._context.values()])
        self.widget = w.VBox([
            w.HBox([self.selector, self.normalize]),
            w.HBox([w.VBox([w.HTML("<b>hyper-parameters</b>"), self._param_box]),
                    context_box]),
            self.image, self.status])
        for s in self._context.values():
            s.observe(self._update, names="value")
        self.normalize.observe(self._update, names="value")
        self.selector.observe(self._select, names="value")
        self._make_param_sliders(name, self._fixed)
        self._update()

    # ------------------------------------------------------------------ state
    @property
    def loss_name(self) -> str:
        return self.selector.value

    def set_loss(self, name: str) -> None:
        """Select loss ``name`` (as the dropdown does): its sliders at its defaults."""
        self.selector.value = _option(name, self.selector.options)

    def params(self) -> dict:
        """The settings the selected loss is built with: fixed ones and the sliders' values."""
        values = {k: s.value for k, s in self.sliders.items() if k not in self._context}
        return {**self._fixed_now, **values}

    def context(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(context_pos, context_neg)``: the similarities of the anchor's other pairs."""
        pos = tuple(float(s.value) for k, s in self._context.items() if k.startswith("pos"))
        neg = tuple(float(s.value) for k, s in self._context.items() if k.startswith("neg"))
        return pos, neg

    def loss(self) -> _losses.PairLoss:
        """The selected loss at the sliders' values."""
        return _build(self.loss_name, self.params(), len(self.context()[1]))

    def curves(self) -> pd.DataFrame:
        """What is drawn: columns ``similarity``, ``pair`` ("negative" / "positive"),
        ``weight`` (``weights.weight_curve`` at the sliders' values), ``scaled_weight``
        (divided by the curve's maximum when that is positive) and ``loss``."""
        pos, neg = self.context()
        key = (self.loss_name, repr(sorted(self.params().items())), pos, neg)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1].copy()
        rows = []
        for pair, c in _curves(self.loss(), self.grid, pos, neg).items():
            top = np.nanmax(c.weight) if np.isfinite(c.weight).any() else 0.0
            rows.append(pd.DataFrame({
                "similarity": c.similarity, "pair": pair, "weight": c.weight,
                "scaled_weight": c.weight / top if top > 0 else c.weight,
                "loss": self.loss_name}))
        table = pd.concat(rows, ignore_index=True)
        self._cached = (key, table)   # the plot and the caller read the same state once
        return table.copy()

    def batch_weights(self) -> pd.DataFrame:
        """The pairs of each real batch: columns ``batch``, ``similarity``, ``pair``,
        ``weight`` (``weights.pair_weights`` of the loss at the sliders' values), ``loss``;
        a loss that cannot weight a batch (e.g. proxies owned for other classes) gives none."""
        loss, frames = self.loss(), []
        for name, (emb, labels) in self.batches.items():
            try:
                S, W = _weights.pair_weights(loss, emb, labels)
            except (ValueError, RuntimeError, IndexError):
                continue
            lab = labels.numpy()
            same, off = lab[:, None] == lab[None, :], ~np.eye(len(lab), dtype=bool)
            for pair, mask in (("positive", same & off), ("negative", ~same)):
                frames.append(pd.DataFrame({"batch": name, "similarity": S.numpy()[mask],
                                            "pair": pair, "weight": W.numpy()[mask],
                                            "loss": self.loss_name}))
        columns = ["batch", "similarity", "pair", "weight", "loss"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    # ------------------------------------------------------------------ widgets
    def _make_param_sliders(self, name: str, fixed: Mapping) -> None:
        w = _widgets()
        self._fixed_now = {**CURVE_SETTINGS.get(name, {}), **dict(fixed)}
        for k, s in self.sliders.items():
            if k not in self._context:
                s.unobserve(self._update, names="value")
        made = []
        pos, neg = self.context()
        for spec in slider_specs(name, self._fixed_now, pos, neg):
            cls = w.IntSlider if spec.integer else w.FloatSlider
            kwargs = {} if spec.integer else {"readout_format": ".3g"}
            s = cls(value=spec.value, min=spec.min, max=spec.max, step=spec.step,
                    description=spec.name, continuous_update=False, **kwargs)
            s.observe(self._update, names="value")
            made.append(s)
            self._fixed_now.pop(spec.name, None)
        self.sliders.clear()   # the same dict: hyper-parameters first, then the context
        self.sliders.update({s.description: s for s in made})
        self.sliders.update(self._context)
        self._param_box.children = made or [w.HTML("(no hyper-parameter changes these "
                                                   "weights)")]

    def _select(self, change) -> None:
        # the caller's settings belong to the loss they were given for
        self._make_param_sliders(change["new"], self._fixed if change["new"] == self._initial
                                 else {})
        self._update()

    def _update(self, change=None) -> None:
        try:
            if self.draw:
                self.image.value = self.png()
            else:
                self.curves()   # still validates the settings
            self.status.value = ""
        except ValueError as exc:   # an invalid combination of settings: say so, keep the plot
            self.status.value = f"<span style='color:#b00'>{exc}</span>"

    # ------------------------------------------------------------------ static image
    def figure(self):
        """The current state as a matplotlib Figure (not managed by pyplot: no double display
        in a notebook)."""
        from matplotlib.figure import Figure

        from .plotting import NEG_COLOR, POS_COLOR

        table = self.curves()
        pos, neg = self.context()
        column = "scaled_weight" if self.normalize.value else "weight"
        rows = 2 if self.batches else 1
        fig = Figure(figsize=(10, 3.6 * rows))   # fixed margins: a layout engine doubles the time
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16 if rows == 1 else 0.12,
                            top=1 - 0.17 / rows, wspace=0.18, hspace=0.5)
        grid = fig.add_gridspec(rows, 2)
        axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
        if self.batches:
            self._draw_batches(fig, grid)
        for ax, pair, color in zip(axes, ("negative", "positive"), (NEG_COLOR, POS_COLOR)):
            part = table[table["pair"] == pair]
            ax.plot(part["similarity"], part[column], color=color, lw=2,
                    label=f"weight of the {pair} pair")
            for values, c, label in ((pos, POS_COLOR, "other positives"),
                                     (neg, NEG_COLOR, "other negatives")):
                ax.vlines(values, 0, 1, transform=ax.get_xaxis_transform(), colors=c,
                          linestyles=":", lw=1, label=label)
            ax.set_xlim(-1, 1)
            ax.set_xlabel("similarity $s$ of the pair")
            ax.set_title(f"{pair} pair")
            ax.legend(fontsize="small", loc="best")   # where it covers the least of the curve
        axes[0].set_ylabel("weight $w$" + (" (scaled to max 1)" if self.normalize.value else ""))
        shown = ", ".join(f"{k}={v:.3g}" if _is_number(v) else f"{k}={v}"
                          for k, v in self.params().items())
        fig.suptitle(f"{self.loss_name}" + (f" ({shown})" if shown else ""), fontsize="medium")
        return fig

    def _draw_batches(self, fig, grid) -> None:
        from .plotting import NEG_COLOR, POS_COLOR

        table = self.batch_weights()
        sub = grid[1, :].subgridspec(1, len(self.batches), wspace=0.18)
        for i, name in enumerate(self.batches):
            ax = fig.add_subplot(sub[0, i])
            part = table[table["batch"] == name]
            if part.empty:
                ax.text(0.5, 0.5, f"{self.loss_name} cannot weight this batch", ha="center",
                        transform=ax.transAxes)
            for pair, color in (("positive", POS_COLOR), ("negative", NEG_COLOR)):
                sel = part[part["pair"] == pair]
                ax.scatter(sel["similarity"], sel["weight"], s=8, alpha=0.5, color=color)
            ax.set_xlim(-1, 1.02)
            ax.set_xlabel("similarity $s_{ij}$ in the batch")
            # no legend over the points (they crowd every corner): the colours are the curves'
            ax.set_title(f"a real batch: {name}", fontsize="medium")
        fig.text(0.5, 0.005, "green: positive pairs, orange: negative pairs "
                 "(weights.pair_weights at the sliders' values)", ha="center", va="bottom",
                 fontsize="small")
        fig.axes[2].set_ylabel("weight $w_{ij}$")

    def png(self, dpi: int = 80) -> bytes:
        """The current state as PNG bytes."""
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    def show_static(self):
        """Display the current state as a static image (where widgets cannot run)."""
        from IPython.display import Image, display

        display(Image(self.png()))

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["image/png"] = base64.b64encode(self.image.value or self.png()).decode("ascii")
        bundle["text/plain"] = f"WeightExplorer(loss={self.loss_name!r})"
        return bundle

    def __repr__(self) -> str:
        return f"WeightExplorer(loss={self.loss_name!r}, params={self.params()})"


def weight_explorer(loss: str = "multi_similarity", **params) -> WeightExplorer:
    """The interactive weight explorer of ``loss`` (see the module docstring); ``params``: the
    loss's settings (a slider starts at its value) and the explorer's ``points``,
    ``context_pos``, ``context_neg``, ``normalize``."""
    return WeightExplorer(loss, **params)
