"""dmlkit.explorer: the sliders drive ``weights.weight_curve``, for every loss of the selector."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from dmlkit import explorer, explorer_curves, losses, weights
from dmlkit.figure_audit import audit_figure

POINTS = 41   # a coarse grid keeps the sweep over every loss quick
# draw=False: the curves without redrawing the PNG on each move (test_static_image_... draws)
SUPPORTED = explorer.supported_losses()


def _expected(ex) -> pd.DataFrame:
    """The curves recomputed from the sliders' values alone, with weights.weight_curve."""
    values = {k: s.value for k, s in ex.sliders.items()}
    pos = tuple(values.pop(f"pos_{i}") for i in range(1, 4))
    neg = tuple(values.pop(f"neg_{i}") for i in range(1, 4))
    settings = {**explorer.CURVE_SETTINGS.get(ex.loss_name, {}), **values}
    extra = {k: v for k, v in (("num_classes", 5), ("embedding_dim", 2))
             if k in (losses.parameters(ex.loss_name) or [])}
    loss = losses.build(ex.loss_name, **settings, **extra)
    frames = []
    for pair in ("negative", "positive"):
        c = weights.weight_curve(loss, pair, grid=np.linspace(-1, 1, POINTS), context_pos=pos,
                                 context_neg=neg)
        frames.append(pd.DataFrame({"similarity": c.similarity, "pair": pair,
                                    "weight": c.weight}))
    return pd.concat(frames, ignore_index=True)


def _same(table, expected):
    """The explorer's curves equal weight_curve's loop to rounding (the vmapped ones too)."""
    pd.testing.assert_frame_equal(table[["similarity", "pair", "weight"]], expected, rtol=0,
                                  atol=1e-12)


def _moved(slider):
    """A value of the slider's range away from its current value."""
    lo, hi, v = slider.min, slider.max, slider.value
    return hi if hi - v >= v - lo else lo


def test_the_selector_lists_the_s_based_losses_once_each():
    # notebook 03's curve losses are there; losses that need the embeddings are not
    for name in ("multi_similarity", "binomial", "raw", "vthm", "contrastive", "triplet",
                 "generalized_lifted_structure", "binomial+vthm", "raw+semihard"):
        assert name in SUPPORTED
    assert "osm_caa" not in SUPPORTED and "raw+distance_weighted" not in SUPPORTED
    assert "ms" not in SUPPORTED and "binomial_deviance" not in SUPPORTED   # aliases: once
    classes = [losses.get(n) for n in SUPPORTED]
    assert len(set(classes)) == len(classes)
    # every drawable loss class of the registry is offered
    for name in losses.available():
        if losses.get(name) not in classes:
            with pytest.raises(ValueError, match="cannot draw"):
                explorer.weight_explorer(name)


def test_sliders_are_the_papers_symbols():
    expected = {"multi_similarity": ["alpha", "beta", "lam", "epsilon"],
                "binomial": ["alpha", "beta", "lam"], "raw": ["alpha", "beta", "lam"],
                "vthm": ["epsilon"], "contrastive": ["lam"], "triplet": ["margin"],
                "angular": ["alpha"], "npair": []}   # N-pair's l2_reg is not a pair weight
    ex = explorer.weight_explorer(points=POINTS, draw=False)
    for name, symbols in expected.items():
        ex.set_loss(name)
        assert [k for k in ex.sliders if not k.startswith(("pos_", "neg_"))] == symbols, name
    ex.set_loss("multi_similarity")
    assert {k: s.value for k, s in ex.sliders.items()} == {
        "alpha": 2.0, "beta": 50.0, "lam": 0.5, "epsilon": 0.1, "pos_1": 0.6, "pos_2": 0.7,
        "pos_3": 0.8, "neg_1": 0.2, "neg_2": 0.3, "neg_3": 0.4}   # notebook 03's defaults


@pytest.mark.parametrize("name", SUPPORTED)
def test_curves_are_weight_curve_at_the_sliders_values(name):
    ex = explorer.weight_explorer(name, points=POINTS, draw=False)
    table = ex.curves()
    assert list(table.columns[:3]) == ["similarity", "pair", "weight"]
    _same(table, _expected(ex))
    hyper = [k for k in ex.sliders if not k.startswith(("pos_", "neg_"))]
    for key in hyper:   # each hyper-parameter slider changes the curves, and they follow it
        before = ex.curves()["weight"].to_numpy()
        ex.sliders[key].value = _moved(ex.sliders[key])
        after = ex.curves()
        assert not np.allclose(after["weight"], before, equal_nan=True), (name, key)
        _same(after, _expected(ex))
    ex.sliders["neg_3"].value = 0.55   # the context too
    _same(ex.curves(), _expected(ex))


@pytest.mark.parametrize("name", ["multi_similarity", "raw", "triplet",
                                  "generalized_lifted_structure"])
def test_context_sliders_move_relative_weights(name):
    ex = explorer.weight_explorer(name, points=POINTS, draw=False)
    for key in [k for k in ex.sliders if k.startswith(("pos_", "neg_"))]:
        before = ex.curves()["weight"].to_numpy()
        ex.sliders[key].value = 0.95 if ex.sliders[key].value < 0.5 else -0.2
        assert not np.allclose(ex.curves()["weight"], before), (name, key)


def test_binomial_ignores_the_other_pairs():
    """Wang et al. 2019b: binomial deviance weights a pair by its own similarity only."""
    ex = explorer.weight_explorer("binomial", points=POINTS, draw=False)
    before = ex.curves()
    for key in [k for k in ex.sliders if k.startswith(("pos_", "neg_"))]:
        ex.sliders[key].value = -0.5
    pd.testing.assert_frame_equal(ex.curves(), before)


def test_guide_claims_of_notebook_03():
    """The claims of notebook 03's guide, on the curves (context 0.6-0.8 / 0.2-0.4)."""
    ex = explorer.weight_explorer("multi_similarity", points=201, draw=False)

    def neg():
        t = ex.curves()
        return t[t.pair == "negative"].set_index("similarity")["weight"]

    def pos():
        t = ex.curves()
        return t[t.pair == "positive"].set_index("similarity")["weight"]

    # epsilon: the negative is weighted once s > hardest positive - epsilon = 0.6 - epsilon
    for eps in (0.1, 0.3):
        ex.sliders["epsilon"].value = eps
        w = neg()
        assert (w[w.index < 0.6 - eps - 0.01] == 0).all() and (w[w.index > 0.6 - eps] > 0).all()
        w = pos()   # a positive while s < hardest negative + epsilon = 0.4 + epsilon
        assert (w[w.index > 0.4 + eps + 0.01] == 0).all() and (w[w.index < 0.4 + eps] > 0).all()
    ex.sliders["epsilon"].value = 0.1
    # beta: the mined negative's weight is a sigmoid of beta (s - lam) (alone in VTHM here)
    for beta in (10.0, 50.0):
        ex.sliders["beta"].value = beta
        w = neg()
        s = w.index.to_numpy()
        kept = s > 0.5
        assert np.allclose(w[kept], 1 / (1 + np.exp(-beta * (s[kept] - 0.5))), atol=1e-9)
    ex.sliders["beta"].value = 50.0
    # alpha: the swept positive (alone in VTHM) weighs sigmoid(-alpha (s - lam))
    for alpha in (2.0, 8.0):
        ex.sliders["alpha"].value = alpha
        w = pos()
        s = w.index.to_numpy()
        kept = s < 0.5
        assert np.allclose(w[kept], 1 / (1 + np.exp(alpha * (s[kept] - 0.5))), atol=1e-9)
    ex.sliders["alpha"].value = 2.0
    # context: negative 3 at 0.55 is kept; positives are weighted up to 0.55 + epsilon, and a
    # swept negative at 0.55 shares its weight with it (about half of what it had)
    at = lambda w, x: w.loc[np.isclose(w.index, x)].item()  # noqa: E731
    alone = at(neg(), 0.55)
    ex.sliders["neg_3"].value = 0.55
    w = pos()
    assert w[w.index < 0.645].gt(0).all() and (w[w.index > 0.655] == 0).all()
    e = np.exp(50.0 * (0.55 - 0.5))
    assert alone == pytest.approx(e / (1 + e), rel=1e-9)
    assert at(neg(), 0.55) == pytest.approx(e / (1 + 2 * e), rel=1e-9)
    assert 0.45 < at(neg(), 0.55) / alone < 0.55
    ex.sliders["neg_3"].value = 0.4
    # lam moves the centre of that sigmoid
    ex.sliders["lam"].value = 0.7
    w = neg()
    assert at(w, 0.7) == pytest.approx(0.5, abs=1e-9)


def test_static_image_and_mime_bundle():
    ex = explorer.weight_explorer(points=POINTS)
    png = ex.png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle   # live where widgets run
    assert base64.b64decode(bundle["image/png"])[:4] == b"\x89PNG"  # the image elsewhere
    first = ex.image.value
    ex.sliders["beta"].value = 5.0
    assert ex.image.value != first   # the displayed plot follows the slider


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="cannot draw"):
        explorer.weight_explorer("osm_caa")
    with pytest.raises(ValueError, match="unknown loss"):
        explorer.weight_explorer("no_such_loss")
    with pytest.raises(ValueError, match="gamma"):
        explorer.weight_explorer("multi_similarity", gamma=1.0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        explorer.weight_explorer(context_pos=(0.5, 1.5))
    with pytest.raises(ValueError, match="points"):
        explorer.weight_explorer(points=1)


def test_caller_settings_start_the_sliders():
    ex = explorer.weight_explorer("multi_similarity", beta=40, points=POINTS)
    assert ex.sliders["beta"].value == 40
    ex = explorer.weight_explorer("triplet", form="distance", points=POINTS)
    assert ex.params()["form"] == "distance"


def test_batch_panel_is_pair_weights_at_the_sliders_values():
    import torch

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(16, 6, generator=g, dtype=torch.float64)
    labels = torch.arange(16) % 4
    ex = explorer.weight_explorer("multi_similarity", points=POINTS, draw=False,
                                  batches={"random": (emb, labels)})

    def expected():
        loss = losses.build("multi_similarity", **{k: ex.sliders[k].value
                                                   for k in ("alpha", "beta", "lam", "epsilon")})
        S, W = weights.pair_weights(loss, emb, labels)
        same = (labels[:, None] == labels[None, :]).numpy()
        off = ~np.eye(16, dtype=bool)
        return {pair: (S.numpy()[m], W.numpy()[m])
                for pair, m in (("positive", same & off), ("negative", ~same))}

    for beta in (50.0, 5.0):
        ex.sliders["beta"].value = beta
        table = ex.batch_weights()
        for pair, (s, w) in expected().items():
            part = table[table.pair == pair]
            assert np.array_equal(part.similarity, s) and np.array_equal(part.weight, w)
    assert ex.png()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="batch 'bad'"):
        explorer.weight_explorer(batches={"bad": (emb, labels[:3])})


def test_the_curves_are_vectorised_where_the_loss_allows_it():
    """Most losses draw through vmap (one backward pass); the rest through the loop."""
    for name in ("binomial", "vthm", "generalized_lifted_structure", "proxy_anchor"):
        loss = explorer._build(name, explorer.CURVE_SETTINGS.get(name, {}))
        explorer_curves.curves(loss, np.linspace(-1, 1, 5), (0.6,), (0.2,))
        assert explorer_curves.vectorised(loss), name

    class Branching(type(losses.build("binomial"))):   # data-dependent control flow
        def compute(self, batch):
            return super().compute(batch) * (2.0 if bool(batch.S.sum() > 100) else 1.0)

    loss, grid = Branching(), np.linspace(-1, 1, 7)
    drawn = explorer_curves.curves(loss, grid, (0.6,), (0.2,))   # vmap fails: the loop
    assert not explorer_curves.vectorised(loss)
    for pair in ("negative", "positive"):
        expected = weights.weight_curve(loss, pair, grid=grid, context_pos=(0.6,),
                                        context_neg=(0.2,))
        assert np.array_equal(drawn[pair].weight, expected.weight)


def test_sliders_show_the_symbols_and_are_wide_enough_to_drag_each_step():
    symbols = {"multi_similarity": ["α", "β", "λ", "ε"], "triplet": ["m"],
               "contrastive": ["λ"], "proxy_anchor": ["α", "δ"], "ddml": ["τ", "β"],
               "angular": ["α (°)"], "lifted_structure": ["m"]}
    ex = explorer.weight_explorer(points=5, draw=False)
    for name in SUPPORTED:
        ex.set_loss(name)
        hyper = {k: s for k, s in ex.sliders.items() if not k.startswith(("pos_", "neg_"))}
        if name in symbols:
            assert [s.description for s in hyper.values()] == symbols[name], name
        for key, s in ex.sliders.items():
            assert round((s.max - s.min) / s.step) <= explorer.TRACK_PX, (name, key)
            assert s.layout.width == "430px"   # 430 - 70 (label) - readout >= TRACK_PX
        for key, s in hyper.items():   # the Python name stays the key and the tooltip
            assert s.tooltip == key and ex.params()[key] == s.value
    assert ex.sliders["pos_1"].description == "positive 1"
    for name, key, value in (("contrastive", "lam", -2.0), ("proxy_anchor", "alpha", 500.0)):
        ex = explorer.weight_explorer(name, points=5, draw=False, **{key: value})
        s = ex.sliders[key]   # a range widened to the caller's value: still <= TRACK_PX steps
        assert s.value == value and (s.max - s.min) / s.step <= explorer.TRACK_PX + 1e-9


#: the losses with the longest labels and the widest tick labels (1.5e5, 6e-4, ...)
AUDITED = ("multi_similarity", "raw+semihard", "lifted_structure", "ddml", "npair_ovo",
           "angular", "proxy_anchor", "npair")


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _batches():
    import torch

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(16) // 4
    collapsed = torch.randn(8, generator=g, dtype=torch.float64) + 0.02 * torch.randn(
        16, 8, generator=g, dtype=torch.float64)   # an untrained network: every s near 1
    spread = torch.randn(4, 8, generator=g, dtype=torch.float64)[labels] + 0.5 * torch.randn(
        16, 8, generator=g, dtype=torch.float64)
    return {"untrained": (collapsed, labels + 3), "trained": (spread, labels + 3)}


@pytest.mark.parametrize("with_batches", [False, True])
def test_the_plot_has_one_pixel_size_for_every_loss(with_batches):
    import io

    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    ex = explorer.weight_explorer(points=11, draw=False,
                                  batches=_batches() if with_batches else None)
    width, height = ex.size_px
    assert (width, height) == ((800, 560) if with_batches else (800, 308))
    assert (ex.image.layout.width, ex.image.layout.height) == (f"{width}px", f"{height}px")
    names = AUDITED if with_batches else ["lifted_structure", "npair"]
    with mpl.rc_context({"savefig.bbox": "tight"}):   # notebook 03's style
        for name in names:
            ex.set_loss(name)
            ex.normalize.value = name == "npair"
            png = ex.png()   # the widget's image: only what an update changes is redrawn
            assert _png_size(png) == (width, height), name
            fig = ex.figure()   # the same state, drawn in full
            full = FigureCanvasAgg(fig).print_to_buffer()
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)))[..., :3],
                                  np.frombuffer(full[0], np.uint8).reshape(
                                      height, width, 4)[..., :3]), name
            renderer = fig.canvas.get_renderer()
            for artist in (*fig.axes, *fig.legends, *fig.texts):   # nothing drawn outside
                box = artist.get_tightbbox(renderer)
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, \
                    (name, artist)
            assert audit_figure(fig) == [], name   # no overlap, labels, legend over no data


def test_the_batch_panel_shows_every_loss_and_zooms_on_the_batch():
    batches = _batches()
    ex = explorer.weight_explorer(points=11, draw=False, batches=batches)
    for name in SUPPORTED:
        ex.set_loss(name)
        table = ex.batch_weights()
        for batch in batches:
            counts = table[table.batch == batch].groupby("pair").size().to_dict()
            # in-batch pairs: 16 x 3 positives, 16 x 12 negatives; proxies: 16 x 1, 16 x 3
            expected = ({"positive": 16, "negative": 48} if ex.is_proxy_loss()
                        else {"positive": 48, "negative": 192})
            assert counts == expected, (name, batch)
            assert np.isfinite(table.weight).all()
    ex.set_loss("multi_similarity")
    ex.png()
    axes = ex._canvas.batch_axes
    s = ex.batch_weights()
    s = s[s.batch == "untrained"].similarity
    lo, hi = axes[0].get_xlim()
    assert lo <= s.min() and s.max() <= hi and hi - lo < 0.1 and s.min() > 0.9   # zoomed
    title = axes[0].get_title()   # "batch: untrained, s ∈ [a, b]", a <= min s, b >= max s
    a, b = map(float, title.split("s ∈ [")[1].rstrip("]").split(", "))
    assert a <= s.min() < a + (s.max() - s.min()) / 5 and b - (s.max() - s.min()) / 5 < s.max() <= b
    assert axes[0].get_xlabel() == "similarity s_ij" and not ex._canvas.empty[0].get_text()


def test_proxy_losses_weight_sample_to_proxy_pairs_at_the_class_means():
    import torch

    batches = _batches()
    for name, params in (("proxy_anchor", {"alpha": 16.0, "delta": 0.2}), ("proxy_nca", {})):
        ex = explorer.weight_explorer(name, points=11, draw=False, batches=batches, **params)
        assert ex.is_proxy_loss()
        table = ex.batch_weights()
        for batch, (emb, labels) in batches.items():
            y = labels - 3   # the batch's classes 3..6 renumbered 0..3
            means = torch.stack([emb[y == c].mean(0) for c in range(4)])
            loss = losses.build(name, num_classes=4, embedding_dim=8, **params)
            loss.proxies.data = torch.nn.functional.normalize(means, dim=1)
            S, W = weights.pair_weights(loss, emb, y)
            own = (y[:, None] == torch.arange(4)[None, :]).numpy()
            for pair, mask in (("positive", own), ("negative", ~own)):
                part = table[(table.batch == batch) & (table.pair == pair)]
                assert np.array_equal(part.similarity, S.numpy()[mask])
                assert np.allclose(part.weight, W.numpy()[mask], rtol=0, atol=1e-15)
        ex.png()
        assert "proxies at the batch's class means" in ex._canvas.footnote.get_text()
        assert ex._canvas.batch_axes[1].get_xlabel() == "similarity s_ij (sample, proxy)"
    assert not explorer.weight_explorer("binomial", draw=False).is_proxy_loss()
