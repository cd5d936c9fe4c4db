"""The epoch log of :func:`dmlkit.train.fit` as a compact table.

A header names the columns once (short metric names, validation and test columns grouped),
then each evaluated epoch is one line of fixed-width numbers, short enough not to wrap in a
notebook; metrics as percentages with one decimal (:mod:`dmlkit.tables`' convention):

>>> log = EpochLog()
>>> row = {"epoch": 1, "loss": 0.8913, "lr": 1e-3, "val_recall@1": 0.5333, "val_map@r": 0.1453,
...        "test_recall@1": 0.1867, "test_map@r": 0.036}
>>> print("\\n".join(log.lines(row)))
             | validation % |    test %
epoch   loss |   R@1  MAP@R |   R@1  MAP@R
    1 0.8913 |  53.3   14.5 |  18.7    3.6
>>> log.lines({**row, "epoch": 2})   # same columns: no new header
['    2 0.8913 |  53.3   14.5 |  18.7    3.6']
"""

from __future__ import annotations

import math

__all__ = ["EpochLog", "short_metric_name"]

_SHORT = (("recall@", "R@"), ("precision@", "P@"), ("map@r", "MAP@R"), ("r_precision", "RP"),
          ("nmi", "NMI"), ("f1", "F1"), ("cmc@", "CMC@"), ("vrf_neg", "VRF/"))
_WIDTH = 6
_GROUPS = (("val_", "validation %"), ("test_", "test %"))


def short_metric_name(name: str) -> str:
    """``recall@1`` -> ``R@1``, ``map@r`` -> ``MAP@R``, ``r_precision`` -> ``RP``, ..."""
    for long, short in _SHORT:
        if name.startswith(long):
            return short + name[len(long):]
    return name


class EpochLog:
    """Formats rows of a training history (``epoch``, ``loss``, ``val_*``, ``test_*``)."""

    def __init__(self):
        self.columns: list[str] | None = None

    def lines(self, row: dict) -> list[str]:
        """The lines to print for ``row``: a header first when its columns are new."""
        groups = [[k for k in row if k.startswith(prefix)] for prefix, _ in _GROUPS]
        columns = [k for g in groups for k in g]
        out = []
        if columns != self.columns:
            self.columns = columns
            top, names = [" " * 12], ["epoch   loss"]
            for (prefix, title), keys in zip(_GROUPS, groups):
                if keys:
                    width = (_WIDTH + 1) * len(keys) - 1
                    top.append(title.center(width))
                    names.append(" ".join(short_metric_name(k[len(prefix):]).rjust(_WIDTH)
                                          for k in keys))
            out += [" | ".join(top).rstrip(), " | ".join(names)]
        loss = row.get("loss", math.nan)
        cells = [f"{row['epoch']:5d} " + ("     -" if math.isnan(loss) else f"{loss:6.4f}")]
        for keys in groups:
            if keys:
                cells.append(" ".join(f"{100 * row[k]:{_WIDTH}.1f}" for k in keys))
        out.append(" | ".join(cells))
        return out
