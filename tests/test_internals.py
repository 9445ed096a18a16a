"""torchbp.functional.internals: each private torch internal torchbp leans on, checked for its meaning.

Every test here names what changed in torch when it fails: the fix then belongs in
``torchbp/functional/internals.py`` (and nowhere else, since nothing else touches torch's privates).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.autograd import Function, forward_ad

import torchbp.nn as tnn
from torchbp.functional import internals
from torchbp.functional.internals import any_autocast, forward_mode, has_hooks, plain_apply, saved_tensor_hooks

CHANGED = "torch changed a private internal that torchbp/functional/internals.py relies on: "


class Square(Function):
    """x² with an explicit backward, to compare ``plain_apply`` with ``Function.apply``."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x * x

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)  # type: ignore[attr-defined]

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return 2 * x * grad


def test_the_private_attributes_torchbp_reads_exist() -> None:
    module = torch.nn.Linear(2, 2)
    missing = [
        name
        for owner, name in [
            (forward_ad, "_current_level"),
            (torch._C, "_are_functorch_transforms_active"),
            (torch._C, "_is_any_autocast_enabled"),
            (torch._C._autograd, "_top_saved_tensors_default_hooks"),
            (torch._C._functorch, "unwrap_if_dead"),
            (torch.nn.modules.module, "_global_forward_hooks"),
            (torch.nn.modules.module, "_global_forward_pre_hooks"),
            (torch.nn.modules.module, "_global_backward_hooks"),
            (torch.nn.modules.module, "_global_backward_pre_hooks"),
            (module, "_forward_hooks"),
            (module, "_forward_pre_hooks"),
            (module, "_backward_hooks"),
            (module, "_backward_pre_hooks"),
            (module, "_parameters"),
            (module, "_buffers"),
            (module, "_modules"),
        ]
        if not hasattr(owner, name)
    ]
    assert not missing, CHANGED + f"these attributes are gone: {missing}"
    assert isinstance(forward_ad._current_level, int), CHANGED + "forward_ad._current_level is no longer an int"
    assert torch._C._FunctionBase in Function.__mro__, (
        CHANGED + "autograd.Function no longer derives from torch._C._FunctionBase, whose apply plain_apply calls"
    )


def test_forward_mode_is_off_in_plain_code_and_on_under_forward_ad_and_torch_func() -> None:
    assert not forward_mode(), CHANGED + "forward_mode() is True with no forward AD running"
    seen: list[bool] = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append(forward_mode())
        return x.sin()

    torch.func.jvp(probe, (torch.randn(3),), (torch.randn(3),))
    torch.func.vmap(probe)(torch.randn(2, 3))
    with forward_ad.dual_level():
        seen.append(forward_mode())
    assert seen == [True, True, True], (
        CHANGED + f"forward_mode() under (torch.func.jvp, torch.func.vmap, forward_ad.dual_level) gave {seen}: "
        "forward_ad._current_level or torch._C._are_functorch_transforms_active changed meaning"
    )
    assert not forward_mode(), CHANGED + "forward_mode() stays True after the forward-AD level has closed"


def test_plain_apply_is_function_apply() -> None:
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    ours, theirs = plain_apply(Square, (x,)), Square.apply(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert type(ours.grad_fn) is type(theirs.grad_fn), (
        CHANGED + f"plain_apply made a {type(ours.grad_fn).__name__} node, Function.apply a "
        f"{type(theirs.grad_fn).__name__}: torch._C._FunctionBase.apply no longer builds the Function's node"
    )
    (grad,) = torch.autograd.grad(ours.sum(), x)
    torch.testing.assert_close(grad, 2 * x.detach(), rtol=0, atol=0)


def test_plain_apply_unwraps_a_tensor_left_over_from_a_finished_transform() -> None:
    escaped: list[torch.Tensor] = []

    def leak(x: torch.Tensor) -> torch.Tensor:
        escaped.append(x)
        return x.sin()

    torch.func.grad(leak)(torch.tensor(0.5, dtype=torch.float64))
    leftover = escaped[0]
    unwrapped = torch._C._functorch.unwrap_if_dead(leftover)
    assert not torch._C._functorch.is_functorch_wrapped_tensor(unwrapped), (
        CHANGED + "torch._C._functorch.unwrap_if_dead no longer unwraps a tensor from a finished transform"
    )
    torch.testing.assert_close(plain_apply(Square, (leftover,)), Square.apply(leftover), rtol=0, atol=0)


def test_any_autocast_tracks_torch_autocast() -> None:
    assert not any_autocast(), CHANGED + "any_autocast() is True outside autocast"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = any_autocast()
    assert inside, CHANGED + "torch._C._is_any_autocast_enabled() is False inside torch.autocast('cpu')"
    assert not any_autocast(), CHANGED + "any_autocast() stays True after torch.autocast has exited"


def test_saved_tensor_hooks_tracks_torchs_context_managers() -> None:
    assert not saved_tensor_hooks(), CHANGED + "saved_tensor_hooks() is True with no hooks"
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        inside = saved_tensor_hooks()
        with torch.autograd.graph.save_on_cpu():
            nested = saved_tensor_hooks()
    assert inside and nested, CHANGED + "_top_saved_tensors_default_hooks(False) is None inside saved_tensors_hooks"
    assert not saved_tensor_hooks(), CHANGED + "saved_tensor_hooks() stays True after the hooks were popped"


def _hook(*args: object) -> None:
    return None


MODULE_HOOKS: list[Callable[[torch.nn.Module], torch.utils.hooks.RemovableHandle]] = [
    lambda m: m.register_forward_hook(_hook),
    lambda m: m.register_forward_pre_hook(_hook),
    lambda m: m.register_full_backward_hook(_hook),
    lambda m: m.register_full_backward_pre_hook(_hook),
]
GLOBAL_HOOKS: list[Callable[[], torch.utils.hooks.RemovableHandle]] = [
    lambda: torch.nn.modules.module.register_module_forward_hook(_hook),
    lambda: torch.nn.modules.module.register_module_forward_pre_hook(_hook),
    lambda: torch.nn.modules.module.register_module_full_backward_hook(_hook),
    lambda: torch.nn.modules.module.register_module_full_backward_pre_hook(_hook),
]
HOOK_IDS = ["forward", "forward_pre", "full_backward", "full_backward_pre"]


@pytest.mark.parametrize("register", MODULE_HOOKS, ids=HOOK_IDS)
def test_has_hooks_sees_each_kind_of_module_hook(register: Callable) -> None:
    plain, hooked = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert not has_hooks(plain, hooked)
    handle = register(hooked)
    assert has_hooks(plain, hooked) and not has_hooks(plain), (
        CHANGED + "a hook registered through the public API no longer lands in the dict has_hooks reads"
    )
    handle.remove()
    assert not has_hooks(hooked)


@pytest.mark.parametrize("register", GLOBAL_HOOKS, ids=HOOK_IDS)
def test_has_hooks_sees_each_kind_of_global_hook(register: Callable) -> None:
    handle = register()
    try:
        assert has_hooks(torch.nn.Linear(2, 2)), (
            CHANGED + "a global module hook no longer lands in torch.nn.modules.module._global_*_hooks"
        )
    finally:
        handle.remove()
    assert not has_hooks(torch.nn.Linear(2, 2))


def test_has_hooks_reads_the_dicts_module_call_reads() -> None:
    # Module.__call__ skips straight to forward unless one of these dicts is non-empty; a new kind
    # of hook in torch would need has_hooks to read it too
    try:
        source = inspect.getsource(torch.nn.Module._call_impl)
    except (OSError, TypeError):
        pytest.skip("torch's source is not available")
    condition = source[source.index("if not (") : source.index("):", source.index("if not ("))]
    theirs = set(re.findall(r"_\w+hooks", condition))
    ours = set(re.findall(r"_\w+hooks", inspect.getsource(internals.has_hooks)))
    assert theirs == ours, CHANGED + f"Module.__call__'s fast path now reads {sorted(theirs)}, has_hooks {sorted(ours)}"


def test_module_dicts_are_the_attributes() -> None:
    mlp = tnn.MLP([3, 4, 2])
    layers = mlp._modules["layers"]
    assert layers is mlp.layers, CHANGED + "Module._modules no longer holds the submodules"
    assert list(layers._modules.values()) == list(mlp.layers), CHANGED + "ModuleList._modules lost its order"
    layer = mlp.layers[0]
    assert layer._parameters["weight"] is layer.weight, CHANGED + "Module._parameters no longer holds the parameters"
    assert layer._parameters.get("bias") is layer.bias
    norm = torch.nn.BatchNorm1d(3)
    assert norm._buffers["running_mean"] is norm.running_mean, CHANGED + "Module._buffers no longer holds the buffers"
    assert norm._buffers["num_batches_tracked"] is norm.num_batches_tracked
    untracked = torch.nn.BatchNorm1d(3, track_running_stats=False)  # its buffers registered as None
    names = ("running_mean", "running_var", "num_batches_tracked")
    assert [untracked._buffers.get(name) for name in names] == [None] * 3


def test_the_private_torch_ops_named_anywhere_in_torchbp_exist() -> None:
    # ``torch._foreach_*`` in the update rules, and any other ``torch._name`` the package calls
    package = Path(internals.__file__).parent.parent
    names = {name for path in package.rglob("*.py") for name in re.findall(r"\btorch\._([a-z]\w*)\(", path.read_text())}
    missing = sorted(f"torch._{name}" for name in names if not hasattr(torch, "_" + name))
    assert not missing, CHANGED + f"torchbp calls {missing}, which torch no longer has"


def test_the_optimizer_hook_dicts_the_update_rules_read_are_torchs() -> None:
    from torch.optim import optimizer

    handles = [optimizer.register_optimizer_step_pre_hook(_hook), optimizer.register_optimizer_step_post_hook(_hook)]
    try:
        assert optimizer._global_optimizer_pre_hooks and optimizer._global_optimizer_post_hooks, (
            CHANGED + "register_optimizer_step_*_hook no longer registers into _global_optimizer_*_hooks"
        )
    finally:
        for handle in handles:
            handle.remove()
