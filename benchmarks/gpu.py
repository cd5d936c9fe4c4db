"""The GPU check in one command: every CUDA path of dmlkit, one JSON + Markdown report.

    python benchmarks/gpu.py                          # one GPU, <= 8 minutes, build/gpu/
    python benchmarks/gpu.py --out DIR --budget-s 400
    python benchmarks/gpu.py --only correctness training
    python benchmarks/gpu.py --device cpu --tiny      # the smoke run (seconds, no GPU)

On an offline GPU machine: docs/gpu.md (``make gpu-wheels``, ``PYTHONPATH``). The sections,
tolerances and budget are described in :mod:`dmlkit.gpucheck`.
"""

import sys
from pathlib import Path

try:
    import dmlkit  # noqa: F401
except ImportError:        # a plain checkout (PYTHONPATH not set): the repository's dmlkit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmlkit.gpucheck import main

if __name__ == "__main__":
    raise SystemExit(main())
