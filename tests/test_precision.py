"""The precision policy (dmlkit.precision, docs/precision.md): every registered loss (dense and
tiled), miner and retrieval metric on bfloat16 / float16 input, held to the error measured in
dmlkit/resources/precision_errors.csv (``FACTOR`` times the measured maximum, with a floor),
against float32 and float64 on the same rounded input; the dtypes a loss returns and
differentiates in; autocast leaves losses and metrics in float32; the table covers the
registries."""

import pytest
import torch

from dmlkit import losses, miners, precision
from dmlkit import precision_errors as pe
from dmlkit.evaluate import retrieval_metrics

#: a subset of the table's batches (its maximum covers them): keeps the suite fast
SEEDS = pe.SEEDS[:2]
#: one name per registered loss object (aliases listed by available() are the same loss)
NAMES = list({losses.get(n): n for n in reversed(losses.available())}.values())[::-1]
LOSS_CASES = [(n, p) for n in NAMES for p in pe.loss_paths(n)]
DTYPES = pytest.mark.parametrize("dtype", pe.DTYPES, ids=["bf16", "fp16"])


def _over(kind, name, path, dtype, errors):
    """The (quantity, reference, error, tolerance) that exceed their tolerance."""
    out = []
    for (quantity, ref), err in errors.items():
        tol = precision.tolerance(kind, name, path, dtype, quantity, ref)
        if not err <= tol:
            out.append((quantity, ref, err, tol))
    return out


@DTYPES
@pytest.mark.parametrize("name,path", LOSS_CASES, ids=[f"{n}-{p}" for n, p in LOSS_CASES])
def test_loss_is_float32_on_the_rounded_input(name, path, dtype):
    """Value (float32) and gradient (the input's dtype) of a half-precision batch against
    float32 and float64 on the same rounded batch, within the table's tolerance."""
    errors = pe.loss_errors(name, path, dtype, SEEDS)
    assert errors.pop("dtypes") == {(torch.float32, dtype)}
    assert errors[("value", "fp32")] <= precision.FLOORS[("value", "fp32")]   # the policy
    assert not _over("loss", name, path, dtype, errors)


@DTYPES
@pytest.mark.parametrize("name", miners.available())
def test_miner_on_a_rounded_similarity_matrix(name, dtype):
    errors = pe.miner_errors(name, dtype, SEEDS)
    assert errors[("mask", "fp32")] == 0 and errors[("mask", "fp64")] == 0
    assert not _over("miner", name, "-", dtype, errors)


@DTYPES
@pytest.mark.parametrize("path", ["self", "gallery"])
def test_retrieval_metrics_on_rounded_embeddings(path, dtype):
    errors = pe.metric_errors(path, dtype, SEEDS)
    over = [e for (key, ref), err in errors.items()
            for e in _over("metric", key, path, dtype, {("metric", ref): err})]
    assert not over


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name,path", LOSS_CASES, ids=[f"{n}-{p}" for n, p in LOSS_CASES])
def test_autocast_leaves_a_loss_in_float32(name, path, dtype):
    """Under autocast a loss computes exactly what it computes on float32 input."""
    x, y = pe.loss_batch(3)
    x = x.float()
    loss = pe.build(name, chunk_size=pe.CHUNK if path == "tiled" else None)
    torch.manual_seed(0)
    plain = loss(x, y)
    with torch.autocast("cpu", dtype=dtype):
        torch.manual_seed(0)
        auto = loss(x, y)
    assert auto.dtype == torch.float32 and torch.equal(auto, plain)


def test_autocast_leaves_retrieval_metrics_in_float32():
    """With the near-tie rule off too (a bf16 similarity block has exact ties, which that
    rule would rank again in float64 and so hide the block's precision)."""
    for seed in range(3):
        x, y = pe.metric_batch(seed)
        x = x.float()
        for near_ties in ("float64", "ignore"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                auto = retrieval_metrics(x, y, (1, 4), near_ties=near_ties)
            assert auto == retrieval_metrics(x, y, (1, 4), near_ties=near_ties)


def test_half_precision_gradient_is_rounded_once():
    """Two paths from one half input (N-pair's norm penalty and its similarities; a proxy
    loss's samples and float32 proxies) meet in float32: the half gradient equals the
    float32 gradient rounded once, bit for bit."""
    for name in ("npair", "proxy_anchor", "osm_caa"):
        loss = pe.build(name)
        x, y = pe.loss_batch(1)
        for dtype in pe.DTYPES:
            xh = x.to(dtype).requires_grad_(True)
            x32 = xh.detach().float().requires_grad_(True)
            loss(xh, y).backward()
            loss(x32, y).backward()
            assert xh.grad.dtype == dtype
            assert torch.equal(xh.grad, x32.grad.to(dtype)), (name, dtype)


def test_the_table_covers_every_case():
    rows = precision.load_table()
    keys = {(r["kind"], r["name"], r["path"], r["dtype"], r["quantity"], r["reference"])
            for r in rows}
    want = set()
    for name in losses.available():
        for path in pe.loss_paths(name):
            want |= {("loss", name, path, d, q, r) for d in ("bf16", "fp16")
                     for q in ("value", "grad", "grad_rounded") for r in pe.REFERENCES}
    for name in miners.available():
        qs = ("mask", "prob") if name == "distance_weighted" else ("mask",)
        want |= {("miner", name, "-", d, q, r) for d in ("bf16", "fp16") for q in qs
                 for r in pe.REFERENCES}
    want |= {("metric", k, p, d, "metric", r) for k in pe.METRIC_KEYS
             for p in ("self", "gallery") for d in ("bf16", "fp16") for r in pe.REFERENCES}
    assert keys == want
    assert all(r["max_error"] >= 0 and r["batches"] == str(len(pe.SEEDS)) for r in rows)
    assert {r["torch"] for r in rows} and all(len(r["measured"]) == 10 for r in rows)


def test_tolerance_is_a_multiple_of_the_measured_error_with_a_floor():
    rows = {(r["kind"], r["name"], r["path"], r["dtype"], r["quantity"], r["reference"]):
            r["max_error"] for r in precision.load_table()}
    key = ("loss", "triplet", "tiled", "bf16", "value", "fp64")
    assert precision.tolerance(*key) == max(precision.FACTOR * rows[key],
                                            precision.FLOORS[("value", "fp64")])
    key = ("loss", "contrastive", "dense", "fp16", "grad", "fp32")
    assert precision.tolerance(*key) >= precision.UNIT_ROUNDOFF[torch.float16]
    assert precision.tolerance(*key) >= precision.FACTOR * rows[key]
    with pytest.raises(ValueError, match=r"benchmarks/precision\.py"):
        precision.tolerance("loss", "no_such_loss", "dense", "bf16", "value", "fp32")
    with pytest.raises(ValueError, match="precision name"):
        precision.dtype_name(torch.int8)


def test_promote_and_compute_dtype():
    for dtype in (torch.float16, torch.bfloat16):
        assert precision.compute_dtype(dtype) == torch.float32
        t = torch.ones(3, dtype=dtype)
        assert precision.promote(t).dtype == torch.float32
    for dtype in (torch.float32, torch.float64):
        t = torch.ones(3, dtype=dtype)
        assert precision.compute_dtype(dtype) == dtype and precision.promote(t) is t
    assert precision.promote(None) is None


def test_the_docs_table_is_the_measured_table():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "precision.md").read_text()
    assert pe.with_docs_table(text, pe.markdown_table(precision.load_table())) == text
    assert pe.markdown_table(precision.load_table()).count("\n| `") == (
        len(losses.available()) + len(miners.available()) + len(pe.METRIC_KEYS))


@pytest.mark.parametrize("name", NAMES)
def test_pair_weights_of_half_input_are_those_of_float32(name):
    """The weight view (dmlkit.weights) builds its batch without the loss's forward: its S
    and W on half input are float32's on the rounded input, bit for bit."""
    from dmlkit import weights

    loss = pe.build(name)
    x, y = pe.loss_batch(2)
    for dtype in pe.DTYPES:
        xh = x.to(dtype)
        torch.manual_seed(0)
        S, W = weights.pair_weights(loss, xh, y)
        torch.manual_seed(0)
        S32, W32 = weights.pair_weights(loss, xh.float(), y)
        assert S.dtype == W.dtype == torch.float32
        assert torch.equal(S, S32) and torch.equal(W, W32), (name, dtype)


@pytest.mark.parametrize("name", ["contrastive", "triplet", "multi_similarity"])
def test_cross_batch_memory_of_half_input_is_that_of_float32(name):
    from dmlkit.memory import CrossBatchMemory

    for dtype in pe.DTYPES:
        runs = []
        for as_float in (False, True):
            mem = CrossBatchMemory(pe.build(name), pe.D, memory_size=40)
            out = []
            for seed in range(3):
                x, y = pe.loss_batch(seed)
                leaf = x.to(dtype)
                leaf = (leaf.float() if as_float else leaf).requires_grad_(True)
                with torch.autocast("cpu", dtype=dtype):
                    value = mem(leaf, y)
                value.backward()
                out.append((value.detach(), leaf.grad.to(dtype)))
            runs.append(out)
        for (v, g), (v32, g32) in zip(*runs):
            assert v.dtype == torch.float32
            assert torch.equal(v, v32) and torch.equal(g, g32), (name, dtype)
