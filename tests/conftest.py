"""Shared test helpers: building any registered loss with the arguments it needs; a loss's
value and its gradients with respect to every floating-point input."""

import os

import pytest
import torch

from dmlkit import losses

# under pytest-xdist, one intra-op thread per worker: the workers already fill the cores, and
# two workers with two spinning OpenMP threads each oversubscribe a 2-core machine
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

#: constructor arguments for losses that need more than their defaults
LOSS_KWARGS = {
    "osm_caa": dict(num_classes=8, embedding_dim=6),
    "proxy_anchor": dict(num_classes=8, embedding_dim=6),
    "proxy_nca": dict(num_classes=8, embedding_dim=6),
}


def build_loss(name: str, **overrides):
    kwargs = dict(LOSS_KWARGS.get(name, {}))
    kwargs.update(overrides)
    return losses.build(name, **kwargs)


def value_and_grads(loss, *args):
    """``(value, [grad of each floating-point argument])`` of ``loss(*args)`` on fresh leaves;
    an argument the value does not depend on gets a zero gradient."""
    leaves = [a.detach().clone().requires_grad_(True) if a.is_floating_point() else a
              for a in args]
    value = loss(*leaves)
    floats = [a for a in leaves if a.is_floating_point()]
    grads = torch.autograd.grad(value, floats, allow_unused=True)
    return value.detach(), [torch.zeros_like(a) if g is None else g
                            for a, g in zip(floats, grads)]


# ``make test`` runs the suite in parallel (pytest-xdist, ``--dist loadscope``): a test file is
# one unit of work, so its module-scoped fixtures (the notebook rerun, the tiny notebooks) run
# once; the browser tests (tests/ui/) are one unit, sharing one JupyterLab server and one book
# build; the longest units are handed out first (``--no-loadscope-reorder`` keeps this order).
# The units are made by the scheduler below, from the node ids: xdist's own ``loadgroup`` marks
# are lost with pytest >= 9.2 (it renames ``item._nodeid``, which pytest no longer reads), so
# every worker then ran the whole notebook rerun and built the book.
_FIRST = ("tests/test_notebooks_rerun.py", "tests/ui", "tests/test_notebooks_tiny.py",
          "tests/test_gpucheck.py", "tests/test_claims.py")


def unit_of(nodeid: str) -> str:
    """The unit of work of a test: its file, or ``tests/ui`` for every browser test."""
    path = nodeid.split("::", 1)[0]
    return "tests/ui" if path.startswith("tests/ui/") else path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_FIRST)}
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))   # stable


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return FileUnits(config, log)
