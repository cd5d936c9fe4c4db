"""Benchmark: the half-precision error of every registered loss, miner and retrieval metric
(the precision policy, docs/precision.md).

Each case is computed from bfloat16 / float16 input and from float32 and float64 copies of the
same rounded input (dmlkit.precision_errors says how each error is measured), over several
random batches; the table printed is the largest error of each case. ``--save`` writes it to
``dmlkit/resources/precision_errors.csv`` (with the date and the torch version), the table the
tests hold every case to (dmlkit.precision.tolerance), and its per-case summary into
docs/precision.md (between the ``precision table`` markers).

    python benchmarks/precision.py              # print the table
    python benchmarks/precision.py --save       # and write the resource and the docs table
    python benchmarks/precision.py --markdown   # the docs table of the saved resource
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmlkit import precision
from dmlkit import precision_errors as pe
from dmlkit.atomic import atomic_write, atomic_write_text

RESOURCE = Path(__file__).resolve().parents[1] / "dmlkit" / "resources" / precision.TABLE
DOCS = Path(__file__).resolve().parents[1] / "docs" / "precision.md"


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.2g}"


def print_table(rows: list[dict]) -> None:
    """One line per (kind, name, path, dtype): the errors of each quantity and reference."""
    cases = collections.defaultdict(dict)
    for r in rows:
        cases[(r["kind"], r["name"], r["path"], r["dtype"])][(r["quantity"],
                                                             r["reference"])] = r["max_error"]
    cols = sorted({k for c in cases.values() for k in c})
    head = ["kind", "name", "path", "dtype"] + [f"{q} vs {r}" for q, r in cols]
    print(" | ".join(head))
    for key, errs in cases.items():
        print(" | ".join([*key, *(_fmt(errs[c]) if c in errs else "" for c in cols)]))
    print("\nlargest error per family, dtype, quantity and reference:")
    worst = collections.defaultdict(float)
    for r in rows:
        k = (r["kind"], r["dtype"], r["quantity"], r["reference"])
        worst[k] = max(worst[k], r["max_error"])
    for k, v in sorted(worst.items()):
        print(" | ".join(k), "|", _fmt(v))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", action="store_true", help=f"write {RESOURCE.name}")
    ap.add_argument("--out", type=Path, default=RESOURCE, help="where --save writes")
    ap.add_argument("--markdown", action="store_true",
                    help="print the docs table of the saved resource and stop")
    args = ap.parse_args(argv)
    if args.markdown:
        print(pe.markdown_table(precision.load_table()), end="")
        return
    t0 = time.perf_counter()
    rows = pe.measure_all()
    print_table(rows)
    print(f"\n{len(rows)} rows over {len(pe.SEEDS)} batches in {time.perf_counter() - t0:.0f} s")
    if args.save:
        with atomic_write(args.out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(pe.COLUMNS))
            writer.writeheader()
            writer.writerows({c: r[c] for c in pe.COLUMNS} for r in rows)
        print(f"wrote {args.out}")
        if args.out == RESOURCE:
            atomic_write_text(DOCS, pe.with_docs_table(DOCS.read_text(), pe.markdown_table(rows)))
            print(f"wrote the table of {DOCS}")


if __name__ == "__main__":
    main()
