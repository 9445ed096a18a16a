"""Drop-in ``nn.Module``s whose backward pass is torchbp's explicit δ-recursion.

Each module is a thin wrapper that holds parameters and calls one function of
``torchbp.functional``. The twins of ``torch.nn`` layers subclass them, so parameter names,
shapes, initialisation, ``state_dict`` and ``repr`` are exactly those of ``torch.nn``; every twin
with parameters has ``register_delta_hook``. ``convert`` swaps them into any model.
"""

from . import models
from .activation import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d
from .conv import Conv1d, Conv2d
from .delta_hooks import DeltaHooks
from .dropout import Dropout, Flatten, Unflatten
from .linear import Dense, Linear
from .link import Linked
from .mlp import MLP
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .registry import Conversion, conversion, convert, revert
from .sequential import Sequential

__all__ = [
    "ELU",
    "GELU",
    "MLP",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "Conversion",
    "DeltaHooks",
    "Dense",
    "Dropout",
    "Flatten",
    "Identity",
    "LeakyReLU",
    "Linear",
    "Linked",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "Unflatten",
    "conversion",
    "convert",
    "models",
    "revert",
]
