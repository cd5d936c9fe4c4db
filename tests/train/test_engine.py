"""dmlkit.train.engine: the order of the stages, skipped steps, hooks, clipping and scaling."""

from __future__ import annotations

import pytest
import torch

from dmlkit.train import Trainer


class _Recording(Trainer):
    """Two epochs of two batches; every stage call is logged."""

    def __init__(self, *args, skip_batch=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.skip_batch = [], skip_batch
        g = torch.Generator().manual_seed(0)
        self.data = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g))
                     for _ in range(2)]

    def epochs(self):
        return range(1, 3)

    def batches(self, epoch):
        yield from self.data

    def compute_loss(self, x, y):
        self.calls.append("compute_loss")
        if self.skip_batch is not None and torch.equal(x, self.data[self.skip_batch][0]):
            return None
        return {"loss": self.loss(self.model(x), y)}

    def zero_grad(self):
        self.calls.append("zero_grad")
        super().zero_grad()

    def backward(self, terms):
        self.calls.append("backward")
        super().backward(terms)

    def step_optimizers(self):
        self.calls.append("step_optimizers")
        super().step_optimizers()

    def start(self):
        self.calls.append("start")

    def end_epoch(self, epoch):
        self.calls.append(f"end_epoch {epoch}")
        super().end_epoch(epoch)

    def finish(self):
        self.calls.append("finish")
        return super().finish()


def _linear(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def test_run_calls_the_stages_in_order_and_averages_the_step_losses():
    model = _linear()
    tr = _Recording(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    history = tr.run()
    step = ["zero_grad", "compute_loss", "backward", "step_optimizers"]
    assert tr.calls == ["start", *step, *step, "end_epoch 1", *step, *step, "end_epoch 2",
                        "finish"]
    # the epoch's loss is the mean of its steps, replayed by hand on a copy of the model
    ref = _linear()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for row in history:
        values = []
        for x, y in tr.data:
            opt.zero_grad()
            value = torch.nn.functional.mse_loss(ref(x), y)
            value.backward()
            opt.step()
            values.append(float(value.detach()))
        assert row["loss"] == pytest.approx(sum(values) / 2, rel=1e-6)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_batch_without_loss_terms_takes_no_step_but_counts():
    model = _linear()
    tr = _Recording(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                    skip_batch=0)
    seen = []
    tr.hooks.append(lambda trainer, event, **info: seen.append((event, info)))
    tr.start_epoch(1)
    before = [p.detach().clone() for p in model.parameters()]
    assert tr.train_step(tr.data[0]) == {}
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert tr.steps == 1 and "backward" not in tr.calls
    values = tr.train_step(tr.data[1])
    assert set(values) == {"loss"} and tr.steps == 2
    tr.end_epoch(1)
    assert tr.history[0]["loss"] == pytest.approx(values["loss"] / 2)
    assert [e for e, _ in seen] == ["step", "step", "end_epoch"]
    assert seen[-1][1]["row"] is tr.history[0]


def test_grad_clip_bounds_the_step():
    model = _linear()
    clip = 1e-3
    tr = _Recording(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=1.0),
                    grad_clip=clip)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    tr.train_step(tr.data[0])
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # SGD at lr 1 moves by the clipped gradient, whose norm is the clip value
    assert float((after - before).norm()) == pytest.approx(clip, rel=1e-4)


def test_a_disabled_grad_scaler_gives_the_plain_step():
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", enabled=False)):
        model = _linear()
        tr = _Recording(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                        scaler=scaler)
        tr.run()
        runs.append([p.detach() for p in model.parameters()])
    for p, q in zip(*runs):
        assert torch.equal(p, q)
