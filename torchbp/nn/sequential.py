"""Sequential: runs of torchbp layers inside it go through one autograd node each."""

from __future__ import annotations

import torch
from torch import Tensor

from ..functional.chain_node import chain, chain_applies
from ..functional.internals import has_hooks
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .link import Linked


class Sequential(torch.nn.Sequential):
    """Like ``torch.nn.Sequential``; each run of two or more consecutive torchbp layers without
    module hooks is one autograd node (``torchbp.functional.chain_node.chain``), whose backward is
    the layers' own equations in a loop. Other modules run as usual, each by its own call.

    The numbers are those of the layers run one by one; under torch.compile, forward-mode AD or
    torch.func the layers run one by one.
    """

    def forward(self, input: Tensor) -> Tensor:
        if not chain_applies():
            return super().forward(input)
        run: list[Linked] = []
        x = input
        for module in self._modules.values():
            if isinstance(module, Linked) and module.linkable():
                run.append(module)
                continue
            x = _run(run, x)
            run = []
            x = module(x)  # type: ignore[misc]
        return _run(run, x)


def _run(run: list[Linked], x: Tensor) -> Tensor:
    """``run``'s layers on ``x``: as one chain node, except that a layer with a module hook gets its own call."""
    if len(run) > 1 and has_hooks(*run):  # type: ignore[arg-type]
        start = 0
        for i, module in enumerate(run):
            if has_hooks(module):  # type: ignore[arg-type]
                x = module(_run(run[start:i], x))  # type: ignore[operator]
                start = i + 1
        return _run(run[start:], x)
    if len(run) > 1:
        return chain(run, x)
    if run:
        return run[0](x)  # type: ignore[operator,no-any-return]
    return x


def _examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    def mlp() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
        ).to(dtype)

    return [(mlp(), torch.randn(5, 3, dtype=dtype))]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "Sequential",
            "runs of torchbp layers as one node: each layer's equations in a loop",
            torch.nn.Sequential,
            Sequential,
            None,
            _examples,
        )
    ]
