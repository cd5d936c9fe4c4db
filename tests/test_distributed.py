"""dmlkit.distributed with 2 gloo processes on 127.0.0.1 (spawned here, bounded in time): the
loss value on every rank equals the single-process loss of the concatenated batch, and the
DDP-averaged gradients (and the proxies' gradients) equal the single-process gradients in
float64, for multi-similarity, contrastive, triplet and Proxy-Anchor, gathered and with local
queries; the cross-batch memory is identical on every rank and equal to a single process's;
a 2-process ``fit`` equals a single-process run on the same global batches; the
distributed P x K sampler."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dmlkit import losses
from dmlkit.distributed import DistributedLoss, DistributedPKSampler, gather_batch
from dmlkit.memory import CrossBatchMemory

WORLD, N, D_IN, D, C = 2, 16, 6, 5, 4
LOSSES = {
    "multi_similarity": {},
    "contrastive": {"margin": 0.5, "power": 1, "reduction": "mean_nonzero"},
    "triplet": {"margin": 0.1},
    "proxy_anchor": {"num_classes": C, "embedding_dim": D, "alpha": 8.0},
}
TIMEOUT = 120
#: fork is several times faster than spawn (no re-import of torch in the children); a parent
#: that initialised CUDA must spawn
START_METHOD = "spawn" if torch.cuda.is_initialized() or os.name != "posix" else "fork"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, fn, port, out, init):
    torch.set_num_threads(1)
    if init:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=WORLD)
    else:      # as torchrun sets it: dmlkit.distributed.init_from_env initialises the group
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        torch.save(fn(rank), os.path.join(out, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_two(fn, out, init=True) -> list:
    """Run ``fn(rank)`` in 2 spawned processes; returns what each returned."""
    ctx = mp.start_processes(_entry, args=(fn, _free_port(), str(out), init), nprocs=WORLD,
                             join=False, start_method=START_METHOD)
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=0.2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2-process run did not finish in {TIMEOUT} s")
    return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False)
            for r in range(WORLD)]


# ----------------------------------------------------------------------------- the data
def global_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    y[1] = y[0]
    return z, y


def build(name):
    torch.manual_seed(1)
    model = torch.nn.Linear(D_IN, D).double()
    loss = losses.build(name, **LOSSES[name]).double()
    return model, loss


def grads(model, loss):
    out = {k: p.grad.clone() for k, p in model.named_parameters()}
    out.update({f"loss.{k}": p.grad.clone() for k, p in loss.named_parameters()})
    return out


def single_process(name):
    model, loss = build(name)
    z, y = global_batch()
    value = loss(model(z), y)
    value.backward()
    return value.item(), grads(model, loss)


def loss_worker(rank):
    z, y = global_batch()
    part = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
    results = {}
    for name in LOSSES:
        for local in (False, True):
            model, loss = build(name)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            value = DistributedLoss(loss, local_queries=local)(ddp(z[part]), y[part])
            value.backward()
            results[name, local] = (value.item(), grads(model, loss))
    # the cross-batch memory on the gathered batches: identical on every rank
    xbm = DistributedLoss(CrossBatchMemory(losses.build("multi_similarity"), D, 20))
    values = []
    for step in range(4):
        zz, yy = global_batch(10 + step)
        values.append(xbm(zz[part, :D], yy[part]).item())
    results["xbm"] = (values, xbm.loss.embeddings.clone(), xbm.loss.labels.clone())
    # unequal local sizes: gathered in rank order
    x = torch.arange(3.0 + rank).reshape(-1, 1)
    results["uneven"] = gather_batch(x, torch.arange(len(x)))[0].flatten().tolist()
    return results


def test_loss_and_ddp_gradients_equal_the_single_process_ones(tmp_path):
    ranks = run_two(loss_worker, tmp_path)
    for name in LOSSES:
        value, expected = single_process(name)
        assert value > 0
        for local in (False, True):
            for r in range(WORLD):
                got_value, got = ranks[r][name, local]
                assert got_value == pytest.approx(value, rel=1e-12, abs=1e-12), (name, local, r)
                assert got.keys() == expected.keys()
                for k in expected:
                    torch.testing.assert_close(got[k], expected[k], atol=1e-9, rtol=1e-9,
                                               msg=f"{name} local={local} rank {r} {k}")
    # memory: the same on both ranks and as a single process on the global batches
    single = CrossBatchMemory(losses.build("multi_similarity"), D, 20)
    values = [single(*(lambda zz, yy: (zz[:, :D], yy))(*global_batch(10 + s))).item()
              for s in range(4)]
    for r in range(WORLD):
        got_values, mem, labels = ranks[r]["xbm"]
        assert got_values == pytest.approx(values, rel=1e-12)
        assert torch.equal(mem, single.embeddings) and torch.equal(labels, single.labels)
    assert ranks[0]["uneven"] == ranks[1]["uneven"] == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0]


# ----------------------------------------------------------------------------- fit
FIT = {"dataset": "glyphs", "loss": "multi_similarity", "backbone": "small_cnn",
       "embedding_dim": 8, "epochs": 2, "iterations_per_epoch": 2, "K": 2, "lr": 0.05,
       "optimizer": "sgd",
       "val_fraction": 0.0, "num_workers": 0, "progress": False, "verbose": False,
       "eval_every": 0, "device": "cpu", "freeze_bn": True, "metrics": ("recall",),
       "final_metrics": ("recall",), "select_metric": "recall@1", "seed": 3,
       "dataset_kwargs": {"num_classes": 12, "images_per_class": 4, "size": 16}}


def fit_worker(rank):
    from dmlkit.train.config import resolve_config
    from dmlkit.train.fitting import FitTrainer

    trainer = FitTrainer(resolve_config(None, {**FIT, "P": 2,
                                               "out_dir": os.environ["DMLKIT_TEST_OUT"]}))
    result = trainer.run()
    return {"write": trainer.write, "state": result.model.state_dict(),
            "loss": result.history["loss"].tolist(), "test": result.test_metrics,
            "world": trainer.world}


def test_two_process_fit_equals_a_single_process_run(tmp_path):
    from dmlkit.train import fit

    os.environ["DMLKIT_TEST_OUT"] = str(tmp_path / "run")
    try:
        ranks = run_two(fit_worker, tmp_path, init=False)
    finally:
        del os.environ["DMLKIT_TEST_OUT"]
    single = fit(**FIT, P=4, save_checkpoints=False)
    assert [r["world"] for r in ranks] == [2, 2] and [r["write"] for r in ranks] == [True, False]
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "history.csv").exists()
    for r in ranks:
        assert r["loss"] == pytest.approx(single.history["loss"].tolist(), rel=1e-5)
        assert r["test"] == pytest.approx(single.test_metrics, abs=1e-6)
        state = single.model.state_dict()
        for k, v in r["state"].items():
            torch.testing.assert_close(v, state[k], atol=1e-6, rtol=1e-5, msg=k)
    moved = fit(**{**FIT, "epochs": 1, "iterations_per_epoch": 1}, P=4, save_checkpoints=False)
    assert max(float((v - moved.model.state_dict()[k]).abs().max())
               for k, v in single.model.state_dict().items() if v.is_floating_point()) > 1e-4


# ----------------------------------------------------------------------------- the sampler
def test_distributed_sampler_gives_distinct_classes_and_the_global_batch():
    from dmlkit.data import PKSampler

    labels = np.repeat(np.arange(10), 5)
    parts = [DistributedPKSampler(labels, P=2, K=3, seed=4, rank=r, world_size=WORLD)
             for r in range(WORLD)]
    whole = PKSampler(labels, P=4, K=3, seed=4)
    for epoch in range(2):
        for s in (*parts, whole):
            s.set_epoch(epoch)
        for a, b, g in zip(*parts, whole):
            assert len(a) == len(b) == 6 and a + b == g
            assert not set(labels[a]) & set(labels[b])
    assert parts[0].batch_size == 6 and len(parts[0]) == len(whole)
    with pytest.raises(ValueError, match="rank"):
        DistributedPKSampler(labels, P=2, K=3, rank=2, world_size=2)


def test_single_process_is_the_plain_loss():
    loss = losses.build("triplet")
    z, y = global_batch()
    assert DistributedLoss(loss)(z, y).item() == loss(z, y).item()
    with pytest.raises(ValueError, match="PairLoss"):
        DistributedLoss(torch.nn.MSELoss(), local_queries=True)
