"""The dp_sgd rule: clipping and noise by hand, its reduction to SGD, and training through fit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import torchbp


def _model() -> torch.nn.Module:
    return torchbp.nn.convert(
        torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    )


def _backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    with torchbp.per_example(model, "grad", "norm"):
        torch.nn.functional.cross_entropy(model(x), y).backward()


def test_step_clips_each_example_and_adds_seeded_noise() -> None:
    model = _model()
    x, y = torch.randn(6, 4).double(), torch.randint(0, 3, (6,))
    rule = torchbp.create_rule("dp_sgd", model, lr=0.5, max_grad_norm=0.3, noise_multiplier=1.5, noise_seed=7)
    _backward(model, x, y)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    samples = [p.grad_sample.clone() for p in params]
    rule.step()
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in samples]).norm(dim=0)
    clip = (0.3 / (norms + 1e-6)).clamp(max=1.0)
    assert (clip < 1).any() and (norms * clip <= 0.3 + 1e-9).all()
    generator = torch.Generator().manual_seed(7)
    for p, p0, g in zip(params, before, samples):
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        private = (torch.einsum("n,n...->...", clip, g) + 1.5 * 0.3 * noise) / 6
        torch.testing.assert_close(p.detach(), p0 - 0.5 * private, rtol=0, atol=1e-12)


def test_without_clipping_or_noise_it_is_sgd() -> None:
    model, twin = _model(), _model()
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(5, 4).double(), torch.randint(0, 3, (5,))
    private = torchbp.create_rule("dp_sgd", model, lr=0.1, max_grad_norm=1e9, noise_multiplier=0.0)
    plain = torchbp.create_rule("sgd", twin, lr=0.1)
    for _ in range(3):
        _backward(model, x, y)
        private.step()
        twin.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), y).backward()
        plain.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_every_group_clips_by_the_norm_over_all_the_rules_parameters() -> None:
    """Param groups with their own lr: ‖gₖ‖ is over every parameter of the rule, whichever group it is in."""
    model = _model()
    x, y = torch.randn(6, 4).double(), torch.randint(0, 3, (6,))
    groups = [{"params": model[0].parameters(), "lr": 0.5}, {"params": model[2].parameters(), "lr": 0.2}]
    rule = torchbp.create_rule("dp_sgd", groups, max_grad_norm=0.3, noise_multiplier=0.0)
    _backward(model, x, y)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    samples = [p.grad_sample.clone() for p in params]
    rule.step()
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in samples]).norm(dim=0)
    clip = (0.3 / (norms + 1e-6)).clamp(max=1.0)
    for p, p0, g, lr in zip(params, before, samples, (0.5, 0.5, 0.2, 0.2)):
        torch.testing.assert_close(p.detach(), p0 - lr * torch.einsum("n,n...->...", clip, g) / 6, rtol=0, atol=1e-12)


def test_a_step_without_per_example_gradients_says_how_to_get_them() -> None:
    model = _model()
    rule = torchbp.create_rule("dp_sgd", model, noise_seed=0)
    torch.nn.functional.cross_entropy(model(torch.randn(3, 4).double()), torch.tensor([0, 1, 2])).backward()
    with pytest.raises(RuntimeError, match="torchbp.per_example\\(model, 'grad', 'norm'\\)"):
        rule.step()
    with pytest.raises(ValueError, match="max_grad_norm: expected a value > 0"):
        torchbp.create_rule("dp_sgd", model, max_grad_norm=0.0)


def _separable() -> tuple[torch.Tensor, torch.Tensor]:
    """256 random points in 4-D, in 3 classes by the signs of the first two coordinates."""
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _fit_dp_sgd(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], graph_free: bool) -> list[dict]:
    """Four epochs of ``fit`` with the dp_sgd rule (clipping at 1, noise 0.5, seeded)."""
    return torchbp.fit(
        model,
        data,
        cost="cross_entropy",
        rule="dp_sgd",
        lr=0.5,
        max_grad_norm=1.0,
        noise_multiplier=0.5,
        noise_seed=3,
        seed=1,
        epochs=4,
        batch_size=32,
        verbose=False,
        graph_free=graph_free,
    )


@pytest.mark.parametrize("graph_free", [True, False])
def test_fit_opens_the_context_for_the_rule_and_learns(graph_free: bool) -> None:
    data = _separable()
    histories = []
    for _ in range(2):
        torch.manual_seed(0)
        histories.append(_fit_dp_sgd(torchbp.nn.MLP([4, 16, 3], "tanh", "identity"), data, graph_free))
    losses = [h["train_loss"] for h in histories[0]]
    assert losses[-1] < 0.8 * losses[0]
    assert histories[0] == [dict(h, seconds=a["seconds"]) for h, a in zip(histories[1], histories[0])]


@pytest.mark.parametrize("graph_free", [True, False])
def test_fit_under_autocast_clips_as_in_float32(graph_free: bool) -> None:
    """Under CPU bfloat16 autocast the layers compute with cast copies of the weights (the MLP's
    graph-free step, a converted Sequential's layers): the rule still finds every parameter's
    per-example gradients, and learns about as in float32."""
    data = _separable()
    histories = []
    for autocast in (True, False):
        torch.manual_seed(0)
        if graph_free:
            model = torchbp.nn.MLP([4, 16, 3], "tanh", "identity")
        else:
            model = torchbp.nn.convert(
                torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
            )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            histories.append(_fit_dp_sgd(model, data, graph_free))
    low, full = ([h["train_loss"] for h in history] for history in histories)
    assert low[-1] < 0.8 * low[0]
    assert low == pytest.approx(full, rel=0.05)


def test_tensorboard_shows_per_example_norms_per_layer_when_asked(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchbp.nn.MLP([4, 6, 3])
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    torchbp.fit(model, (x, y), epochs=1, batch_size=40, logdir=tmp_path, per_example=("norm",), verbose=False, seed=0)
    events = EventAccumulator(str(tmp_path / "torchbp-run" / "version_0"), size_guidance={"histograms": 0})
    events.Reload()
    assert {"per_example_norm/layers.0", "per_example_norm/layers.1"} <= set(events.Tags()["histograms"])
    (histogram,) = events.Histograms("per_example_norm/layers.1")
    layer = model.layers[1]
    expected = torch.stack([layer.weight.grad_sample_norm, layer.bias.grad_sample_norm]).norm(dim=0)
    assert histogram.histogram_value.num == 40
    assert histogram.histogram_value.sum == pytest.approx(expected.sum().item(), rel=1e-5)
    torchbp.fit(torchbp.nn.MLP([4, 6, 3]), (x, y), epochs=1, batch_size=40, logdir=tmp_path, verbose=False, seed=0)
    plain = EventAccumulator(str(tmp_path / "torchbp-run" / "version_1"), size_guidance={"histograms": 0})
    plain.Reload()
    assert not any(tag.startswith("per_example_norm/") for tag in plain.Tags()["histograms"])


def test_a_resumed_rule_draws_the_noise_an_unbroken_one_would() -> None:
    x, y = torch.randn(6, 4).double(), torch.randint(0, 3, (6,))
    model = _model()
    resumed_model = _model()
    rule = torchbp.create_rule("dp_sgd", model, lr=0.1, noise_multiplier=1.0, noise_seed=5)
    for _ in range(2):
        _backward(model, x, y)
        rule.step()
    resumed_model.load_state_dict(model.state_dict())
    resumed = torchbp.create_rule("dp_sgd", resumed_model, lr=0.1, noise_multiplier=1.0, noise_seed=99)
    resumed.load_state_dict(rule.state_dict())
    assert resumed.noise_seed == 5  # the run's seed, for a device whose noise has not been drawn yet
    for m, r in ((model, rule), (resumed_model, resumed)):
        _backward(m, x, y)
        r.step()
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)


def _ddp_worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    rule = torchbp.create_rule("dp_sgd", model, lr=0.5, noise_seed=0)
    with torchbp.per_example(model, "grad", "norm"):
        torch.nn.functional.cross_entropy(model(torch.randn(4, 4).double()), torch.randint(0, 3, (4,))).backward()
    try:
        rule.step()
    except RuntimeError as error:
        message = str(error)
    else:
        message = "no error"
    if rank == 0:
        Path(out).write_text(message)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)  # as tests/test_ecosystem.py: gloo's threads can abort the interpreter's teardown


def test_under_ddp_a_step_is_refused_by_name(tmp_path: Path) -> None:
    out = tmp_path / "message.txt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    assert "dp_sgd runs in one process only, this is one of 2 (DistributedDataParallel)" in out.read_text()
