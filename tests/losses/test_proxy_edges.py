"""dmlkit.losses.proxy beyond test_proxy.py: the edge batches of Proxy-Anchor and ProxyNCA
against naive loops over the samples and proxies (one sample, one class, one proxy, a batch
whose proxy labels miss some samples' classes, raw embeddings), their closed-form weights
there against autograd, the defaults against the papers' values, the proxies' dtype, and the
errors by their words."""

import math

import pytest
import torch

from dmlkit import losses
from dmlkit.losses.base import make_batch
from dmlkit.losses.proxy import DENOMINATORS, ProxyAnchorLoss, ProxyLoss, ProxyNCALoss


def _unit(v):
    return v / v.norm()


def naive_anchor(x, y, P, plab, alpha, delta, normalize=True):
    """Kim et al. 2020, eq. 4, a loop over the proxy columns then the samples; a column whose
    class has no sample adds nothing to the positive part (which is 0 without any)."""
    pos_sum, neg_sum, with_pos = 0.0, 0.0, 0
    for c in range(len(P)):
        sp, sn, has_pos = 0.0, 0.0, False
        for i in range(len(x)):
            s = float(_unit(x[i]) @ _unit(P[c])) if normalize else float(x[i] @ P[c])
            if int(y[i]) == int(plab[c]):
                sp += math.exp(-alpha * (s - delta))
                has_pos = True
            else:
                sn += math.exp(alpha * (s + delta))
        with_pos += has_pos
        pos_sum += math.log(1 + sp)
        neg_sum += math.log(1 + sn)
    return (pos_sum / with_pos if with_pos else 0.0) + neg_sum / len(P)


def naive_nca(x, y, P, plab, scale, denominator, normalize=True):
    """-log(sum_{pos} e^{-scale d} / sum_{D(x)} e^{-scale d}) per sample (0 for a sample
    without a positive proxy or with an empty D(x)), averaged over all samples."""
    total = 0.0
    for i in range(len(x)):
        xi = _unit(x[i]) if normalize else x[i]
        d = [float(((xi - (_unit(p) if normalize else p)) ** 2).sum()) for p in P]
        pos = [c for c in range(len(P)) if int(plab[c]) == int(y[i])]
        den = [c for c in range(len(P)) if denominator == "all" or int(plab[c]) != int(y[i])]
        if not pos or not den:
            continue
        total += (-math.log(sum(math.exp(-scale * d[c]) for c in pos))
                  + math.log(sum(math.exp(-scale * d[c]) for c in den)))
    return total / len(x)


def _batch(seed, B, D, n_classes):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_classes, (B,), generator=g)
    return x, y


def _loss(name, C, D, **kw):
    torch.manual_seed(0)
    return losses.build(name, num_classes=C, embedding_dim=D, **kw).double()


def _autograd_weights(loss, batch):
    S = batch.S.detach().clone().requires_grad_(True)
    b = make_batch(batch.embeddings, batch.labels, batch.ref_embeddings, batch.ref_labels,
                   normalize=batch.normalized)
    b.S = S
    (g,) = torch.autograd.grad(loss.compute(b), S)
    return torch.where(batch.pos, -g, g) * (batch.pos | batch.neg)


ANCHOR = [{}, {"alpha": 4.0, "delta": -0.2}, {"alpha": 0.5, "delta": 0.3, "normalize": False}]
NCA = [{}, {"denominator": "all"}, {"scale": 3.0, "normalize": False},
       {"scale": 0.5, "denominator": "all", "normalize": False}]


def _anchor_naive(loss, x, y, P, plab):
    return naive_anchor(x, y, P, plab, loss.alpha, loss.delta, loss.normalize)


def _nca_naive(loss, x, y, P, plab):
    return naive_nca(x, y, P, plab, loss.scale, loss.denominator, loss.normalize)


CASES = ([("proxy_anchor", kw, _anchor_naive) for kw in ANCHOR]
         + [("proxy_nca", kw, _nca_naive) for kw in NCA])
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


# ----------------------------------------------------------------------------- edge batches
@pytest.mark.parametrize("name,kw,naive", CASES, ids=IDS)
def test_edge_batches_equal_the_naive_loop(name, kw, naive):
    C, D = 5, 4
    loss = _loss(name, C, D, **kw)
    P = loss.proxies.detach()
    x, y = _batch(3, B=7, D=D, n_classes=C)
    batches = [
        (x[:1], y[:1]),                                   # one sample
        (x[:2], y[:2]),                                   # two samples
        (x, torch.full_like(y, 2)),                       # one class: one positive proxy
        (x, torch.full_like(y, C - 1)),                   # the last class
        (x, y),
    ]
    for xb, yb in batches:
        expected = naive(loss, xb, yb, P, torch.arange(C))
        assert loss(xb, yb).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name,kw,naive", CASES, ids=IDS)
def test_proxy_labels_missing_some_classes_equal_the_naive_loop(name, kw, naive):
    # compute() on a batch whose reference labels miss some samples' classes (and repeat one):
    # samples without a positive proxy, proxies without a positive sample
    C, D = 4, 3
    loss = _loss(name, C, D, **kw)
    P = loss.proxies.detach()
    x, _ = _batch(5, B=6, D=D, n_classes=3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for plab in (torch.tensor([0, 0, 3, 5]), torch.tensor([3, 4, 5, 6]),
                 torch.tensor([1, 7, 7, 7])):
        batch = make_batch(x, y, P, plab, normalize=loss.normalize)
        expected = naive(loss, x, y, P, plab)
        assert loss.compute(batch).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("kw", ANCHOR, ids=range(len(ANCHOR)))
def test_anchor_closed_form_weights_on_edge_batches(kw):
    C, D = 4, 3
    loss = _loss("proxy_anchor", C, D, **kw)
    P = loss.proxies.detach()
    x, _ = _batch(6, B=5, D=D, n_classes=C)
    for y, plab in [(torch.full((5,), 1), torch.arange(C)),          # one positive proxy
                    (torch.tensor([0, 1, 0, 1, 2]), torch.tensor([4, 5, 6, 7])),   # none
                    (torch.tensor([0, 1, 0, 1, 2]), torch.arange(C))]:
        batch = make_batch(x, y, P, plab, normalize=loss.normalize)
        expected = _autograd_weights(loss, batch)
        torch.testing.assert_close(loss.closed_form_weights(batch), expected,
                                   rtol=1e-10, atol=1e-14)
        assert expected.abs().max() > 0


@pytest.mark.parametrize("denominator", DENOMINATORS)
def test_nca_with_one_class(denominator):
    # one proxy: "negatives" has no denominator (a connected zero), "all" is -log 1 = 0
    loss = _loss("proxy_nca", 1, 3, denominator=denominator)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    value = loss(x, torch.zeros(4, dtype=torch.long))
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() < 1e-12


def test_nca_rows_without_a_denominator_count_as_zero_in_the_mean():
    # labels 0 and 1; proxies 0, 0, 1: with "negatives" every row has a denominator;
    # proxies 0, 0: rows of class 0 have none, rows of class 1 no positive -> a connected 0
    loss = _loss("proxy_nca", 3, 3, scale=2.0)
    x, _ = _batch(8, B=4, D=3, n_classes=2)
    y = torch.tensor([0, 1, 0, 1])
    P = loss.proxies.detach()
    batch = make_batch(x, y, P[:2], torch.tensor([0, 0]))
    assert loss.compute(batch).item() == 0.0
    batch = make_batch(x, y, P, torch.tensor([0, 0, 1]))
    assert loss.compute(batch).item() == pytest.approx(
        naive_nca(x, y, P, [0, 0, 1], 2.0, "negatives"), rel=1e-10)


# ----------------------------------------------------------------------------- defaults
def test_defaults_are_the_papers_values():
    anchor = ProxyAnchorLoss(num_classes=3, embedding_dim=2)
    paper = ProxyAnchorLoss(num_classes=3, embedding_dim=2, alpha=32.0, delta=0.1,
                            normalize=True)
    assert (anchor.alpha, anchor.delta, anchor.normalize) == (paper.alpha, paper.delta, True)
    nca = ProxyNCALoss(num_classes=3, embedding_dim=2)
    paper = ProxyNCALoss(num_classes=3, embedding_dim=2, scale=1.0, denominator="negatives",
                         normalize=True)
    assert (nca.scale, nca.denominator, nca.normalize) == (paper.scale, paper.denominator, True)
    assert DENOMINATORS == ("negatives", "all")
    assert (anchor.num_classes, anchor.embedding_dim) == (3, 2)
    assert ProxyAnchorLoss(2, 3, normalize=False).normalize is False
    # the base's own default too (a subclass that does not pass normalize gets cosines)
    assert ProxyLoss(2, 3).normalize is ProxyLoss(2, 3, normalize=True).normalize is True
    assert ProxyNCALoss(2, 3, normalize=False).normalize is False


def test_smallest_sizes_and_hyperparameters_are_accepted():
    for name in ("proxy_anchor", "proxy_nca"):
        for C, D in [(1, 1), (1, 3), (3, 1)]:
            loss = losses.build(name, num_classes=C, embedding_dim=D)
            assert loss.proxies.shape == (C, D)
            assert torch.isfinite(loss(torch.randn(3, D), torch.zeros(3, dtype=torch.long)))
    assert ProxyAnchorLoss(2, 2, alpha=0.25).alpha == 0.25
    assert ProxyNCALoss(2, 2, scale=0.25).scale == 0.25
    assert ProxyNCALoss(2, 2, denominator="all").denominator == "all"


def test_forward_adds_a_subclass_regularizer_of_the_batch():
    class Penalised(ProxyAnchorLoss):
        def regularizer(self, batch):       # a proxy-norm penalty that reads the batch
            return 0.5 * (batch.ref_embeddings ** 2).sum() + batch.S.shape[0]

    C, D = 3, 4
    torch.manual_seed(0)
    loss = Penalised(num_classes=C, embedding_dim=D).double()
    x, y = _batch(4, B=5, D=D, n_classes=C)
    P = loss.proxies.detach()
    expected = (naive_anchor(x, y, P, torch.arange(C), 32.0, 0.1)
                + 0.5 * float((P ** 2).sum()) + 5)
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------- proxies' dtype
def test_references_follow_the_embeddings_dtype():
    loss = losses.build("proxy_anchor", num_classes=4, embedding_dim=3)     # float32
    for dtype, expected in [(torch.float64, torch.float64), (torch.float16, torch.float32),
                            (torch.bfloat16, torch.float32), (torch.float32, torch.float32),
                            (torch.int64, torch.float32)]:
        P, labels = loss.references(torch.zeros(2, 3, dtype=dtype))
        assert P.dtype == expected
        torch.testing.assert_close(P, loss.proxies.detach().to(expected))
        assert torch.equal(labels, torch.arange(4))
    P, _ = loss.double().references([[1, 2, 3]])           # a list of ints: the proxies' dtype
    assert P.dtype == torch.float64


def test_half_embeddings_give_the_float32_value():
    loss = losses.build("proxy_nca", num_classes=4, embedding_dim=3, denominator="all")
    x, y = _batch(2, B=6, D=3, n_classes=4)
    xh = x.half()
    expected = naive_nca(xh.double(), y, loss.proxies.detach().double(), torch.arange(4), 1.0,
                         "all")
    assert loss(xh, y).item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", [ProxyAnchorLoss, ProxyNCALoss])
def test_errors_name_their_cause(cls):
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"^{name} owns one proxy per class: pass num_classes "
                                         r"and embedding_dim, e\.g\. build\('proxy_anchor', "
                                         r"num_classes=100, embedding_dim=512\)$"):
        cls()
    with pytest.raises(ValueError, match="owns one proxy per class"):
        cls(num_classes=3)
    with pytest.raises(ValueError, match="owns one proxy per class"):
        cls(embedding_dim=3)
    for C, D in [(0, 3), (3, 0), (-1, 2)]:
        with pytest.raises(ValueError, match=rf"^num_classes and embedding_dim must be >= 1, "
                                             rf"got {C}, {D}$"):
            cls(num_classes=C, embedding_dim=D)
    loss = cls(num_classes=4, embedding_dim=3).double()
    x, y = _batch(0, B=5, D=3, n_classes=4)
    with pytest.raises(ValueError, match=rf"^embeddings have dimension 2 but {name} was built "
                                         r"with embedding_dim=3$"):
        loss(x[:, :2], y)
    for bad in (4, -1, 7):
        yb = y.clone()
        yb[0], yb[1] = bad, 3 if bad < 0 else 0
        lo, hi = int(yb.min()), int(yb.max())
        with pytest.raises(ValueError, match=rf"^labels must lie in \[0, 4\) \(num_classes\), "
                                             rf"got range \[{lo}, {hi}\]$"):
            loss(x, yb)
    message = rf"^{name} takes no ref_embeddings / ref_labels: its references are its proxies$"
    for ref in [(x, y), (x, None), (None, y)]:
        with pytest.raises(ValueError, match=message):
            loss(x, y, *ref)


def test_hyperparameter_errors_name_their_cause():
    for alpha in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^alpha must be > 0, got {alpha}$"):
            ProxyAnchorLoss(2, 2, alpha=alpha)
    for scale in (0.0, -2.0):
        with pytest.raises(ValueError, match=rf"^scale must be > 0, got {scale}$"):
            ProxyNCALoss(2, 2, scale=scale)
    with pytest.raises(ValueError, match=r"^unknown denominator 'paper'; choose one of "
                                         r"\('negatives', 'all'\)$"):
        ProxyNCALoss(2, 2, denominator="paper")
