"""The weight explorer: Figure 1 of Wang et al. 2019b with sliders (an ipywidgets app).

``weight_explorer(loss="multi_similarity", **params)`` draws the weight of one positive and of
one negative pair of an anchor as their similarity sweeps [-1, 1], computed by
:func:`dmlkit.weights.weight_curve` (the code and the default context of notebook 03: the anchor's
other positives at s = 0.6, 0.7, 0.8, its other negatives at 0.2, 0.3, 0.4). It has

* a loss selector with every registered S-based loss that ``weight_curve`` can draw
  (:func:`supported_losses`, read from the registry each time, so a newly registered loss
  appears; aliases of one loss are listed once),
* one slider per hyper-parameter of the selected loss that changes its weights, labelled with
  the paper's symbol (α, β, λ, ε, δ, m for a margin, ...; the Python names ``alpha``, ``beta``,
  ``lam``, ``epsilon``, ``delta``, ``margin`` stay the keys of ``.sliders`` and the tooltip), and
* one slider per context pair (``pos_1`` .. ``neg_3``: the anchor's other similarities).

Every slider's track is at least :data:`TRACK_PX` pixels for at most that many steps (a
context slider: -1 .. 1 in steps of 0.01), so dragging sets any step.

The returned :class:`WeightExplorer` has ``.widget`` (the container to display), ``.sliders``
(name -> slider, hyper-parameters and context), ``.curves()`` (a DataFrame of what is drawn) and
``.figure()`` / ``.png()`` / ``.show_static()`` (the current state as a static image).

The plot is a PNG in an ``ipywidgets.Image`` of a fixed pixel size, whatever the loss
(:class:`dmlkit.explorer_figure.ExplorerFigure`: one figure whose artists are updated in place),
redrawn by the kernel (matplotlib's Agg) when a slider is released: the image is swapped in
place, so nothing flickers or moves, and only core widgets are
used, which JupyterLab and VS Code render without an extension (ipympl would need one in every
front end). Displaying the explorer itself (a cell ending in ``explorer``) also attaches the PNG
of its current state to the output: a page without a widget manager (GitHub, nbviewer, a
committed notebook whose widget state is stripped by :func:`dmlkit.nbrun.clean_notebook`) shows
that image instead of the live widget.

``batches={"untrained": (emb0, labels), "trained": (emb1, labels)}`` adds a second row: the
pair weights of real batches (:func:`dmlkit.weights.pair_weights`) as a scatter over S, for the
loss at the sliders' values (:meth:`WeightExplorer.batch_weights`); each panel's x axis spans
its batch's similarities (an untrained network's pairs all lie near s = 1: the panel zooms
there). A proxy loss weights sample-to-proxy pairs: its proxies are placed at the batch's
class means (normalised), which the figure says.

Settings, on purpose: the curves are drawn unscaled by default (their scale is what alpha and
beta change; ``normalize=True`` scales each to a maximum of 1 as notebook 03 does); contrastive
and triplet are drawn in the similarity forms of Wang et al. 2019b, as in notebook 03
(:data:`CURVE_SETTINGS`; their defaults are the distance forms, whose weights reach 1e5 near
s = 1); a loss that owns class parameters (the proxy losses) is built with one class per
reference label of the curve.

>>> ex = weight_explorer("multi_similarity", points=21)
>>> sorted(ex.sliders)[:4]
['alpha', 'beta', 'epsilon', 'lam']
>>> [s.description for s in ex.sliders.values()][:4]
['α', 'β', 'λ', 'ε']
>>> ex.sliders["epsilon"].value = 0.3
>>> table = ex.curves()
>>> list(table.columns[:3]), len(table)
(['similarity', 'pair', 'weight'], 42)
"""

from __future__ import annotations

import base64
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import losses as _losses
from . import weights as _weights
from .explorer_curves import curves as _curves
from .explorer_figure import ExplorerFigure
from .explorer_figure import symbol as _symbol

__all__ = ["CURVE_SETTINGS", "SYMBOL_RANGES", "TRACK_PX", "WeightExplorer", "supported_losses",
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
    ("proxy_anchor", "alpha"): (1.0, 64.0, 1.0),                 # a scale (paper: 32)
}
#: every slider's track is at least this wide (px) and has at most this many steps
TRACK_PX = 240
_SLIDER = {"width": "430px", "description_width": "70px"}   # 430 - 70 - readout > TRACK_PX
_CACHE = 64   # weight curves / batch weights kept per explorer (moving back is immediate)
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
    step = max(step, (hi - lo) / TRACK_PX)   # at most TRACK_PX steps: >= 1 px each
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


def _class_means(emb, labels):
    """``(labels renumbered 0 .. C-1, the normalised mean embedding of each class)``."""
    import torch

    classes, lab = torch.unique(labels, return_inverse=True)
    means = torch.zeros(len(classes), emb.shape[1], dtype=emb.dtype).index_add_(0, lab, emb)
    return lab, torch.nn.functional.normalize(means, dim=1)


def _proxy_batch(loss_name: str, params: Mapping, lab, proxies):
    """A proxy loss for a real batch: its proxies ``proxies`` (one per class, labels ``lab``
    0 .. C-1; :func:`_class_means`)."""
    loss = _losses.build(loss_name, **params, num_classes=proxies.shape[0],
                         embedding_dim=proxies.shape[1])
    loss.proxies.data = proxies.clone()
    return loss, lab


def _lru(cache: dict, key, make):
    if key in cache:
        cache[key] = cache.pop(key)   # most recent last
    else:
        cache[key] = make()
        while len(cache) > _CACHE:
            cache.pop(next(iter(cache)))
    return cache[key]


class WeightExplorer:
    """Weight-vs-similarity curves of one loss, driven by sliders; see the module docstring.

    ``draw=False`` does not redraw the plot on each change (code that only reads
    :meth:`curves`; :meth:`png` and :meth:`figure` still draw on request). ``batches``:
    name -> ``(embeddings (B, D), labels (B,))`` of real batches (e.g. a network before and
    after training): a second row of panels scatters their pair weights over S
    (:func:`dmlkit.weights.pair_weights` of the loss at the sliders' values; :meth:`batch_weights`).

    Attributes:
        widget: the ipywidgets container (``display(explorer.widget)``).
        sliders: name -> slider; the hyper-parameters of the selected loss (the Python names,
            labelled with the paper's symbols) and the context ``pos_1 .. pos_n``,
            ``neg_1 .. neg_m``. Selecting another loss replaces the hyper-parameter sliders
            in this same dict.
        selector: the loss dropdown.
        size_px: ``(width, height)`` of the plot in pixels, the same for every loss.
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
        self._curve_cache: dict = {}
        self._batch_cache: dict = {}
        self._means = {k: _class_means(*v) for k, v in self.batches.items()}   # proxies
        self._canvas = None   # the ExplorerFigure the widget shows (made on the first draw)
        self.selector = w.Dropdown(options=options, value=name, description="loss")
        self.normalize = w.Checkbox(value=bool(normalize), description="scale to max 1",
                                    indent=False)
        self._context = {}
        for prefix, values, label in (("pos", context_pos, "positive"),
                                      ("neg", context_neg, "negative")):
            for i, v in enumerate(values, 1):
                self._context[f"{prefix}_{i}"] = w.FloatSlider(
                    value=float(v), min=-1.0, max=1.0, step=0.01, description=f"{label} {i}",
                    continuous_update=False, readout_format=".2f",
                    tooltip=f"{prefix}_{i}: similarity of the anchor's {label} pair {i}",
                    layout=w.Layout(width=_SLIDER["width"]),
                    style={"description_width": _SLIDER["description_width"]})
        rows = max(len(self._context), 5) + 1   # the taller column: the page does not move
        self._param_box = w.VBox([])
        self.size_px = ExplorerFigure.size_for(len(self.batches))
        width, height = self.size_px
        self.image = w.Image(format="png", layout=w.Layout(width=f"{width}px",
                                                           height=f"{height}px"))
        self.status = w.HTML()
        column = w.Layout(width=f"{int(_SLIDER['width'][:-2]) + 20}px",
                          min_height=f"{32 * rows}px")
        context_box = w.VBox([w.HTML("<b>the anchor's other pairs (similarity)</b>"),
                              *self._context.values()], layout=column)
        self.widget = w.VBox([
            w.HBox([self.selector, self.normalize]),
            w.HBox([w.VBox([w.HTML("<b>hyper-parameters</b>"), self._param_box],
                           layout=column), context_box],
                   layout=w.Layout(flex_flow="row wrap")),
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

    def is_proxy_loss(self) -> bool:
        """Whether the selected loss owns proxies (its batch pairs are sample-to-proxy)."""
        return hasattr(_losses.get(self.loss_name), "references") and "num_classes" in (
            _losses.parameters(self.loss_name) or [])

    def curves(self) -> pd.DataFrame:
        """What is drawn: columns ``similarity``, ``pair`` ("negative" / "positive"),
        ``weight`` (``weights.weight_curve`` at the sliders' values), ``scaled_weight``
        (divided by the curve's maximum when that is positive) and ``loss``."""
        pos, neg = self.context()
        key = (self.loss_name, repr(sorted(self.params().items())), pos, neg)
        return _lru(self._curve_cache, key, self._compute_curves).copy()

    def _compute_curves(self) -> pd.DataFrame:
        pos, neg = self.context()
        rows = []
        for pair, c in _curves(self.loss(), self.grid, pos, neg).items():
            top = np.nanmax(c.weight) if np.isfinite(c.weight).any() else 0.0
            rows.append(pd.DataFrame({
                "similarity": c.similarity, "pair": pair, "weight": c.weight,
                "scaled_weight": c.weight / top if top > 0 else c.weight,
                "loss": self.loss_name}))
        return pd.concat(rows, ignore_index=True)

    def batch_weights(self) -> pd.DataFrame:
        """The pairs of each real batch: columns ``batch``, ``similarity``, ``pair``,
        ``weight`` (``weights.pair_weights`` of the loss at the sliders' values), ``loss``.
        For a proxy loss the pairs are sample-to-proxy, the proxies at the batch's class means
        (normalised; :meth:`is_proxy_loss`). A loss that cannot weight a batch gives none."""
        key = (self.loss_name, repr(sorted(self.params().items())))
        return _lru(self._batch_cache, key, self._compute_batches).copy()

    def _compute_batches(self) -> pd.DataFrame:
        proxies, frames = self.is_proxy_loss(), []
        for name, (emb, labels) in self.batches.items():
            try:
                if proxies:
                    loss, labels = _proxy_batch(self.loss_name, self.params(),
                                                *self._means[name])
                    refs = np.arange(loss.num_classes)
                else:
                    loss, refs = self.loss(), labels.numpy()
                S, W = _weights.pair_weights(loss, emb, labels)
            except (ValueError, RuntimeError, IndexError):
                continue
            lab = labels.numpy()
            same = lab[:, None] == refs[None, :]
            off = same if proxies else ~np.eye(len(lab), dtype=bool)
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
        made = {}
        pos, neg = self.context()
        for spec in slider_specs(name, self._fixed_now, pos, neg):
            cls = w.IntSlider if spec.integer else w.FloatSlider
            kwargs = {} if spec.integer else {"readout_format": ".3g"}
            s = cls(value=spec.value, min=spec.min, max=spec.max, step=spec.step,
                    description=_symbol(name, spec.name), tooltip=spec.name,
                    continuous_update=False, layout=w.Layout(width=_SLIDER["width"]),
                    style={"description_width": _SLIDER["description_width"]}, **kwargs)
            s.observe(self._update, names="value")
            made[spec.name] = s
            self._fixed_now.pop(spec.name, None)
        self.sliders.clear()   # the same dict: hyper-parameters first, then the context
        self.sliders.update(made)
        self.sliders.update(self._context)
        self._param_box.children = list(made.values()) or [
            w.HTML("(no hyper-parameter changes these weights)")]

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
    def _draw(self, canvas: ExplorerFigure) -> ExplorerFigure:
        pos, neg = self.context()
        canvas.update(loss_name=self.loss_name, params=self.params(), curves=self.curves(),
                      column="scaled_weight" if self.normalize.value else "weight",
                      context_pos=pos, context_neg=neg,
                      batches=self.batch_weights() if self.batches else None,
                      proxies=self.is_proxy_loss())
        return canvas

    def _new_canvas(self) -> ExplorerFigure:
        pos, neg = self.context()
        return ExplorerFigure(len(pos), len(neg), list(self.batches))

    def figure(self):
        """The current state as a new matplotlib Figure (not managed by pyplot: no double
        display in a notebook), :attr:`size_px` pixels at 80 dpi."""
        return self._draw(self._new_canvas()).fig

    def png(self) -> bytes:
        """The current state as PNG bytes (:attr:`size_px` pixels), drawn by updating the
        explorer's one figure in place."""
        if self._canvas is None:
            self._canvas = self._new_canvas()
        return self._draw(self._canvas).png()

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
