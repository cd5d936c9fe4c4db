"""Training throughput of :func:`dmlkit.train.fit` (the real training loop, no evaluation).

CPU: the small CNN on glyphs (32 px, 16 classes x 4 images), iterations/s, images/s and the
share of the step time spent waiting for data, with torch's default thread count and with 1
thread. CUDA (skipped with a message when there is none): ResNet-50 at 224 px on synthetic
images (random weights, no download), 16 x 4 batches, fp32 vs bf16 autocast + channels-last:
images/s, peak GPU memory and the data-loading share.

    python benchmarks/train.py [--iterations 60] [--cuda-iterations 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dmlkit import data
from dmlkit.data.base import TensorImages
from dmlkit.train import fit


def _run(dataset, **kw):
    """One epoch of ``iterations`` steps (after a warm-up run); returns the history row."""
    base = {"dataset": {"train": dataset}, "loss": "multi_similarity", "epochs": 1,
            "val_fraction": 0.0, "eval_every": 0, "progress": False, "verbose": False,
            "save_checkpoints": False}
    base.update(kw)
    warm = dict(base, iterations_per_epoch=min(5, base["iterations_per_epoch"]))
    fit(**warm)
    t0 = time.perf_counter()
    res = fit(**base)
    row = res.history.iloc[-1]
    return row, time.perf_counter() - t0


def cpu_benchmark(iterations: int) -> None:
    glyphs = data.load_dataset("glyphs", "train")
    print(f"CPU: small_cnn on glyphs {tuple(glyphs[0][0].shape)}, batches of 16 x 4, "
          f"{iterations} iterations per measurement")
    default_threads = torch.get_num_threads()
    rows = []
    for threads, workers in [(default_threads, 0), (1, 0), (default_threads, 2)]:
        torch.set_num_threads(threads)
        row, _ = _run(glyphs, backbone="small_cnn", embedding_dim=64, P=16, K=4,
                      iterations_per_epoch=iterations, device="cpu", num_workers=workers)
        its = iterations / row["epoch_time"]
        rows.append((threads, workers, its, its * 64, row["data_share"]))
    torch.set_num_threads(default_threads)
    print(f"{'threads':>8} {'workers':>8} {'it/s':>8} {'images/s':>9} {'data share':>11}")
    for t, w, its, ips, share in rows:
        print(f"{t:>8} {w:>8} {its:>8.2f} {ips:>9.0f} {share:>10.1%}")


def cuda_benchmark(iterations: int) -> None:
    if not torch.cuda.is_available():
        print("CUDA: skipped (no CUDA device); run on a GPU machine for ResNet-50 images/s")
        return
    name = torch.cuda.get_device_name()
    n_classes, per_class = 64, 8
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n_classes * per_class, 3, 224, 224, generator=g)
    labels = np.repeat(np.arange(n_classes), per_class)
    synthetic = TensorImages(images, labels, split="train")
    print(f"CUDA ({name}): resnet50, 224 px synthetic images, batches of 16 x 4, "
          f"{iterations} iterations, pinned memory, 4 workers")
    print(f"{'amp':>6} {'channels_last':>14} {'images/s':>9} {'peak GiB':>9} {'data share':>11}")
    results = {}
    for amp, cl in [(None, False), ("bf16", False), ("bf16", True)]:
        torch.cuda.reset_peak_memory_stats()
        row, _ = _run(synthetic, backbone="resnet50", pretrained=False, embedding_dim=512,
                      P=16, K=4, iterations_per_epoch=iterations, device="cuda", amp=amp,
                      channels_last=cl, num_workers=4)
        ips = iterations * 64 / row["epoch_time"]
        peak = torch.cuda.max_memory_allocated() / 2**30
        results[(amp, cl)] = ips
        print(f"{amp or 'fp32':>6} {cl!s:>14} {ips:>9.0f} {peak:>9.2f} "
              f"{row['data_share']:>10.1%}")
    print(f"bf16 + channels-last vs fp32: {results[('bf16', True)] / results[(None, False)]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--cuda-iterations", type=int, default=40)
    args = parser.parse_args()
    cpu_benchmark(args.iterations)
    cuda_benchmark(args.cuda_iterations)


if __name__ == "__main__":
    main()
