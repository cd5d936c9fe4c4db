"""Training: one engine (:class:`Trainer`) behind :func:`fit`, :func:`fit_head`,
:func:`train_embedding` and the adversarial training of :mod:`dmlkit.adversarial`.

- :mod:`~dmlkit.train.config`: :class:`TrainConfig`, every knob of :func:`fit` with its help;
- :mod:`~dmlkit.train.engine`: :class:`Trainer`, the loop as a short sequence of stages;
- :mod:`~dmlkit.train.fitting`: :func:`fit` (data set, validation selection, test);
- :mod:`~dmlkit.train.checkpoint`: ``last.pt`` / ``best.pt``, :func:`load_checkpoint`;
- :mod:`~dmlkit.train.features`: the feature cache (:func:`extract_features`) and
  :func:`fit_head`;
- :mod:`~dmlkit.train.embedding`: :func:`train_embedding`, the notebooks' small runs;
- :mod:`~dmlkit.train.device`, :mod:`~dmlkit.train.datasets`, :mod:`~dmlkit.train.batches`:
  device and precision, class-disjoint splits and loaders, epochs of P x K batches.

>>> from dmlkit import train
>>> train.TrainConfig().run_name()
'glyphs-multi_similarity-small_cnn-s0'
"""

from ..atomic import atomic_save
from .batches import EpochBatches
from .checkpoint import CheckpointError, load_checkpoint
from .config import DEFAULT_METRICS, FINAL_METRICS, TrainConfig
from .device import select_device
from .embedding import TrainRun, train_embedding
from .engine import Trainer
from .features import EmbeddingHead, HeadResult, extract_features, fit_head
from .fitting import FitResult, fit

__all__ = [
    "DEFAULT_METRICS",
    "FINAL_METRICS",
    "CheckpointError",
    "EmbeddingHead",
    "EpochBatches",
    "FitResult",
    "HeadResult",
    "TrainConfig",
    "TrainRun",
    "Trainer",
    "atomic_save",
    "extract_features",
    "fit",
    "fit_head",
    "load_checkpoint",
    "select_device",
    "train_embedding",
]
