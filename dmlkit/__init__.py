"""dmlkit: deep metric learning losses, weights, adversarial negatives, evaluation, training."""

__version__ = "0.1.0"

from . import losses, weights  # noqa: F401

__all__ = ["losses", "weights", "__version__"]
