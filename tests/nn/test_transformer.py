"""Multi-head attention and the transformer layers, converted, against torch's own modules:
outputs and every gradient to 1e-10 in float64, no native backward node for attention, layer
norm, linear or activation ops, torch.func and torch.compile."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.attention

import torchbp
from tests.test_layer_harness import NATIVE_ALLOWED, graph_node_names

F64 = {"rtol": 1e-10, "atol": 1e-10}
# add_bias_kv appends its rows to K and V by a repeat and a concatenation: layout, not arithmetic
LAYOUT = NATIVE_ALLOWED | {"CatBackward0", "RepeatBackward0"}
L, S, N, E = 5, 4, 3, 8


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


def _compare(
    theirs: torch.nn.Module, inputs: tuple[torch.Tensor, ...], call: Any, same: bool = False, device: str = "cpu"
) -> torch.Tensor:
    """Run ``call(module, *inputs)`` on ``theirs`` and on a converted copy (one RNG state each), on
    ``device``; outputs, input gradients and parameter gradients agree to 1e-10. Returns our output."""
    theirs = copy.deepcopy(theirs).to(device)
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    results = []
    for module in (ours, theirs):
        leaves = tuple(x.to(device).requires_grad_() if x.is_floating_point() else x.to(device) for x in inputs)
        if same:
            leaves = (leaves[0],) * len(leaves)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            out = call(module, *leaves)
        output, weights = out if isinstance(out, tuple) else (out, None)
        grad = torch.linspace(-1, 1, output.numel(), dtype=output.dtype, device=output.device).reshape(output.shape)
        output.backward(grad)
        grads = [x.grad for x in leaves if x.requires_grad] + [p.grad for p in module.parameters()]
        results.append((output, weights, grads))
    (o1, w1, g1), (o2, w2, g2) = results
    torch.testing.assert_close(o1, o2, **F64)
    if w2 is not None:
        torch.testing.assert_close(w1, w2, **F64)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **F64)
    return o1


def _explicit_only(output: torch.Tensor) -> None:
    left = graph_node_names(output) - LAYOUT
    assert all(name.endswith("FunctionBackward") for name in left), left
    assert "AttentionFunctionBackward" in left


def _attention(**options: Any) -> torch.nn.Module:
    return _randomised(torch.nn.MultiheadAttention(E, 2, dtype=torch.float64, **options))


def _qkv(batch_first: bool = False, kdim: int = E, vdim: int = E) -> tuple[torch.Tensor, ...]:
    def make(length: int, width: int) -> torch.Tensor:
        shape = (N, length, width) if batch_first else (length, N, width)
        return torch.randn(shape, dtype=torch.float64)

    return make(L, E), make(S, kdim), make(S, vdim)


def _sparse_mask(*shape: int) -> torch.Tensor:
    """A boolean mask, True (masked) at random places but never on the first key, so no row is masked everywhere."""
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.7
    mask[..., 0] = False
    return mask


_PADDING = torch.tensor([[False, False, False, True], [False] * 4, [True, False, False, False]])

MHA_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("weights averaged", {}, {}),
    ("weights per head", {}, {"average_attn_weights": False}),
    ("no weights", {}, {"need_weights": False}),
    ("kdim and vdim", {"kdim": 6, "vdim": 7}, {}),
    ("key_padding_mask", {}, {"key_padding_mask": _PADDING}),
    ("float masks", {}, {"key_padding_mask": torch.zeros(N, S).masked_fill(_PADDING, float("-inf")).double()}),
    ("3-D boolean attn_mask", {}, {"attn_mask": _sparse_mask(N * 2, L, S)}),
    ("add_bias_kv with masks", {"add_bias_kv": True}, {"key_padding_mask": _PADDING, "attn_mask": _sparse_mask(L, S)}),
    ("add_zero_attn", {"add_zero_attn": True}, {"key_padding_mask": _PADDING}),
    ("bias_kv, zero_attn, no bias", {"add_zero_attn": True, "add_bias_kv": True, "bias": False}, {}),
    ("dropout (weights path: torch's mask)", {"dropout": 0.3}, {}),
]


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize(("label", "options", "call"), MHA_CASES, ids=[c[0] for c in MHA_CASES])
def test_multihead_attention_equals_torch(
    device: str, label: str, options: dict[str, Any], call: dict[str, Any], batch_first: bool
) -> None:
    theirs = _attention(batch_first=batch_first, **options)
    kdim, vdim = options.get("kdim", E), options.get("vdim", E)
    call = {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in call.items()}
    output = _compare(theirs, _qkv(batch_first, kdim, vdim), lambda m, q, k, v: m(q, k, v, **call), device=device)
    _explicit_only(output)


@pytest.mark.parametrize("need_weights", [False, True])
def test_self_attention_with_causal_hint_equals_torch(need_weights: bool) -> None:
    mask = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)
    call = {"attn_mask": mask, "is_causal": True, "need_weights": need_weights}
    output = _compare(_attention(), _qkv()[:1] * 3, lambda m, q, k, v: m(q, k, v, **call), same=True)
    _explicit_only(output)


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
def test_cross_attention_with_one_tensor_for_keys_and_values_equals_torch(batch_first: bool) -> None:
    q, kv, _ = _qkv(batch_first)
    output = _compare(_attention(batch_first=batch_first), (q, kv), lambda m, q, kv: m(q, kv, kv))
    _explicit_only(output)


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
def test_self_attention_projects_query_key_and_value_in_one_product(batch_first: bool) -> None:
    x = _qkv(batch_first)[0].requires_grad_()
    output, _ = torchbp.nn.convert(_attention(batch_first=batch_first))(x, x, x)
    nodes, stack = [], [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in nodes:
            nodes.append(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    # the packed (3E, E) in-projection and the out-projection
    assert [type(node).__name__ for node in nodes].count("LinearFunctionBackward") == 2


@pytest.mark.parametrize("mask", ["src_mask", "src_key_padding_mask"])
def test_a_bfloat16_layer_takes_float32_masks_as_torchs(mask: str) -> None:
    """Float masks of another floating dtype (``generate_square_subsequent_mask`` makes float32 ones)
    are added in the layer's dtype, as torch's attention adds them."""
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True).bfloat16()
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    x = torch.randn(3, 5, 8, dtype=torch.bfloat16)
    if mask == "src_mask":
        options = {"src_mask": torch.nn.Transformer.generate_square_subsequent_mask(5)}
    else:
        options = {"src_key_padding_mask": torch.zeros(3, 5).index_fill_(1, torch.tensor([4]), float("-inf"))}
    z_ours, z_theirs = ours(x, **options), theirs(x, **options)
    assert z_ours.dtype == z_theirs.dtype == torch.bfloat16
    torch.testing.assert_close(z_ours, z_theirs, rtol=2e-2, atol=2e-2)


def test_attention_in_eval_mode_drops_nothing() -> None:
    _compare(_attention(dropout=0.5).eval(), _qkv(), lambda m, q, k, v: m(q, k, v))


def test_unbatched_attention_equals_torch() -> None:
    q, k, v = (t[:, 0] for t in _qkv())
    call = {"key_padding_mask": _PADDING[0], "attn_mask": _sparse_mask(2, L, S)}
    _compare(_attention(), (q, k, v), lambda m, q, k, v: m(q, k, v, **call))


def test_attention_weights_are_the_softmax_rows() -> None:
    ours = torchbp.nn.convert(_attention())
    _, weights = ours(*_qkv(), average_attn_weights=False)
    assert weights is not None and weights.shape == (N, 2, L, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(N, 2, L, dtype=torch.float64))


def _encoder_layer(norm_first: bool, activation: str, batch_first: bool = True) -> torch.nn.TransformerEncoderLayer:
    return torch.nn.TransformerEncoderLayer(
        E, 2, 16, 0.0, activation, batch_first=batch_first, norm_first=norm_first, dtype=torch.float64
    )


STACKS = [(norm_first, activation) for norm_first in (False, True) for activation in ("relu", "gelu")]


@pytest.mark.parametrize(("norm_first", "activation"), STACKS)
def test_encoder_stack_equals_torch(device: str, norm_first: bool, activation: str) -> None:
    encoder = _randomised(
        torch.nn.TransformerEncoder(
            _encoder_layer(norm_first, activation),
            2,
            norm=torch.nn.LayerNorm(E, dtype=torch.float64),
            enable_nested_tensor=False,
        )
    )
    x = torch.randn(N, L, E, dtype=torch.float64)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64, device=device)
    padding = torch.zeros(N, L, dtype=torch.float64, device=device)
    padding[0, -2:] = float("-inf")
    output = _compare(encoder, (x,), lambda m, x: m(x, mask=mask, src_key_padding_mask=padding), device=device)
    _explicit_only(output)
    output = _compare(encoder, (x,), lambda m, x: m(x, mask=mask, is_causal=True), device=device)
    _explicit_only(output)


@pytest.mark.parametrize(("norm_first", "activation"), STACKS)
def test_decoder_stack_equals_torch(device: str, norm_first: bool, activation: str) -> None:
    layer = torch.nn.TransformerDecoderLayer(E, 2, 16, 0.0, activation, norm_first=norm_first, dtype=torch.float64)
    decoder = _randomised(torch.nn.TransformerDecoder(layer, 2, norm=torch.nn.LayerNorm(E, dtype=torch.float64)))
    target, memory = torch.randn(L, N, E, dtype=torch.float64), torch.randn(S, N, E, dtype=torch.float64)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64, device=device)
    output = _compare(
        decoder, (target, memory), lambda m, t, mem: m(t, mem, tgt_mask=mask, tgt_is_causal=True), device=device
    )
    _explicit_only(output)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_a_layer_in_training_draws_torchs_dropout_masks(kind: str, norm_first: bool) -> None:
    # every dropout of the layer on, the attention's own too: each mask is drawn over a tensor laid
    # out as torch's, so one seed gives torch's masks
    if kind == "encoder":
        layer = torch.nn.TransformerEncoderLayer(E, 2, 16, 0.3, norm_first=norm_first, dtype=torch.float64)
        inputs: tuple[torch.Tensor, ...] = (torch.randn(L, N, E, dtype=torch.float64),)
    else:
        layer = torch.nn.TransformerDecoderLayer(E, 2, 16, 0.3, norm_first=norm_first, dtype=torch.float64)
        inputs = (torch.randn(L, N, E, dtype=torch.float64), torch.randn(S, N, E, dtype=torch.float64))
    layer = _randomised(layer)
    output = _compare(layer, inputs, lambda m, *x: m(*x))
    without_dropout = _compare(layer.eval(), inputs, lambda m, *x: m(*x))
    assert not torch.allclose(output, without_dropout)  # the masks were drawn


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
def test_attention_output_is_laid_out_as_torchs(batch_first: bool) -> None:
    q, k, v = _qkv(batch_first)
    theirs = torch.nn.MultiheadAttention(E, 2, batch_first=batch_first, dtype=torch.float64)
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    assert ours(q, k, v)[0].stride() == theirs(q, k, v)[0].stride()


def test_converted_layers_are_torchbp_twins_and_revert() -> None:
    encoder = torch.nn.TransformerEncoder(_encoder_layer(True, "gelu"), 2, enable_nested_tensor=False)
    torchbp.nn.convert(encoder)
    layer = encoder.layers[0]
    assert type(layer) is torchbp.nn.TransformerEncoderLayer
    assert type(layer.self_attn) is torchbp.nn.MultiheadAttention
    assert type(layer.self_attn.out_proj) is torchbp.nn.NonDynamicallyQuantizableLinear
    assert type(layer.norm1) is torchbp.nn.LayerNorm
    assert layer.activation is torch.nn.functional.gelu  # the attribute is left as it is
    report = torchbp.nn.conversion(encoder)
    assert not report.native, report
    assert report.converted["layers.0.self_attn"] == "MultiheadAttention"
    torchbp.nn.revert(encoder)
    assert type(encoder.layers[1].self_attn) is torch.nn.MultiheadAttention
    assert type(encoder.layers[1]) is torch.nn.TransformerEncoderLayer


def test_an_activation_module_is_converted_as_a_module() -> None:
    layer = torch.nn.TransformerEncoderLayer(E, 2, 16, 0.0, torch.nn.GELU(), dtype=torch.float64)
    _compare(_randomised(layer), (torch.randn(L, N, E, dtype=torch.float64),), lambda m, x: m(x))
    assert type(torchbp.nn.convert(layer).activation) is torchbp.nn.GELU


def test_torch_func_grad_through_a_converted_encoder_equals_torch() -> None:
    # training mode (dropout 0): in eval, torch's own layer takes its fused inference kernel
    # under torch.func, which has no forward-mode derivative
    encoder = _randomised(torch.nn.TransformerEncoder(_encoder_layer(True, "relu"), 2, enable_nested_tensor=False))
    ours = torchbp.nn.convert(copy.deepcopy(encoder))
    x = torch.randn(N, L, E, dtype=torch.float64)

    def loss(model: torch.nn.Module) -> Any:
        params = dict(model.named_parameters())
        return lambda p: torch.func.functional_call(model, p, (x,)).square().sum(), params

    for_ours, p_ours = loss(ours)
    for_theirs, p_theirs = loss(encoder)
    g_ours, g_theirs = torch.func.grad(for_ours)(p_ours), torch.func.grad(for_theirs)(p_theirs)
    for name in g_theirs:
        torch.testing.assert_close(g_ours[name], g_theirs[name], **F64)
    tangent = {name: torch.randn_like(p) for name, p in p_ours.items()}
    _, jvp_ours = torch.func.jvp(for_ours, (p_ours,), (tangent,))
    # torch's fused CPU attention has no forward-mode derivative; its math path has
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        _, jvp_theirs = torch.func.jvp(for_theirs, (p_theirs,), (tangent,))
    torch.testing.assert_close(jvp_ours, jvp_theirs, **F64)


def test_torch_compile_of_a_converted_encoder_equals_eager() -> None:
    encoder = torchbp.nn.convert(
        torch.nn.TransformerEncoder(_encoder_layer(False, "gelu"), 2, enable_nested_tensor=False).float()
    )
    x = torch.randn(N, L, E)
    compiled = torch.compile(encoder, backend="aot_eager", fullgraph=True)
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_eager, out_compiled = encoder(x_eager), compiled(x_compiled)
    torch.testing.assert_close(out_compiled, out_eager)
    out_eager.square().sum().backward()
    out_compiled.square().sum().backward()
    torch.testing.assert_close(x_compiled.grad, x_eager.grad)


def test_bad_heads_and_masks_are_named() -> None:
    attention = torchbp.nn.MultiheadAttention(E, 2)
    q, k, v = (t.float() for t in _qkv())
    with pytest.raises(ValueError, match=r"key_padding_mask: expected shape \(3, 4\).*got shape \(3, 5\)"):
        attention(q, k, v, key_padding_mask=torch.zeros(N, S + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask: expected shape \(5, 4\) or \(6, 5, 4\).*got shape \(4, 4\)"):
        attention(q, k, v, attn_mask=torch.zeros(S, S, dtype=torch.bool))
    with pytest.raises(
        TypeError, match=r"attn_mask: expected a boolean or a floating-point mask, got dtype torch.int64"
    ):
        attention(q, k, v, attn_mask=torch.zeros(L, S, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"key: expected shape \(L, N, 8\).*got shape \(4, 3, 6\)"):
        attention(q, k[..., :6], v)
    broken = torchbp.nn.MultiheadAttention(E, 2)
    broken.num_heads = 3
    with pytest.raises(ValueError, match="num_heads: expected a positive number dividing embed_dim 8"):
        broken(q, k, v)
