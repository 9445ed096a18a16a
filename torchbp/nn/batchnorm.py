"""BatchNorm1d and BatchNorm2d: torch's modules, normalising through ``torchbp.functional.batchnorm.batch_norm``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..derivatives import batchnorm as derivatives
from ..functional.batchnorm import batch_norm, check_batch_norm
from ..functional.checks import dtype_goes_with, shape_text
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .delta_hooks import DeltaHooks


class _BatchNorm(DeltaHooks, torch.nn.modules.batchnorm._BatchNorm):
    """``torch.nn.modules.batchnorm._BatchNorm.forward``, step for step, with torchbp's op; in a
    chain, the same steps around one ``BatchNorm``. One difference: a call whose input is refused
    changes nothing, where torch's layer has already counted the batch in ``num_batches_tracked``."""

    # The buffers are read from ``_buffers`` straight (``torchbp.functional.internals``): a
    # ``Module.__getattr__`` per buffer, three or four a call, costs as much as the layer's checks.

    def _counter(self) -> Tensor | None:
        """``num_batches_tracked`` where batches are counted (in training, where running statistics
        are tracked), else ``None``."""
        counter = self._buffers.get("num_batches_tracked")
        return counter if self.training and self.track_running_stats else None

    def _count(self) -> None:
        """Count the batch, as torch's forward does."""
        counter = self._counter()
        if counter is not None:
            counter.add_(1)

    def _settings(self) -> tuple[bool, float]:
        """Whether to normalise with the batch's statistics (in training, and in eval where there
        are no running ones), and the momentum of the running ones for this call's batch, which is
        counted once the call has passed its checks."""
        buffers = self._buffers
        momentum = self.momentum
        if momentum is None:
            # the cumulative average over the batches counted, this one included (none counted:
            # nothing to move)
            counter = self._counter()
            momentum = 0.0 if counter is None else 1.0 / (float(counter) + 1.0)
        no_running = buffers.get("running_mean") is None and buffers.get("running_var") is None
        return self.training or no_running, momentum

    def _running(self) -> tuple[Tensor | None, Tensor | None]:
        """The running statistics where they are updated (training) or normalised with (eval)."""
        if self.training and not self.track_running_stats:
            return None, None
        buffers = self._buffers
        return buffers.get("running_mean"), buffers.get("running_var")

    def _check_features(self, input: Tensor) -> None:
        """``input``'s channels (dim 1), device and dtype against the layer's, named as the input's."""
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"input: expected {self.num_features} channels in dim 1 ({type(self).__name__}(num_features="
                f"{self.num_features})), got shape {shape_text(input)}"
            )
        own: Tensor | None = self._parameters.get("weight")
        if own is None:
            own = self._buffers.get("running_mean")
        if own is None:
            return
        if input.device != own.device:
            raise ValueError(f"input: expected device {own.device} (the layer's), got {input.device}")
        if not dtype_goes_with(input.dtype, own.dtype):
            also = " or float16/bfloat16" if own.dtype == torch.float32 else ""
            raise TypeError(f"input: expected dtype {own.dtype}{also} (the layer's), got {input.dtype}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_features(input)
        batch_statistics, momentum = self._settings()
        output = batch_norm(
            input, *self._running(), self.weight, self.bias, batch_statistics, momentum, self.eps, self.on_delta()
        )
        self._count()  # once the batch has passed every check: a refused call changes nothing
        return output

    def link_is_pure(self) -> bool:
        # with momentum None, the momentum changes with every batch counted
        return self.momentum is not None

    def linked(self, x: Tensor, params: tuple[Tensor | None, ...]) -> derivatives.BatchNorm:
        self._check_input_dim(x)
        linked = super().linked(x, params)
        self._count()  # on every call, once the checks have passed: the equations are remembered, the count is not
        return linked  # type: ignore[return-value]

    def link(self, x: Tensor) -> derivatives.BatchNorm:
        self._check_features(x)
        batch_statistics, momentum = self._settings()
        check_batch_norm(x, *self._running(), self.weight, self.bias, batch_statistics, self.eps)
        return derivatives.BatchNorm(batch_statistics, self.eps, momentum)

    def link_params(self) -> tuple[Tensor | None, ...]:
        return (self._parameters["weight"], self._parameters["bias"], *self._running())


class BatchNorm1d(_BatchNorm, torch.nn.BatchNorm1d):
    """Batch normalisation over ``(N, C)`` or ``(N, C, L)``, like ``torch.nn.BatchNorm1d``.

    Examples:
        >>> layer = BatchNorm1d(3)
        >>> sorted(layer.state_dict())
        ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """


class BatchNorm2d(_BatchNorm, torch.nn.BatchNorm2d):
    """Batch normalisation over ``(N, C, H, W)``, like ``torch.nn.BatchNorm2d``.

    Examples:
        >>> import torch
        >>> BatchNorm2d(16)(torch.randn(2, 16, 3, 3)).shape
        torch.Size([2, 16, 3, 3])
    """


def _randomised(module: torch.nn.modules.batchnorm._BatchNorm) -> torch.nn.Module:
    """``module`` with random γ, β and running statistics, so that none of them is 1 or 0."""
    with torch.no_grad():
        if module.weight is not None and module.bias is not None:
            module.weight.normal_()
            module.bias.normal_()
        if module.running_mean is not None and module.running_var is not None:
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 1.5)
    return module


def _batch_norm_1d_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (_randomised(torch.nn.BatchNorm1d(3, dtype=dtype)), torch.randn(8, 3, dtype=dtype)),
        (_randomised(torch.nn.BatchNorm1d(3, momentum=None, dtype=dtype)), torch.randn(4, 3, 5, dtype=dtype)),
        (_randomised(torch.nn.BatchNorm1d(3, affine=False, dtype=dtype)), torch.randn(2, 3, dtype=dtype)),
        (
            _randomised(torch.nn.BatchNorm1d(3, track_running_stats=False, dtype=dtype)),
            torch.randn(4, 3, 5, dtype=dtype),
        ),
    ]


def _batch_norm_2d_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (_randomised(torch.nn.BatchNorm2d(3, dtype=dtype)), torch.randn(4, 3, 5, 5, dtype=dtype)),
        (
            _randomised(torch.nn.BatchNorm2d(3, momentum=None, eps=1e-3, dtype=dtype)),
            torch.randn(2, 3, 4, 4, dtype=dtype),
        ),
        (_randomised(torch.nn.BatchNorm2d(3, affine=False, dtype=dtype)), torch.randn(2, 3, 4, 3, dtype=dtype)),
        (
            _randomised(torch.nn.BatchNorm2d(3, track_running_stats=False, dtype=dtype)),
            torch.randn(2, 3, 4, 4, dtype=dtype).to(memory_format=torch.channels_last),
        ),
    ]


_DESCRIPTION = (
    "z = γ x̂ + β, x̂ = (x − μ)/√(σ² + ε) per channel; ∂C/∂β = Σ δ, ∂C/∂γ = Σ δ ⊙ x̂, "
    "∂C/∂x = (γ/(m√(σ² + ε)))·(m δ − Σ δ − x̂ Σ δ ⊙ x̂)"
)


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "BatchNorm1d",
            _DESCRIPTION + " over (N, C) or (N, C, L)",
            torch.nn.BatchNorm1d,
            BatchNorm1d,
            derivatives.BatchNorm,
            _batch_norm_1d_examples,
        ),
        LayerSpec(
            "BatchNorm2d",
            _DESCRIPTION + " over (N, C, H, W)",
            torch.nn.BatchNorm2d,
            BatchNorm2d,
            derivatives.BatchNorm,
            _batch_norm_2d_examples,
        ),
    ]
