"""Drop-in ``nn.Module``s whose backward pass is torchbp's explicit δ-recursion.

Each module is a thin wrapper that holds parameters and calls one function of
``torchbp.functional``. The twins of ``torch.nn`` layers subclass them, so parameter names,
shapes, initialisation, ``state_dict`` and ``repr`` are exactly those of ``torch.nn``; every twin
with parameters has ``register_delta_hook``. ``convert`` swaps them into any model.
"""

from . import models
from .activation import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .attention import MultiheadAttention, NonDynamicallyQuantizableLinear
from .batchnorm import BatchNorm1d, BatchNorm2d
from .conv import Conv1d, Conv2d
from .delta_hooks import DeltaHooks
from .dropout import Dropout, Flatten, Unflatten
from .embedding import Embedding
from .linear import Dense, Linear
from .link import Linked
from .mlp import MLP
from .norm import LayerNorm, RMSNorm
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .registry import Conversion, conversion, convert, revert
from .sequential import Sequential
from .transformer import TransformerDecoderLayer, TransformerEncoderLayer

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
    "Embedding",
    "Flatten",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "Linked",
    "MaxPool2d",
    "MultiheadAttention",
    "NonDynamicallyQuantizableLinear",
    "RMSNorm",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "Unflatten",
    "conversion",
    "convert",
    "models",
    "revert",
]
