"""pytorch-metric-learning (PML) as an optional reference: each comparison skips on its own.

``from optional_pml import pml_losses`` gives an object whose first attribute access imports
``pytorch_metric_learning.losses`` (``pytest.importorskip``). A test that touches PML is
skipped when PML is missing; the naive-loop tests of the same module never touch it and so
always run. Importing this module never imports PML.
"""

from __future__ import annotations

import pytest

__all__ = ["pml_distances", "pml_losses", "pml_miners", "pml_module"]


class _Lazy:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        module = pytest.importorskip(self._name)
        return getattr(module, attr)


def pml_module(sub: str):
    """``pytorch_metric_learning.<sub>`` imported at first use, skipping the test without PML."""
    return _Lazy(f"pytorch_metric_learning.{sub}")


pml_losses = pml_module("losses")
pml_distances = pml_module("distances")
pml_miners = pml_module("miners")
