"""Training throughput and checkpoint resumption on the device.

Throughput: :func:`dmlkit.train.fit` (mixed precision ``amp="auto"``: bf16 on CUDA; the
ImageNet backbones channels-last) against a hand-written bare PyTorch loop of the same
model, loss (multi-similarity), optimiser (Adam), P x K batches and data loader, in the same
process, alternating (fit, bare, bare, fit on CUDA). Each measurement is the second of two
epochs of ``iterations`` steps (the first warms up), timed as ``fit`` times an epoch
(``history.epoch_time``: from the loader's first batch to a synchronised end). The bare loop
keeps its loss on the device (no per-step synchronisation): it is the upper bound ``fit``
is held to (goal: at least 90 % of its images per second). Models: ResNet-50 at 224 px on
synthetic images (random weights, nothing downloaded) and the small CNN on glyphs.

Resumption: a run of two epochs writes ``last.pt`` after each; the checkpoint of epoch 1 is
copied, a second run resumes from it, and its first step's loss must equal the
uninterrupted run's loss at that step.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import torch

__all__ = ["GOAL", "bare_loop", "fit_epoch", "loader_workers", "resume_check", "run",
           "synthetic_images"]

#: fit's images per second as a share of the bare loop's (the issue's goal, on CUDA)
GOAL = 0.9
_FIT = dict(loss="multi_similarity", epochs=2, val_fraction=0.0, eval_every=0,
            progress=False, verbose=False, save_checkpoints=False, lr=1e-4, amp="auto",
            optimizer="adam", seed=0)


def synthetic_images(classes: int, per_class: int, size: int, seed: int = 0):
    """An in-memory data set of uniform-noise RGB images, ``per_class`` per class."""
    from ..data.base import TensorImages

    g = torch.Generator().manual_seed(seed)
    images = torch.rand(classes * per_class, 3, size, size, generator=g)
    return TensorImages(images, np.repeat(np.arange(classes), per_class), split="train")


def fit_epoch(ds, device, backbone: str, dim: int, P: int, K: int, iterations: int,
              workers: int) -> float:
    """Images per second of ``fit``'s second epoch."""
    from ..train import fit

    res = fit(dataset={"train": ds}, backbone=backbone, pretrained=False, embedding_dim=dim,
              P=P, K=K, iterations_per_epoch=iterations, device=str(device),
              num_workers=workers, **_FIT)
    return iterations * P * K / float(res.history["epoch_time"].iloc[-1])


def bare_loop(ds, device, backbone: str, dim: int, P: int, K: int, iterations: int,
              workers: int) -> float:
    """Images per second of the second epoch of a plain PyTorch loop (what ``fit`` does,
    without its engine: no per-step synchronisation, logging or checks)."""
    from torch.utils.data import DataLoader

    from .. import losses, models
    from ..data import PKSampler
    from ..train import EpochBatches
    from ..train.device import amp_dtype

    torch.manual_seed(0)
    in_ch = int(ds[0][0].shape[0])
    model = models.build_model(backbone, dim, pretrained=False, in_channels=in_ch).to(device)
    channels_last = device.type == "cuda" and backbone != "small_cnn"     # as fit's default
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = losses.build("multi_similarity").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=_FIT["lr"])
    amp = amp_dtype("auto", device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    batches = EpochBatches(PKSampler(np.asarray(ds.labels), P, K, seed=0), iterations)
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers,
                        pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers else None)

    def epoch() -> float:
        model.train()
        total = torch.zeros((), device=device)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp or torch.float32,
                                enabled=amp is not None):
                emb = model(x)
            loss = criterion(emb.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += loss.detach()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        if not torch.isfinite(total):
            raise FloatingPointError(f"the bare loop's loss became {float(total)}")
        return seconds

    epoch()                                   # warm-up, as fit's first epoch
    return iterations * P * K / epoch()


def _compare(ctx, sec, label: str, ds, backbone: str, dim: int, P: int, K: int,
             iterations: int, workers: int, rounds: int) -> None:
    args = (ds, ctx.device, backbone, dim, P, K, iterations, workers)
    got = {"fit": [], "bare": []}
    order = ["fit", "bare", "bare", "fit"] if rounds > 1 else ["fit", "bare"]
    peak = None
    for which in order:
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ips = (fit_epoch if which == "fit" else bare_loop)(*args)
        got[which].append(ips)
        if ctx.device.type == "cuda":
            peak = max(peak or 0.0, torch.cuda.max_memory_allocated() / 2**30)
        ctx.log(f"  {label} {which}: {ips:.0f} images/s")
    fit_ips, bare_ips = (float(np.mean(got[k])) for k in ("fit", "bare"))
    ratio = fit_ips / bare_ips
    sec.row("images per second (fit vs the bare loop)", model=label, batch=f"{P} x {K}",
            iterations=iterations, workers=workers, **{"fit images/s": fit_ips,
                                                        "bare images/s": bare_ips,
                                                        "fit / bare": ratio,
                                                        "runs": len(order),
                                                        "peak GiB": peak})
    if ctx.device.type == "cuda":
        sec.check(f"{label}: fit >= {GOAL:.0%} of the bare loop's images/s", ratio, GOAL,
                  f"{fit_ips:.0f} vs {bare_ips:.0f} images/s", at_least=True)
    else:
        sec.skip_check(f"{label}: fit >= {GOAL:.0%} of the bare loop's images/s",
                       f"no CUDA (measured {ratio:.2f} at toy size on the CPU)")


def resume_check(ctx, sec) -> None:
    """A checkpoint written on the device and resumed gives the uninterrupted next-step loss."""
    from ..train.config import resolve_config
    from ..train.fitting import FitTrainer

    base = ctx.out / "checkpoint"
    shutil.rmtree(base, ignore_errors=True)
    snapshot = base / "after_epoch_1.pt"
    kw = dict(dataset="glyphs", backbone="small_cnn", embedding_dim=32,
              dataset_kwargs=({"num_classes": 8, "images_per_class": 6, "size": 16} if ctx.tiny
                              else {"num_classes": 24, "images_per_class": 12}),
              P=4, K=3, iterations_per_epoch=2 if ctx.tiny else 8, epochs=2,
              device=str(ctx.device), val_fraction=0.0, eval_every=0, progress=False,
              verbose=False, save_checkpoints=True, metrics=("recall",),
              final_metrics=("recall",), select_metric="recall@1", amp="auto", seed=0)

    def train(out_dir, resume: bool) -> list:
        steps = []

        def hook(trainer, event, **info):
            if event == "step":
                steps.append((trainer.epoch, info["values"]["loss"]))
            elif event == "end_epoch" and trainer.epoch == 1 and not resume:
                shutil.copyfile(trainer.paths["last"], snapshot)

        trainer = FitTrainer(resolve_config(None, {**kw, "out_dir": str(out_dir),
                                                   "resume": resume}))
        trainer.hooks.append(hook)
        trainer.run()
        return steps

    straight = train(base / "uninterrupted", resume=False)
    (base / "resumed").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(snapshot, base / "resumed" / "last.pt")
    resumed = train(base / "resumed", resume=True)
    want = [loss for epoch, loss in straight if epoch == 2]
    got = [loss for epoch, loss in resumed]
    if not want or len(got) != len(want) or resumed[0][0] != 2:
        raise RuntimeError(f"the resumed run did not continue at epoch 2: {resumed}")
    first = abs(got[0] - want[0])
    sec.row("checkpoint resumed (epoch 2)", step=1, uninterrupted=want[0], resumed=got[0],
            **{"abs diff": first})
    sec.row("checkpoint resumed (epoch 2)", step=f"all {len(got)}", uninterrupted=None,
            resumed=None, **{"abs diff": max(abs(a - b) for a, b in zip(got, want))})
    tol = 1e-5 * max(1.0, abs(want[0]))
    sec.check(f"checkpoint written on {ctx.device.type} and resumed: next-step loss equal",
              first, tol, f"{got[0]:.6f} vs {want[0]:.6f}")
    ctx.log(f"  resume: next-step loss {got[0]:.6f} vs {want[0]:.6f}")


def loader_workers(most: int = 4) -> int:
    """The ResNet-50 loader's worker processes: ``most``, or fewer where fewer CPUs are
    usable (PyTorch warns when a loader asks for more workers than that)."""
    from ..train.datasets import usable_cpus

    return min(most, usable_cpus())


def run(ctx, sec) -> None:
    """The training section (see the module docstring)."""
    from .. import data

    cuda = ctx.device.type == "cuda"
    if ctx.tiny:
        big = dict(backbone="small_cnn", size=16, classes=4, per_class=4, P=2, K=2,
                   iterations=2, workers=0)
        glyph = dict(kwargs={"num_classes": 6, "images_per_class": 4, "size": 16}, P=3, K=2,
                     iterations=3)
        rounds = 1
    else:
        big = dict(backbone="resnet50", size=224, classes=32, per_class=8, P=16, K=4,
                   iterations=50, workers=loader_workers())
        glyph = dict(kwargs={"num_classes": 64, "images_per_class": 16}, P=16, K=4,
                     iterations=150)
        rounds = 2 if cuda else 1
    ds = synthetic_images(big["classes"], big["per_class"], big["size"])
    _compare(ctx, sec, f"{big['backbone']} {big['size']} px synthetic", ds, big["backbone"],
             512 if not ctx.tiny else 32, big["P"], big["K"], big["iterations"],
             big["workers"], rounds)
    del ds
    glyphs = data.load_dataset("glyphs", "train", **glyph["kwargs"])
    _compare(ctx, sec, "small_cnn glyphs", glyphs, "small_cnn", 64, glyph["P"], glyph["K"],
             glyph["iterations"], 0, rounds)
    resume_check(ctx, sec)
    sec.note("amp='auto' (bf16 on CUDA where supported, none on the CPU); Adam lr 1e-4; "
             "images/s of the second of two epochs; fit / bare: the means over the runs"
             + ("; --tiny: the small CNN on 16 px noise stands in for ResNet-50" if ctx.tiny
                else ""))
