"""The training engine: one loop, written as a short sequence of stage calls.

:meth:`Trainer.run` is the whole loop::

    start()                                   resume, the untrained network's evaluation
    for epoch in epochs():
        start_epoch(epoch)                    seeds, train mode
        for batch in batches(epoch):
            train_step(batch)                 prepare_batch -> zero_grad -> compute_loss
                                              -> backward -> step_optimizers -> after_step
        end_epoch(epoch)                      epoch_row -> evaluate -> log -> save_checkpoint
    return finish()                           best model, final test, the result object

Every variant of training in dmlkit is a subclass that overrides some stages:
:func:`dmlkit.train.fit` (image data, mixed precision, checkpoints, validation-based model
selection), :func:`dmlkit.train.fit_head` (an embedding head on cached features),
:func:`dmlkit.train.train_embedding` (the notebooks' small runs, logged per step) and
:class:`dmlkit.adversarial.AdversarialTrainer` (DAML / DAML+SP: it overrides the loss
computation and the optimiser steps). Hooks (``hooks=[fn]``, ``fn(trainer, event, **info)``)
see ``"step"`` (after every optimiser step, with the step's logged ``values``) and
``"end_epoch"`` (with the epoch's history ``row``).

>>> import torch
>>> torch.manual_seed(0) and None
>>> x, y = torch.randn(12, 3), torch.arange(12) % 3
>>> class Tiny(Trainer):                      # full-batch least squares on class ids
...     def epochs(self): return range(1, 4)
...     def batches(self, epoch): yield x, y.float()[:, None]
>>> model = torch.nn.Linear(3, 1)
>>> seen = []
>>> trainer = Tiny(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
...                hooks=[lambda tr, event, **info: seen.append(event)])
>>> rows = trainer.run()
>>> [row["epoch"] for row in rows], rows[-1]["loss"] < rows[0]["loss"]
([1, 2, 3], True)
>>> seen[:3]
['step', 'end_epoch', 'step']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Trainer"]


class Trainer:
    """A training loop of stage methods (see the module docstring); subclasses override stages.

    model: the network trained (``model(x)`` gives ``(B, D)`` embeddings); loss: called as
    ``loss(embeddings, labels)``; optimizer: steps every parameter being trained. scaler: an
    optional :class:`torch.amp.GradScaler` (mixed precision); grad_clip: max gradient norm of
    the model's parameters (None: no clipping).
    """

    def __init__(self, model: nn.Module, loss: nn.Module,
                 optimizer: torch.optim.Optimizer | None, *,
                 scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None,
                 hooks: Sequence[Callable[..., None]] = ()):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.scaler, self.grad_clip = scaler, grad_clip
        self.hooks = list(hooks)
        self.history: list[dict] = []
        self.epoch = 0
        self.sums: dict[str, float] = {}
        self.steps = 0

    # ------------------------------------------------------------------------- the loop
    def run(self) -> Any:
        """Train; returns :meth:`finish`'s result."""
        self.start()
        for epoch in self.epochs():
            self.start_epoch(epoch)
            for batch in self.batches(epoch):
                self.train_step(batch)
            self.end_epoch(epoch)
        return self.finish()

    def train_step(self, batch) -> dict[str, float]:
        """One optimiser step on ``batch``; returns the step's logged values (floats)."""
        inputs = self.prepare_batch(batch)
        self.zero_grad()
        terms = self.compute_loss(*inputs)
        if terms:  # None / {}: nothing to learn from this batch (no step)
            self.backward(terms)
            self.step_optimizers()
        return self.after_step(inputs, terms or {})

    # ------------------------------------------------------------------------- stages
    def start(self) -> None:
        """Before the first epoch (resume, initial evaluation)."""

    def epochs(self) -> Iterable[int]:
        """The epoch numbers to run."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Reset the epoch's running sums and put the trained modules in train mode."""
        self.epoch, self.sums, self.steps = epoch, {}, 0
        self.train_mode()

    def train_mode(self) -> None:
        self.model.train()

    def batches(self, epoch: int) -> Iterable:
        """The epoch's batches, each as :meth:`prepare_batch` takes it."""
        raise NotImplementedError

    def prepare_batch(self, batch) -> tuple:
        """``batch`` -> the arguments of :meth:`compute_loss` (e.g. moved to the device)."""
        return tuple(batch)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Forward pass and loss: a dict of 0-dim tensors, ``"loss"`` being minimised."""
        return {"loss": self.loss(self.model(x), y)}

    def backward(self, terms: dict[str, torch.Tensor]) -> None:
        """Gradients of ``terms["loss"]`` (scaled under mixed precision; clipped)."""
        value = terms["loss"]
        (self.scaler.scale(value) if self.scaler is not None else value).backward()
        if self.grad_clip:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)

    def step_optimizers(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def after_step(self, inputs: tuple, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """Add the step's values to the epoch's sums; returns them as floats."""
        values = {k: float(v.detach()) for k, v in terms.items()}
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.call_hooks("step", values=values)
        return values

    def end_epoch(self, epoch: int) -> None:
        """The epoch's history row: means of the step values, evaluation when due, logging
        and checkpoint."""
        row = self.epoch_row(epoch)
        if self.should_evaluate(epoch):
            self.evaluate(epoch, row)
        self.history.append(row)
        self.log(row)
        self.save_checkpoint(epoch)
        self.call_hooks("end_epoch", row=row)

    def epoch_row(self, epoch: int) -> dict:
        return {"epoch": epoch, **{k: v / max(self.steps, 1) for k, v in self.sums.items()}}

    def should_evaluate(self, epoch: int) -> bool:
        return False

    def evaluate(self, epoch: int, row: dict) -> None:
        """Add evaluation metrics to ``row``."""

    def log(self, row: dict) -> None:
        """Report the epoch (print, progress bar)."""

    def save_checkpoint(self, epoch: int) -> None:
        """Write the run's state to disk."""

    def finish(self) -> Any:
        """After the last epoch: the result of :meth:`run`."""
        return self.history

    def call_hooks(self, event: str, **info) -> None:
        for hook in self.hooks:
            hook(self, event, **info)
