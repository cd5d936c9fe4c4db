"""Several GPUs: the loss of the global batch under W processes (NCCL, one GPU each) equals a
single process's loss of the concatenated batch, and the gradients agree
(:class:`dmlkit.distributed.DistributedLoss`, gathered and with local queries), in float64.

Each process's embedding gradient is W times its part of the exact gradient (so that DDP's
average is exact: :mod:`dmlkit.distributed`); it is divided by W before the comparison.
With one GPU the section is skipped; on the CPU (``--device cpu``) two gloo processes stand
in, so that the code runs everywhere.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time

import torch

__all__ = ["LOSSES", "TOL", "run"]

LOSSES = {"multi_similarity": {}, "triplet": {"margin": 0.1},
          "proxy_anchor": {"num_classes": 4, "embedding_dim": 5, "alpha": 8.0}}
TOL = 1e-10
_PER_RANK, _D, _C = 8, 5, 4


def _global_batch(world: int):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(_PER_RANK * world, _D, generator=g, dtype=torch.float64)
    y = torch.arange(_PER_RANK * world) % _C
    return z, y


def _values(x, y, name: str, device, local_queries: bool = False) -> dict:
    """Value, embedding gradient and loss-parameter gradients (CPU float64)."""
    from .. import losses
    from ..distributed import DistributedLoss

    torch.manual_seed(1)
    loss = losses.build(name, **LOSSES[name]).double().to(device)
    x = x.detach().clone().to(device).requires_grad_(True)
    value = DistributedLoss(loss, local_queries=local_queries)(x, y.to(device))
    value.backward()
    return {"value": float(value.detach()), "grad": x.grad.cpu(),
            "params": [p.grad.cpu() for p in loss.parameters() if p.grad is not None]}


def _rank(rank: int, world: int, backend: str, port: int, out: str) -> None:
    """One process: the global batch's loss from this rank's rows (saved to ``out``)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        z, y = _global_batch(world)
        rows = slice(rank * _PER_RANK, (rank + 1) * _PER_RANK)
        got = {(name, lq): _values(z[rows], y[rows], name, device, lq)
               for name in LOSSES for lq in (False, True)}
        torch.save(got, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(world: int, backend: str, timeout: float) -> list[dict]:
    """Run :func:`_rank` in ``world`` processes; what each saved."""
    import torch.multiprocessing as mp

    method = "spawn" if backend == "nccl" or torch.cuda.is_initialized() else "fork"
    with tempfile.TemporaryDirectory() as out:
        ctx = mp.start_processes(_rank, args=(world, backend, _free_port(), out), nprocs=world,
                                 join=False, start_method=method)
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=0.2):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"{world} {backend} processes did not finish in "
                                   f"{timeout:.0f} s")
        return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False)
                for r in range(world)]


def run(ctx, sec) -> None:
    from .report import Skip

    if ctx.device.type == "cuda":
        world = min(torch.cuda.device_count(), 8)
        if world < 2:
            raise Skip("one GPU visible: the NCCL check needs at least 2")
        backend = "nccl"
    else:
        world, backend = 2, "gloo"
        sec.note("no CUDA: 2 gloo processes on the CPU stand in for NCCL (same code)")
    ctx.budget.need(20 if ctx.tiny else 60, f"{world} {backend} processes")
    ranks = run_processes(world, backend, timeout=max(30.0, min(180.0, ctx.budget.left())))
    z, y = _global_batch(world)
    worst = {"value": 0.0, "grad": 0.0, "params": 0.0}
    for name in LOSSES:
        ref = _values(z, y, name, torch.device("cpu"))
        for lq in (False, True):
            got = [r[(name, lq)] for r in ranks]
            v = max(abs(g["value"] - ref["value"]) for g in got)
            grad = float((torch.cat([g["grad"] for g in got]) / world - ref["grad"]).abs().max())
            par = max((float((a - b).abs().max()) for g in got
                       for a, b in zip(g["params"], ref["params"])), default=0.0)
            worst = {"value": max(worst["value"], v), "grad": max(worst["grad"], grad),
                     "params": max(worst["params"], par)}
            sec.row(f"{world} {backend} processes vs one (float64, max |diff|)", loss=name,
                    local_queries=lq, value=v, **{"embedding grad": grad, "loss params": par})
    ctx.log(f"  {world} {backend} processes: max |diff| value {worst['value']:.1e}, "
            f"grad {worst['grad']:.1e}")
    sec.check(f"{backend} global-batch loss == one process (every rank)", worst["value"], TOL)
    sec.check(f"{backend} gradients (/ W) == one process", max(worst["grad"], worst["params"]),
              TOL)
