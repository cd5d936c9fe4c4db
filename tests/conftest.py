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
    """``(value, [grad of each floating-point argument])`` of ``loss(*args)`` on fresh leaves."""
    leaves = [a.detach().clone().requires_grad_(True) if a.is_floating_point() else a
              for a in args]
    value = loss(*leaves)
    value.backward()
    return value.detach(), [a.grad for a in leaves if a.is_floating_point()]


# ``make test`` runs the suite in parallel (pytest-xdist, ``--dist loadgroup``): a test file is
# one unit of work, so its module-scoped fixtures run once; the browser tests share one unit
# (one Chromium at a time); the longest files are handed out first.
_FIRST = ("test_notebooks_rerun.py", "ui", "test_notebooks_tiny.py", "test_gpucheck.py",
          "test_claims.py")


def _unit(item) -> str:
    path = item.path
    return "ui" if path.parent.name == "ui" else path.name


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item), len(rank)))   # stable: files keep order
    for item in items:
        unit = "ui" if _unit(item) == "ui" else str(item.path)
        item.add_marker(pytest.mark.xdist_group(unit))

