"""Activation functions σ, each defined once beside its derivative σ′.

This table is the single source of truth for every activation in torchbp: the standalone
autograd Functions, the fused dense layer, the whole-network step and the tests all read it.

Each activation saves for the backward pass only what σ′ needs:

========================  =====================================  ===================
σ(z)                      σ′                                     saved
========================  =====================================  ===================
sigmoid  1/(1+e⁻ᶻ)        a (1 − a)                              a (the output)
tanh                      1 − a²                                 a
relu     max(z, 0)        1 where z > 0, else 0                  mask z > 0 (bool)
leaky_relu               1 where z > 0, else slope              z
elu      z or α(eᶻ − 1)   1 where z > 0, else α eᶻ               z
softplus (1/β) log(1+eᵝᶻ)  sigmoid(βz) (1 above the threshold)   z
gelu     z Φ(z)           Φ(z) + z φ(z)  (or the tanh form)     z
silu     z sigmoid(z)     s (1 + z (1 − s)),  s = sigmoid(z)     z
identity z                1                                      nothing
softmax                   δz = a ⊙ (g − Σ g ⊙ a)  (a JVP)        a
========================  =====================================  ===================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, NamedTuple, cast

import torch
from torch import Tensor

from .base import Derivatives, Sample

Reads = Literal["z", "a", "mask", "nothing"]


class ActivationSaved(NamedTuple):
    """The one tensor σ′ reads: z, a, the mask a > 0, or ``None``."""

    read: Tensor | None


@dataclass(frozen=True)
class Activation(Derivatives):
    """An activation function σ and the rule that turns an incoming gradient into δ.

    As a layer (``torchbp.nn.ReLU`` …) its input is z and its output a = σ(z); its input VJP is
    δ = ∂C/∂a ⊙ σ′(z), the "⊙ σ′(zˡ)" of BP1 and BP2.

    Attributes:
        name: the registered name, e.g. ``"sigmoid"``.
        options: the keyword options it was built with, e.g. ``{"negative_slope": 0.1}``.
        saves: what the backward pass reads: the pre-activation ``"z"``, the output ``"a"``,
            the boolean ``"mask"`` a > 0 (z > 0 for relu), or ``"nothing"``.
    """

    kind: ClassVar[str] = "activation"
    Saved: ClassVar[type[ActivationSaved]] = ActivationSaved
    saves_own: ClassVar[bool] = True

    name: str
    sigma: Callable[[Tensor], Tensor]
    saves: Reads
    options: dict[str, object] = field(default_factory=dict)

    def __call__(self, z: Tensor) -> Tensor:
        return self.sigma(z)

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.sigma(x), ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> ActivationSaved:
        # as a layer, the input x is the pre-activation z and the output z is a = σ(z); relu's
        # σ′ is read as a > 0 off a itself, which the layer above keeps anyway (as torch.nn.ReLU
        # keeps it), so no mask is made
        return ActivationSaved(z if self.saves == "mask" else self.read(x, z))

    def input_vjp(self, delta: Tensor, saved: Any) -> Tensor:
        return self.delta(delta, saved.read)

    def vjps(self, delta: Tensor, saved: Any, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return (self.delta(delta, saved.read) if needs[0] else None,)

    def jvp(self, saved: Any, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        assert x_t is not None
        # ȧ = σ′(z) ⊙ ż: the Jacobian is symmetric (diagonal, or softmax's diag(a) − a aᵀ),
        # so the forward product is the same rule as δ
        return self.delta(x_t, saved.read)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        cases = [
            Sample(f"{activation!r}", activation, make(5, 3))
            for activation in (get_activation(name) for name in ACTIVATIONS)
        ]
        cases += [
            Sample("leaky_relu slope 0.2, image batch", leaky_relu(0.2), make(2, 3, 4, 4)),
            Sample("elu α 0.7, transposed", elu(0.7), make(3, 5).t()),
            Sample("softplus β 2 threshold 3", softplus(2.0, 3.0), make(4, 3)),
            Sample("gelu tanh, one value", gelu("tanh"), make(1)),
            Sample("softmax dim 1 of 3", softmax(1), make(2, 4, 3)),
        ]
        return cases

    def read(self, z: Tensor | None, a: Tensor) -> Tensor | None:
        """The one tensor that ``delta`` needs, chosen from ``z`` and ``a = σ(z)``."""
        if self.saves == "z":
            return z
        if self.saves == "a":
            return a
        if self.saves == "mask":
            return a > 0  # relu: a > 0 exactly where z > 0
        return None

    def delta(self, grad: Tensor, saved: Tensor | None) -> Tensor:
        """δ = ∂C/∂z from ``grad`` = ∂C/∂a and the tensor returned by ``read``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({args})"

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A built-in pickles (and deep-copies) by name and options, σ and σ′ rebuilt from the
        # table; a custom activation, field by field (its σ must then be picklable), even one
        # that borrows a built-in's name
        if _is_built_in(self):
            return _rebuild, (self.name, dict(self.options))
        return super().__reduce_ex__(protocol)


def _saved_is_sigma_prime(saved: Tensor) -> Tensor:
    # the default σ′: what was saved is σ′(z) itself (a module-level function, so that a custom
    # activation built without a σ′ still pickles)
    return saved


@dataclass(frozen=True, repr=False)
class Elementwise(Activation):
    """An elementwise activation: δ = g ⊙ σ′(z), with σ′ read from the saved tensor.

    ``fused``, where given, is PyTorch's own kernel for that very product g ⊙ σ′ (one pass over
    memory instead of two or three); the tests check it against ``sigma_prime``.
    """

    sigma_prime: Callable[[Tensor], Tensor] = _saved_is_sigma_prime
    fused: Callable[[Tensor, Tensor], Tensor] | None = None

    def delta(self, grad: Tensor, saved: Tensor | None) -> Tensor:
        # δ = ∂C/∂a ⊙ σ′(z)   (the "⊙ σ′(zˡ)" of BP1 and BP2)
        if saved is None:
            return grad
        if self.fused is not None:
            return self.fused(grad, saved)
        return grad * self.sigma_prime(saved)


@dataclass(frozen=True, repr=False)
class Softmax(Activation):
    """softmax along ``dim``: not elementwise, so δ is the Jacobian–vector product."""

    dim: int = -1

    def delta(self, grad: Tensor, saved: Tensor | None) -> Tensor:
        a = cast(Tensor, saved)
        # δz = a ⊙ (g − Σⱼ gⱼ aⱼ)   (J = diag(a) − a aᵀ applied to g)
        return a * (grad - (grad * a).sum(self.dim, keepdim=True))


def sigmoid() -> Activation:
    """σ(z) = 1 / (1 + e⁻ᶻ);  σ′ = a (1 − a)."""
    return Elementwise(
        "sigmoid", torch.sigmoid, "a", sigma_prime=lambda a: a * (1 - a), fused=torch.ops.aten.sigmoid_backward.default
    )


def tanh() -> Activation:
    """σ(z) = tanh z;  σ′ = 1 − a²."""
    return Elementwise(
        "tanh", torch.tanh, "a", sigma_prime=lambda a: 1 - a * a, fused=torch.ops.aten.tanh_backward.default
    )


def relu() -> Activation:
    """σ(z) = max(z, 0);  σ′ = 1 where z > 0, else 0: read as ``saved > 0`` from the boolean
    mask a > 0, or from a itself where a is kept anyway (the next layer's input)."""
    return Elementwise(
        "relu",
        torch.relu,
        "mask",
        sigma_prime=lambda saved: saved > 0,
        fused=lambda grad, saved: torch.ops.aten.threshold_backward.default(grad, saved, 0),
    )


def leaky_relu(negative_slope: float = 0.01) -> Activation:
    """σ(z) = z where z > 0, else slope·z;  σ′ = 1 where z > 0, else slope."""
    slope = float(negative_slope)
    return Elementwise(
        "leaky_relu",
        lambda z: torch.where(z > 0, z, z * slope),
        "z",
        {"negative_slope": slope},
        sigma_prime=lambda z: torch.where(z > 0, z.new_ones(()), slope),
    )


def elu(alpha: float = 1.0) -> Activation:
    """σ(z) = z where z > 0, else α(eᶻ − 1);  σ′ = 1 where z > 0, else α eᶻ."""
    alpha = float(alpha)
    return Elementwise(
        "elu",
        lambda z: torch.where(z > 0, z, alpha * torch.expm1(z)),
        "z",
        {"alpha": alpha},
        sigma_prime=lambda z: torch.where(z > 0, z.new_ones(()), alpha * torch.exp(z)),
    )


def softplus(beta: float = 1.0, threshold: float = 20.0) -> Activation:
    """σ(z) = (1/β) log(1 + e^{βz}), and z where βz > threshold;  σ′ = sigmoid(βz), and 1 there."""
    beta, threshold = float(beta), float(threshold)
    return Elementwise(
        "softplus",
        lambda z: torch.where(z * beta > threshold, z, torch.log1p(torch.exp(z * beta)) / beta),
        "z",
        {"beta": beta, "threshold": threshold},
        sigma_prime=lambda z: torch.where(z * beta > threshold, z.new_ones(()), torch.sigmoid(z * beta)),
    )


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def _gelu_erf(z: Tensor) -> Tensor:
    # σ(z) = z Φ(z),  Φ(z) = ½ (1 + erf(z / √2))
    return z * 0.5 * (1 + torch.erf(z * math.sqrt(0.5)))


def _gelu_erf_prime(z: Tensor) -> Tensor:
    # σ′(z) = Φ(z) + z φ(z),  φ(z) = e^{−z²/2} / √(2π)
    return 0.5 * (1 + torch.erf(z * math.sqrt(0.5))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _gelu_tanh(z: Tensor) -> Tensor:
    # σ(z) = ½ z (1 + tanh u),  u = √(2/π) (z + 0.044715 z³)
    return 0.5 * z * (1 + torch.tanh(_SQRT_2_OVER_PI * (z + _GELU_CUBIC * z**3)))


def _gelu_tanh_prime(z: Tensor) -> Tensor:
    # σ′(z) = ½ (1 + t) + ½ z (1 − t²) √(2/π) (1 + 3·0.044715 z²),  t = tanh u
    t = torch.tanh(_SQRT_2_OVER_PI * (z + _GELU_CUBIC * z**3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * z * z)


def gelu(approximate: str = "none") -> Activation:
    """σ(z) = z Φ(z) (``approximate="none"``) or its tanh approximation (``"tanh"``)."""
    if approximate == "none":
        sigma, prime = _gelu_erf, _gelu_erf_prime
    elif approximate == "tanh":
        sigma, prime = _gelu_tanh, _gelu_tanh_prime
    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Elementwise("gelu", sigma, "z", {"approximate": approximate}, sigma_prime=prime)


def _silu_prime(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def silu() -> Activation:
    """σ(z) = z sigmoid(z);  σ′ = s (1 + z (1 − s)) with s = sigmoid(z)."""
    return Elementwise("silu", lambda z: z * torch.sigmoid(z), "z", sigma_prime=_silu_prime)


def identity() -> Activation:
    """σ(z) = z;  σ′ = 1, so δ = g and nothing is saved.

    a is a copy of z, never z itself: a Function must not hand out its input (or one tensor twice).
    """
    return Elementwise("identity", torch.clone, "nothing")


def softmax(dim: int = -1) -> Activation:
    """a = softmax(z) along ``dim``;  backward is the JVP δz = a ⊙ (g − Σ g ⊙ a)."""
    dim = int(dim)
    return Softmax("softmax", lambda z: torch.softmax(z, dim), "a", {"dim": dim}, dim=dim)


ACTIVATIONS: dict[str, Callable[..., Activation]] = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "softplus": softplus,
    "gelu": gelu,
    "silu": silu,
    "identity": identity,
    "softmax": softmax,
}


def _rebuild(name: str, options: dict[str, object]) -> Activation:
    return get_activation(name, **options)


def _is_built_in(activation: Activation) -> bool:
    """Whether ``activation`` is what the table builds from its name and options: the same class,
    the same settings, and σ, σ′ and the fused kernel the same functions (or, for the closures a
    factory makes afresh on each call, the same code)."""
    if activation.name not in ACTIVATIONS:
        return False
    try:
        built = _rebuild(activation.name, dict(activation.options))
    except (TypeError, ValueError):
        return False
    return type(built) is type(activation) and all(
        _same(getattr(built, f.name), getattr(activation, f.name)) for f in fields(activation)
    )


def _same(built: object, value: object) -> bool:
    if callable(built) and built is not value:
        code = getattr(built, "__code__", None)
        return code is not None and code is getattr(value, "__code__", None)
    return built == value


def get_activation(spec: str | Activation, **options: object) -> Activation:
    """Look up an activation by name (with its options), or pass an ``Activation`` through.

    Examples:
        >>> get_activation("leaky_relu", negative_slope=0.2)
        leaky_relu(negative_slope=0.2)
    """
    if isinstance(spec, Activation):
        if options:
            raise TypeError(f"options {sorted(options)} given with an already-built {spec!r}")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation: expected a name or an Activation, got {type(spec).__name__}")
    factory = ACTIVATIONS.get(spec)
    if factory is None:
        raise ValueError(f"unknown activation {spec!r}; available: {', '.join(sorted(ACTIVATIONS))}")
    try:
        return factory(**options)
    except TypeError as error:
        raise TypeError(f"activation {spec!r}: {error}") from None
