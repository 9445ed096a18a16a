"""Update rules: every registered rule checked generically; each built-in follows its torch.optim twin."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

import torchbp

# rules that read per-example gradients (dp_sgd) step only after a backward pass inside
# torchbp.per_example: tests/test_dp_sgd.py checks them on models
RULE_NAMES = [entry.name for entry in torchbp.list_rules() if not getattr(entry.spec.optimizer, "per_example", ())]


def _grid(**options: list) -> list[dict]:
    return [dict(zip(options, values)) for values in itertools.product(*options.values())]


TWINS = (
    [
        ("sgd", torch.optim.SGD, dict(lr=0.05, **o))
        for o in _grid(momentum=[0.0, 0.9], dampening=[0.0, 0.3], weight_decay=[0.0, 0.01])
    ]
    + [("sgd", torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=wd)) for wd in (0.0, 0.01)]
    + [
        ("adagrad", torch.optim.Adagrad, dict(lr=0.1, **o))
        for o in _grid(lr_decay=[0.0, 0.01], weight_decay=[0.0, 0.01], initial_accumulator_value=[0.0, 0.1])
    ]
    + [
        ("rmsprop", torch.optim.RMSprop, dict(lr=0.01, **o))
        for o in _grid(centered=[False, True], momentum=[0.0, 0.9], weight_decay=[0.0, 0.01])
    ]
    + [("adam", torch.optim.Adam, dict(lr=0.01, **o)) for o in _grid(amsgrad=[False, True], weight_decay=[0.0, 0.01])]
    + [("adamw", torch.optim.AdamW, dict(lr=0.01, **o)) for o in _grid(amsgrad=[False, True], weight_decay=[0.0, 0.1])]
    + [("adadelta", torch.optim.Adadelta, dict(lr=1.0, weight_decay=wd)) for wd in (0.0, 0.01)]
    + [("adamax", torch.optim.Adamax, dict(lr=0.01, weight_decay=wd)) for wd in (0.0, 0.01)]
)


def _problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A non-convex regression: a 4-8-3 tanh network on fixed random data, in float64."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    y = torch.sin(x @ torch.randn(4, 3, generator=generator, dtype=torch.float64))
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    return model, x, y


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def _train_alike(
    ours: tuple[torch.nn.Module, torch.optim.Optimizer],
    theirs: tuple[torch.nn.Module, torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
) -> None:
    """``steps`` steps of each (model, rule) pair on ``_loss``, in lockstep."""
    for _ in range(steps):
        for model, rule in (ours, theirs):
            rule.zero_grad()
            _loss(model, x, y).backward()
            rule.step()


@pytest.mark.parametrize("name, twin, hyperparameters", TWINS, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_rule_follows_its_torch_twin(name: str, twin: type, hyperparameters: dict) -> None:
    ours_model, x, y = _problem()
    theirs_model = copy.deepcopy(ours_model)
    ours = torchbp.create_rule(name, ours_model.parameters(), **hyperparameters)
    theirs = twin(theirs_model.parameters(), **hyperparameters)
    _train_alike((ours_model, ours), (theirs_model, theirs), x, y, steps=100)
    for p_ours, p_theirs in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(p_ours, p_theirs, rtol=1e-10, atol=1e-12)


def test_every_builtin_and_extras_rule_is_compared_with_a_twin() -> None:
    # lion has no torch.optim twin: test_lion_follows_its_published_update writes its update out
    # dp_sgd has none either (it clips per-example gradients): tests/test_dp_sgd.py writes its step out
    first_party = {entry.name for entry in torchbp.list_rules() if entry.distribution in ("torchbp", "torchbp-extras")}
    assert first_party - {"lion", "dp_sgd"} <= {name for name, *_ in TWINS}
    assert {"lion", "dp_sgd"} <= first_party


def test_lion_follows_its_published_update() -> None:
    model, x, y = _problem()
    reference = copy.deepcopy(model)
    lr, beta1, beta2, weight_decay = 1e-3, 0.9, 0.99, 0.1
    rule = torchbp.create_rule("lion", model.parameters(), lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)
    moments = [torch.zeros_like(p) for p in reference.parameters()]
    for _ in range(100):
        rule.zero_grad()
        _loss(model, x, y).backward()
        rule.step()
        reference.zero_grad()
        _loss(reference, x, y).backward()
        with torch.no_grad():
            for p, m in zip(reference.parameters(), moments):
                update = torch.sign(beta1 * m + (1 - beta1) * p.grad)
                p.mul_(1 - lr * weight_decay).sub_(lr * update)
                m.mul_(beta2).add_((1 - beta2) * p.grad)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def _bowl() -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) = ½ xᵀ A x with A positive definite, from x₀ = (1, −2, 0.5)."""
    a = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 2.0]], dtype=torch.float64)
    return a, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_rule_decreases_a_convex_quadratic(name: str) -> None:
    a, x0 = _bowl()
    x = x0.clone().requires_grad_()
    rule = torchbp.create_rule(name, [x])

    def f() -> torch.Tensor:
        return 0.5 * x @ a @ x

    start = f().item()
    for _ in range(50):
        rule.zero_grad()
        f().backward()
        rule.step()
    assert f().item() < start


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_rule_resumes_bit_identically_from_its_state_dict(name: str) -> None:
    model, x, y = _problem()
    rule = torchbp.create_rule(name, model, lr=1e-2)

    def steps(model: torch.nn.Module, rule: torch.optim.Optimizer, count: int) -> None:
        for _ in range(count):
            rule.zero_grad()
            _loss(model, x, y).backward()
            rule.step()

    steps(model, rule, 10)
    saved_model, saved_rule = copy.deepcopy(model.state_dict()), copy.deepcopy(rule.state_dict())
    steps(model, rule, 10)

    resumed_model, _, _ = _problem()
    resumed_model.load_state_dict(saved_model)
    resumed_rule = torchbp.create_rule(name, resumed_model, lr=1e-2)
    resumed_rule.load_state_dict(saved_rule)
    steps(resumed_model, resumed_rule, 10)
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_rule_works_with_param_groups_and_schedulers(name: str) -> None:
    model, x, y = _problem()
    rule = torchbp.create_rule(
        name, [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 1e-3}], lr=1e-2
    )
    scheduler = torch.optim.lr_scheduler.StepLR(rule, step_size=1, gamma=0.5)
    for _ in range(3):
        rule.zero_grad()
        _loss(model, x, y).backward()
        rule.step()
        scheduler.step()
    assert [group["lr"] for group in rule.param_groups] == pytest.approx([1e-2 / 8, 1e-3 / 8])


def test_create_rule_from_a_model_skips_decay_on_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    rule = torchbp.create_rule("adamw", model, weight_decay=0.05)
    decay, no_decay = rule.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 4  # two biases, the norm's weight and bias


@pytest.mark.parametrize("weight_decay", [None, 0.0], ids=["rule's default", "none"])
def test_create_rule_from_a_model_reads_the_rules_own_weight_decay(weight_decay: float | None) -> None:
    # adamw decays by 0.01 unless told otherwise: the biases are then spared as for a decay given by hand
    ours_model, x, y = _problem()
    theirs_model = copy.deepcopy(ours_model)
    given = {} if weight_decay is None else {"weight_decay": weight_decay}
    ours = torchbp.create_rule("adamw", ours_model, lr=0.1, **given)
    matrices = [p for p in theirs_model.parameters() if p.ndim > 1]
    vectors = [p for p in theirs_model.parameters() if p.ndim <= 1]
    if weight_decay is None:
        theirs = torch.optim.AdamW([{"params": matrices}, {"params": vectors, "weight_decay": 0.0}], lr=0.1)
    else:
        theirs = torch.optim.AdamW(theirs_model.parameters(), lr=0.1, weight_decay=weight_decay)
    assert len(ours.param_groups) == len(theirs.param_groups)
    _train_alike((ours_model, ours), (theirs_model, theirs), x, y, steps=3)
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_unknown_rule_and_hyperparameter_are_explained() -> None:
    with pytest.raises(ValueError, match="unknown rule 'adamm'; registered rules: .*adam, .*sgd"):
        torchbp.create_rule("adamm", [torch.zeros(1, requires_grad=True)])
    with pytest.raises(TypeError, match="unknown hyperparameter.*beta1.*accepted: lr=0.001, betas="):
        torchbp.create_rule("adam", [torch.zeros(1, requires_grad=True)], beta1=0.9)
    with pytest.raises(ValueError, match="lr: expected a value >= 0.0, got -1"):
        torchbp.create_rule("sgd", [torch.zeros(1, requires_grad=True)], lr=-1)


def test_list_rules_filters_by_pattern() -> None:
    assert [entry.name for entry in torchbp.list_rules("adam*")] == ["adam", "adamax", "adamw"]


# the last, most-featured configuration of each rule
ONE_PER_RULE = {name: (twin, hyperparameters) for name, twin, hyperparameters in TWINS}


@pytest.mark.parametrize("name", ONE_PER_RULE)
def test_rule_follows_its_torch_twin_with_param_groups_and_a_scheduler(name: str) -> None:
    twin, hyperparameters = ONE_PER_RULE[name]
    ours_model, x, y = _problem()
    theirs_model = copy.deepcopy(ours_model)

    def groups(model: torch.nn.Module) -> list[dict]:
        # the second group's own rate, and both rates changed by the scheduler, must reach the update
        return [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": hyperparameters["lr"] / 4}]

    ours = torchbp.create_rule(name, groups(ours_model), **hyperparameters)
    theirs = twin(groups(theirs_model), **hyperparameters)
    schedulers = [torch.optim.lr_scheduler.StepLR(rule, step_size=5, gamma=0.5) for rule in (ours, theirs)]
    for _ in range(20):
        for model, rule, scheduler in zip((ours_model, theirs_model), (ours, theirs), schedulers):
            rule.zero_grad()
            _loss(model, x, y).backward()
            rule.step()
            scheduler.step()
    for p_ours, p_theirs in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(p_ours, p_theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_zero_grad_in_place_and_a_closure_step_as_torch_optim(name: str) -> None:
    model, x, y = _problem()
    reference = copy.deepcopy(model)
    rule = torchbp.create_rule(name, model, lr=1e-2)
    reference_rule = torchbp.create_rule(name, reference, lr=1e-2)

    def closure() -> torch.Tensor:
        rule.zero_grad(set_to_none=False)  # zeroed in place: the gradients do not pile up over steps
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    for _ in range(3):
        expected = _loss(model, x, y).detach()
        assert torch.equal(rule.step(closure), expected)  # step returns the closure's loss
        reference_rule.zero_grad()
        _loss(reference, x, y).backward()
        reference_rule.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    rule.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize(
    "name, twin, hyperparameters",
    [
        ("sgd", torch.optim.SGD, dict(momentum=0.9, dampening=0.1, nesterov=True)),
        ("sgd", torch.optim.SGD, dict(nesterov=True)),
        ("adam", torch.optim.Adam, dict(betas=(1.0, 0.999))),
        ("adam", torch.optim.Adam, dict(betas=(0.9, 1.0))),
        ("adam", torch.optim.Adam, dict(eps=-1e-8)),
        ("adamw", torch.optim.AdamW, dict(betas=(1.0, 0.999))),
        ("rmsprop", torch.optim.RMSprop, dict(alpha=-0.1)),
        ("adagrad", torch.optim.Adagrad, dict(eps=-1e-10)),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_hyperparameters_torch_refuses_are_refused(name: str, twin: type, hyperparameters: dict) -> None:
    with pytest.raises(ValueError):
        twin([torch.zeros(1, requires_grad=True)], **hyperparameters)
    with pytest.raises(ValueError, match="nesterov|betas|eps|alpha"):
        torchbp.create_rule(name, [torch.zeros(1, requires_grad=True)], **hyperparameters)
