"""The tiny causal language model: equal to its native twin, learns the digit tasks through
``torchbp.fit``, and logs a δ norm per block to TensorBoard."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import torchbp
from tests.test_layer_harness import NATIVE_ALLOWED, graph_node_names
from torchbp.nn.models import CausalLM
from torchbp.training.datasets import digit_strings

F64 = {"rtol": 1e-10, "atol": 1e-10}


def test_causal_lm_equals_its_native_twin() -> None:
    ours = CausalLM(11, 8, width=16, heads=2, blocks=2, scored=4).double()
    native = torchbp.nn.revert(copy.deepcopy(ours))
    assert type(native.blocks[0].self_attn) is torch.nn.MultiheadAttention
    tokens = digit_strings(5, 4, seed=3).inputs
    out_ours, out_native = ours(tokens), native(tokens)
    torch.testing.assert_close(out_ours, out_native, **F64)
    delta = torch.randn_like(out_native)
    out_ours.backward(delta)
    out_native.backward(delta)
    for (name, p_ours), p_native in zip(ours.named_parameters(), native.parameters()):
        torch.testing.assert_close(p_ours.grad, p_native.grad, **F64, msg=lambda m, n=name: f"{n}: {m}")
    left = graph_node_names(out_ours) - NATIVE_ALLOWED - {"SliceBackward0"}  # SliceBackward0: the scored positions
    assert all(name.endswith("FunctionBackward") for name in left), left


def test_causal_lm_refuses_a_sequence_longer_than_its_context() -> None:
    with pytest.raises(ValueError, match=r"tokens: expected at most context = 4 positions, got shape \(2, 6\)"):
        CausalLM(11, 4, width=8, heads=2, blocks=1)(torch.zeros(2, 6, dtype=torch.long))


def test_digit_strings_pose_the_task() -> None:
    data = digit_strings(3, 4, "reverse", seed=0)
    inputs, targets = data.inputs, data.targets
    assert inputs.shape == (3, 8) and targets.shape == (3, 4)
    torch.testing.assert_close(targets, inputs[:, :4].flip(1))
    assert bool((inputs[:, 4] == 10).all())
    torch.testing.assert_close(inputs[:, 5:], targets[:, :3])
    with pytest.raises(ValueError, match="task: expected 'copy' or 'reverse', got 'sort'"):
        digit_strings(3, 4, "sort")


def test_fit_teaches_the_causal_lm_to_copy_digits_and_logs_a_delta_norm_per_block(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train, val = digit_strings(1024, 3, "copy", seed=0), digit_strings(256, 3, "copy", seed=1)
    model = CausalLM(11, 6, width=32, heads=2, blocks=1, scored=3)
    history = torchbp.fit(
        model,
        (train.inputs, train.targets),
        cost="cross_entropy",
        rule="adam",
        lr=3e-3,
        epochs=3,
        batch_size=32,
        val_data=(val.inputs, val.targets),
        logdir=tmp_path,
        seed=0,
        verbose=False,
    )
    assert history[-1]["val_accuracy"] >= 0.95, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    events = EventAccumulator(str(next(tmp_path.glob("*/version_0"))), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for layer in ("blocks.0.self_attn", "blocks.0.norm1", "blocks.0.linear1", "tokens", "norm", "head"):
        values = [e.value for e in events.Scalars(f"delta_norm/{layer}")]
        assert len(values) == 3 and all(v > 0 for v in values), (layer, tags)
