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


class ResidualBlock(torch.nn.Module):
    """A ResNet basic block with a strided, then grouped, 3×3 convolution, each followed by batch
    norm: y = relu(bn(conv(relu(bn(conv_s(x))))) + shortcut(x)), the shortcut a strided 1×1
    convolution and batch norm where the shape changes. Input ``(N, in_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            torch.nn.BatchNorm2d(out_channels),
            torch.nn.ReLU(),
            torch.nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=groups, bias=False),
            torch.nn.BatchNorm2d(out_channels),
        )
        self.shortcut: torch.nn.Module = torch.nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                torch.nn.BatchNorm2d(out_channels),
            )
        self.activation = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


def small_resnet(in_channels: int = 1, classes: int = 10, width: int = 16) -> torch.nn.Sequential:
    """A small ResNet-style CNN for 28×28 images, every layer but the residual additions explicit:
    a 3×3 stem, two residual blocks (strided, grouped convolutions with batch norm), global average
    pooling and a linear head. Input ``(N, in_channels, H, W)``, output logits ``(N, classes)``.

    Examples:
        >>> small_resnet()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    model = torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(width),
        torch.nn.ReLU(),
        ResidualBlock(width, 2 * width, stride=2, groups=4),
        ResidualBlock(2 * width, 4 * width, stride=2, groups=4),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * width, classes),
    )
    convert(model, strict=True)
    return model


class CausalLM(torch.nn.Module):
    """A tiny causal language model, every layer with an explicit-δ backward: token embeddings plus
    learned position embeddings, ``blocks`` pre-norm transformer blocks (causal self-attention and
    a GELU feed-forward layer, each with a residual), a final layer norm and a linear head.

    Input tokens ``(N, T)`` with T ≤ ``context``; output logits ``(N, T, vocab)``, or of the last
    ``scored`` positions only, ``(N, scored, vocab)`` (the answer of a prompt-then-answer task).

    Examples:
        >>> model = CausalLM(vocab=11, context=12, width=16, heads=2, blocks=1)
        >>> model(torch.zeros(3, 12, dtype=torch.long)).shape
        torch.Size([3, 12, 11])
    """

    def __init__(
        self,
        vocab: int,
        context: int,
        width: int = 64,
        heads: int = 4,
        blocks: int = 2,
        dropout: float = 0.0,
        scored: int | None = None,
    ) -> None:
        super().__init__()
        self.scored = scored
        self.tokens = torch.nn.Embedding(vocab, width)
        self.positions = torch.nn.Embedding(context, width)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(
                width, heads, 4 * width, dropout, "gelu", batch_first=True, norm_first=True
            )
            for _ in range(blocks)
        )
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab)
        convert(self, strict=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.positions.num_embeddings:
            raise ValueError(
                f"tokens: expected at most context = {self.positions.num_embeddings} positions, got shape "
                f"{tuple(tokens.shape)}"
            )
        # the positions looked up for every example (not once, broadcast): each example's δ then reaches the
        # table, which per-example quantities read
        positions = torch.arange(length, device=tokens.device).expand(tokens.shape[0], length)
        x = self.tokens(tokens) + self.positions(positions)
        mask = torch.nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x = block(x, src_mask=mask, is_causal=True)
        if self.scored is not None:
            x = x[:, length - self.scored :]
        return self.head(self.norm(x))  # type: ignore[no-any-return]
