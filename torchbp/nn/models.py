"""Ready-made models built from ``torch.nn`` layers and converted to torchbp's, e.g. for ``torchbp train --model``."""

from __future__ import annotations

import torch

from .registry import convert


def lenet(image_size: int = 8, in_channels: int = 1, classes: int = 10) -> torch.nn.Sequential:
    """LeNet-5, every layer with an explicit-δ backward: two convolution + ReLU + max-pool blocks, then
    three linear layers (120, 84, ``classes``) giving logits.

    The input is flat rows ``(N, in_channels · image_size²)``, as torchbp's datasets give them (an
    ``Unflatten`` reshapes them to ``(N, in_channels, image_size, image_size)``). For 28×28 images it
    is LeCun's network (5×5 kernels, the first padded by 2); for smaller ones, such as the 8×8
    digits, 3×3 kernels padded by 1 keep the feature maps from vanishing.

    Examples:
        >>> lenet(8)(torch.zeros(2, 64)).shape
        torch.Size([2, 10])
    """
    for name, value in (("image_size", image_size), ("in_channels", in_channels), ("classes", classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"lenet: {name} must be a positive int, got {value!r}")
    if image_size < 4:
        raise ValueError(f"lenet: image_size must be at least 4 (two 2×2 poolings), got {image_size}")
    large = image_size >= 28
    kernel = 5 if large else 3
    features = torch.nn.Sequential(
        torch.nn.Unflatten(1, (in_channels, image_size, image_size)),
        torch.nn.Conv2d(in_channels, 6, kernel, padding=kernel // 2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, kernel, padding=0 if large else 1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
    )
    with torch.no_grad():
        width = features(torch.zeros(1, in_channels * image_size * image_size)).shape[1]
    model = torch.nn.Sequential(
        *features,
        torch.nn.Linear(width, 120),
        torch.nn.ReLU(),
        torch.nn.Linear(120, 84),
        torch.nn.ReLU(),
        torch.nn.Linear(84, classes),
    )
    convert(model, strict=True)
    return model
