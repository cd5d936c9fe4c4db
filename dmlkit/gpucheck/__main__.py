"""``python -m dmlkit.gpucheck``: the GPU check (see :mod:`dmlkit.gpucheck`)."""

from . import main

raise SystemExit(main())
