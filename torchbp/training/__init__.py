"""Training: ``fit``, datasets, checkpoints, and the console and TensorBoard plugins."""

from .checkpoints import CheckpointError, load_checkpoint
from .datasets import DATASETS, Data, load
from .divergence import DivergenceError
from .loop import Run, evaluate, fit
from .signals import TrainingInterrupted

__all__ = [
    "DATASETS",
    "CheckpointError",
    "Data",
    "DivergenceError",
    "Run",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "load",
    "load_checkpoint",
]
