"""Batches of a training epoch: ``n`` P x K batches, however long the sampler's own pass.

>>> from dmlkit.data import PKSampler
>>> batches = EpochBatches(PKSampler([0, 0, 1, 1, 2, 2], P=2, K=2), n=5)
>>> batches.set_epoch(1)
>>> [len(b) for b in batches]        # the sampler is restarted when it runs out
[4, 4, 4, 4, 4]
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["EpochBatches"]


class EpochBatches:
    """Batch sampler giving ``n`` P x K batches for an epoch, restarting the wrapped
    :class:`dmlkit.data.PKSampler` (with a new epoch number) when it runs out; ``n=None``: one
    pass of the sampler."""

    def __init__(self, sampler, n: int | None):
        self.sampler, self.n, self.epoch = sampler, n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n if self.n is not None else len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        made, cycle = 0, 0
        while True:
            self.sampler.set_epoch(self.epoch * 1_000_003 + cycle)
            empty = True
            for batch in self.sampler:
                empty = False
                yield batch
                made += 1
                if self.n is None or made >= self.n:
                    return
            if empty:
                raise ValueError("the P x K sampler produced no batch: too few classes with "
                                 "at least K images for P classes per batch")
            cycle += 1
