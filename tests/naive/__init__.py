"""Naive references every test compares against: per-pair / per-triplet loops for the losses
(``naive.losses``) and brute-force metrics (``naive.metrics``), in float64 and plain Python."""

from .losses import *  # noqa: F403
from .metrics import *  # noqa: F403
