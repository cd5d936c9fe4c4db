"""Exercises on state carried across steps: a row's streaming log-sum-exp over tiles (the
accumulator of :mod:`dmlkit.losses.tiling`) and the FIFO update of a cross-batch memory
(:class:`dmlkit.memory.CrossBatchMemory`).

The checker drives the student's one-step function over a sequence (tiles, batches) and
compares the state after every step with dmlkit's (:func:`dmlkit.losses.tiles.lse_update_`,
:meth:`CrossBatchMemory.enqueue`).
"""

from __future__ import annotations

import torch

from ..losses import build
from ..losses.tiles import lse_update_
from ..memory import CrossBatchMemory
from .engine import Case, Exercise, Problem, compare_tensor, describe_value, format_input

__all__ = ["EXERCISES"]

_NINF = float("-inf")


# ============================================================================ streaming lse
def _lse_start(tiles):
    r, dtype = tiles[0].shape[0], tiles[0].dtype
    return torch.full((r,), _NINF, dtype=dtype), torch.zeros(r, dtype=dtype)


def _lse_stream(fn, tiles):
    """Run ``fn(m, acc, z)`` over the tiles; the (m, acc) after each, or the odd output."""
    m, acc = _lse_start(tiles)
    states = []
    for z in tiles:
        out = fn(m, acc, z)
        if out is None:                  # updated in place, as dmlkit's lse_update_
            out = (m, acc)
        if not (isinstance(out, (tuple, list)) and len(out) == 2
                and all(isinstance(t, torch.Tensor) for t in out)):
            return [*states, out]
        m, acc = out
        states.append((m.detach().clone(), acc.detach().clone()))
    return states


def _lse_reference_states(tiles):
    def step(m, acc, z):
        lse_update_(m, acc, z)
    return _lse_stream(step, tiles)


def _lse_cases() -> list[Case]:
    g = torch.Generator().manual_seed(51)

    def rnd(r, c, scale=1.0, dtype=torch.float64):
        return (scale * torch.randn(r, c, generator=g, dtype=torch.float64)).to(dtype)

    one_row = [torch.tensor([[0.5, -1.0]], dtype=torch.float64),
               torch.tensor([[2.0, 1.5]], dtype=torch.float64),
               torch.tensor([[-0.5, 0.0]], dtype=torch.float64)]
    masked = [rnd(3, 4), rnd(3, 4), rnd(3, 4)]
    masked[0][0] = _NINF                          # row 0: its first tile is fully masked
    masked[1][1, :2] = _NINF
    for t in masked:
        t[2] = _NINF                              # row 2: nothing at all
    big = [rnd(2, 5, 300.0) + 700.0 for _ in range(3)]
    specs = [("growing maximum: one row, 3 tiles of 2, the maximum grows in tile 2", one_row, True),
             ("random: 4 rows, 5 tiles of 3", [rnd(4, 3) for _ in range(5)], False),
             ("masked: -inf entries, row 0's first tile is fully masked, row 2 is empty",
              masked, True),
             ("large values: z ~ 1000, exp(z) overflows without the running maximum", big,
              False)]
    cases = []
    for label, tiles, printed in specs:
        show = None
        if printed:
            show = format_input(**{f"tile {k + 1}": t for k, t in enumerate(tiles)})
        cases.append(Case(label, (tiles,), _lse_reference_states(tiles), show=show))
    half = [rnd(3, 4, 2.0, torch.float16) for _ in range(3)]
    cases.append(Case("float16: 3 rows, 3 tiles in half precision", (half,),
                      _lse_reference_states([t.float() for t in half]), rtol=5e-3,
                      atol=5e-3))
    return cases


def _compare_lse(out, case: Case) -> Problem | None:
    for k, expected in enumerate(case.expected):
        if k >= len(out):
            return Problem("the stream stopped early", "type")
        got = out[k]
        if isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, torch.Tensor)
                                                            for t in got):
            pass
        else:
            return Problem(f"after tile {k + 1} your function returned {describe_value(got)}; "
                           "expected the pair (m, acc) of (r,) tensors", "type")
        for name, o, e in zip(("running maximum m", "running sum acc"), got, expected):
            problem = compare_tensor(o, e, case, f"after tile {k + 1}, your {name}")
            if problem:
                return problem
    return None


def _step_no_rescale(m, acc, z):
    new = torch.maximum(m, z.amax(1))
    safe = torch.where(torch.isfinite(new), new, 0.0)
    return new, acc + torch.exp(z - safe[:, None]).sum(1)


def _step_wrong_way(m, acc, z):
    new = torch.maximum(m, z.amax(1))
    safe = torch.where(torch.isfinite(new), new, 0.0)
    scale = torch.where(torch.isfinite(m), torch.exp(safe - m), 0.0)
    return new, acc * scale + torch.exp(z - safe[:, None]).sum(1)


def _step_unsafe(m, acc, z):
    new = torch.maximum(m, z.amax(1))
    return new, acc * torch.exp(m - new) + torch.exp(z - new[:, None]).sum(1)


def _step_no_max(m, acc, z):
    return torch.zeros_like(m), acc + torch.exp(z).sum(1)


_LSE_MISTAKES = {
    "the old sum is not rescaled when the maximum grows: acc must be multiplied by "
    "exp(m_old - m_new) before the new tile's terms are added": _step_no_rescale,
    "the rescaling goes the wrong way: exp(m_old - m_new) (<= 1), not exp(m_new - m_old)":
        _step_wrong_way,
    "NaN when a row's maximum is still -inf: exp(-inf - (-inf)) is NaN; subtract 0 instead "
    "of an infinite maximum": _step_unsafe,
    "no running maximum: m must be the largest entry seen so far and acc = sum exp(z - m), "
    "or exp overflows": _step_no_max,
}


# ============================================================================ FIFO memory
def _fifo_stream(fn, memory_size, dim, batches):
    memory = torch.zeros(memory_size, dim, dtype=torch.float64)
    labels = torch.zeros(memory_size, dtype=torch.long)
    pointer, filled = 0, 0
    states = []
    for emb, lab in batches:
        out = fn(memory, labels, pointer, filled, emb, lab)
        if not (isinstance(out, (tuple, list)) and len(out) == 4):
            return [*states, out]
        memory, labels, pointer, filled = out
        states.append(tuple(v.clone() if isinstance(v, torch.Tensor) else v for v in out))
    return states


def _fifo_reference_states(memory_size, dim, batches):
    xbm = CrossBatchMemory(build("contrastive"), embedding_dim=dim, memory_size=memory_size)
    xbm = xbm.double()
    states = []
    for emb, lab in batches:
        xbm.enqueue(emb, lab)
        states.append((xbm.embeddings.clone(), xbm.labels.clone(), int(xbm.pointer),
                       int(xbm.filled)))
    return states


def _fifo_cases() -> list[Case]:
    g = torch.Generator().manual_seed(61)

    def batch(b, dim=2, grad=False):
        emb = torch.randn(b, dim, generator=g, dtype=torch.float64)
        return emb.requires_grad_(grad), torch.randint(0, 5, (b,), generator=g)

    specs = [("wrap: memory of 10, three batches of 4, the third wraps around", 10, 2,
              [batch(4) for _ in range(3)], True),
             ("full batches: memory of 6, batches of 6, each one replaces the whole memory", 6, 3,
              [batch(6, 3) for _ in range(3)], False),
             ("uneven: memory of 7, batches of 3, 2, 3, 3", 7, 2,
              [batch(3), batch(2), batch(3), batch(3)], False),
             ("autograd: a batch that requires grad, the memory must not keep its graph", 5, 2,
              [batch(2, grad=True), batch(2, grad=True), batch(2, grad=True)], False)]
    cases = []
    for label, size, dim, batches, printed in specs:
        show = None
        if printed:
            show = (f"  memory_size = {size}, embedding dim = {dim}, batch sizes "
                    f"{[len(b[1]) for b in batches]}; start: pointer = 0, filled = 0")
        cases.append(Case(label, (size, dim, batches),
                          _fifo_reference_states(size, dim, batches), show=show))
    return cases


def _compare_fifo(out, case: Case) -> Problem | None:
    for k, expected in enumerate(case.expected):
        if k >= len(out):
            return Problem("the stream stopped early", "type")
        got = out[k]
        if not (isinstance(got, (tuple, list)) and len(got) == 4):
            return Problem(f"after batch {k + 1} your function returned {describe_value(got)}; "
                           "expected (memory, mem_labels, pointer, filled)", "type")
        memory, labels, pointer, filled = got
        if isinstance(memory, torch.Tensor) and memory.requires_grad:
            return Problem(f"after batch {k + 1} your memory requires grad: it keeps the "
                           "batch's autograd graph (store emb.detach())")
        for name, o, e in (("pointer", pointer, expected[2]), ("filled", filled, expected[3])):
            if isinstance(o, torch.Tensor) and o.numel() == 1:
                o = int(o)
            if not isinstance(o, int) or isinstance(o, bool):
                return Problem(f"after batch {k + 1} your {name} is {describe_value(o)}; "
                               "expected an int", "type")
            if o != e:
                return Problem(f"after batch {k + 1} your {name} is {o}; expected {e}")
        for name, o, e in (("memory", memory, expected[0]), ("mem_labels", labels,
                                                             expected[1])):
            if not isinstance(o, torch.Tensor):
                return Problem(f"after batch {k + 1} your {name} is {describe_value(o)}; "
                               "expected a tensor", "type")
            if o.shape != e.shape:
                return Problem(f"after batch {k + 1} your {name} has shape "
                               f"{tuple(o.shape)}; expected {tuple(e.shape)} (the memory "
                               "keeps its size)", "type")
            if not bool((o.detach().double() == e.double()).all()):
                rows = torch.nonzero((o.detach().double() != e.double()).reshape(len(e), -1)
                                     .any(1)).flatten().tolist()
                return Problem(f"after batch {k + 1} your {name} differs in slots {rows}")
    return None


def _fifo_plain(memory, labels, pointer, filled, emb, lab, wrap=True, cap=True, start=None,
                detach=True):
    size, b = memory.shape[0], len(lab)
    first = pointer if start is None else start(pointer, b, size)
    slots = (first + torch.arange(b)) % size
    memory = memory.clone()
    labels = labels.clone()
    memory[slots] = emb.detach() if detach else emb
    labels[slots] = lab
    pointer = (first + b) % size if wrap else first + b
    filled = min(filled + b, size) if cap else filled + b
    return memory, labels, pointer, filled


_FIFO_MISTAKES = {
    "the pointer is not wrapped: it must stay in [0, memory_size) (pointer = (pointer + B) % "
    "memory_size)": lambda *a: _fifo_plain(*a, wrap=False),
    "filled grows beyond the memory size: it is min(filled + B, memory_size)":
        lambda *a: _fifo_plain(*a, cap=False),
    "every batch is written from slot 0: write at the pointer":
        lambda *a: _fifo_plain(*a, start=lambda p, b, size: 0),
    "on overflow the batch goes into the last B slots (the official XBM code), not around "
    "the ring: the oldest slots, from the pointer on, are overwritten":
        lambda *a: _fifo_plain(*a, start=lambda p, b, size: p if p + b <= size else size - b),
}


EXERCISES = [
    Exercise(
        name="lse_update", notebook="11", kind="implement", minutes=15,
        title="A row's streaming log-sum-exp over tiles",
        call="lse_update(m, acc, z)",
        statement=(
            "A tiled loss sees each row of S one tile at a time. Keep, per row, the running "
            "maximum m (r,) and the running sum acc (r,) = sum over the entries seen so far of "
            "exp(z - m); the row's log-sum-exp is then m + log(acc). Given the state and the "
            "next tile z (r, c) (-inf = a masked entry), return the new (m, acc). The stream "
            "starts at m = -inf, acc = 0; a row that has seen only -inf keeps m = -inf, "
            "acc = 0 (no NaN)."),
        hints=[
            "The new maximum is torch.maximum(m, z.amax(1)). When it grows, every term "
            "already in acc was computed against the old maximum.",
            "exp(z - m_new) = exp(z - m_old) * exp(m_old - m_new): rescale acc by "
            "exp(m_old - m_new) (<= 1) before adding the tile's sum of exp(z - m_new).",
            "While m_new is still -inf, m_old - m_new is NaN: subtract a finite stand-in "
            "instead, torch.where(torch.isfinite(m_new), m_new, 0).",
        ],
        runner=_lse_stream, cases=_lse_cases, compare=_compare_lse, mistakes=_LSE_MISTAKES),
    Exercise(
        name="fifo_enqueue", notebook="12", kind="implement", minutes=10,
        title="The FIFO update of a cross-batch memory",
        call="fifo_enqueue(memory, mem_labels, pointer, filled, emb, lab)",
        statement=(
            "A ring of memory_size slots: memory (memory_size, D), mem_labels "
            "(memory_size,), pointer (the next slot to write, an int) and filled (how many "
            "slots hold data). Write the batch emb (B, D), lab (B,) into slots pointer, "
            "pointer + 1, ... modulo memory_size (the oldest entries are overwritten), detached "
            "from autograd; return (memory, mem_labels, pointer, filled) with the pointer "
            "after the batch and filled capped at memory_size."),
        hints=[
            "The slots are (pointer + torch.arange(B)) % memory_size.",
            "memory[slots] = emb.detach() (the memory must not keep the batch's graph); "
            "mem_labels[slots] = lab.",
            "pointer = (pointer + B) % memory_size; filled = min(filled + B, memory_size).",
        ],
        runner=_fifo_stream, cases=_fifo_cases, compare=_compare_fifo,
        mistakes=_FIFO_MISTAKES),
]

