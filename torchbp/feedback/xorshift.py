"""Random bits for a rule that redraws a W-sized matrix each batch, cheaply: one xorshift64
generator per four elements, advanced in place with torch's integer operations.

torch's own CPU generator (mt19937) draws one number at a time: a fresh 256 × 784 matrix costs
about as much as a training step of the layer. Here every word of a state tensor is its own
xorshift64 generator (Marsaglia 2003, "Xorshift RNGs", Journal of Statistical Software 8(14),
shifts 13, 7, 17; period 2⁶⁴ − 1), and one step of all of them is seven whole-tensor integer
operations. The output adds a Weyl sequence d ← d + γ to the words, as Marsaglia's xorwow does,
so that it is not a linear function of the state over GF(2) (the plain generator's known
weakness). Each 64-bit output gives four 16-bit numbers.

The words are drawn once from a seeded ``torch.Generator`` (none may be zero), so the numbers are
reproducible from the seed and independent of any other random stream. The words start at random
points of one cycle of length 2⁶⁴ − 1: two words' runs over a training overlap with probability
about words² · steps / 2⁶⁴ (3 · 10⁻⁵ for 50,000 words and 100,000 batches), and even then only
repeat each other's numbers some batches apart. The state is a tensor, so a checkpoint that
holds it resumes the sequence exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

_WEYL = 0x9E3779B97F4A7C15 - 2**64
"""γ = 2⁶⁴ / φ, odd, as a signed 64-bit integer: the Weyl sequence's step."""
_LOW_57_BITS = (1 << 57) - 1
"""torch's right shift of a signed integer copies the sign bit: masking makes ``x >> 7`` logical."""


def xorshift_state(values: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """The state that gives ``values`` 16-bit numbers per step, drawn from ``generator``.

    Returns:
        ``(⌈values / 4⌉ + 1,)`` int64: the xorshift64 words (none zero), then the Weyl sequence's d.
    """
    words = -(-values // 4) + 1
    state = torch.randint(-(2**63), 2**63 - 1, (words,), generator=generator, dtype=torch.int64, device=device)
    return state.masked_fill_(state == 0, 1)  # zero is xorshift's fixed point


def draw_int16(state: Tensor, values: int, scratch: Tensor) -> Tensor:
    """Advance ``state`` one step in place and return ``values`` fresh random 16-bit integers.

    Args:
        state: ``(words + 1,)`` int64 from ``xorshift_state``.
        values: how many numbers (at most 4 · words).
        scratch: ``(words,)`` int64 to work in; the numbers returned are a view of it.

    Returns:
        ``(values,)`` int16, each uniform on −32768 … 32767, independent across elements and steps.
    """
    x, weyl = state[:-1], state[-1:]
    # xorshift64: x ^= x << 13; x ^= x >> 7 (logical); x ^= x << 17
    torch.bitwise_left_shift(x, 13, out=scratch)
    x ^= scratch
    torch.bitwise_right_shift(x, 7, out=scratch)
    scratch &= _LOW_57_BITS
    x ^= scratch
    torch.bitwise_left_shift(x, 17, out=scratch)
    x ^= scratch
    # xorwow's output: x + d, with d ← d + γ (both modulo 2⁶⁴)
    weyl += _WEYL
    torch.add(x, weyl, out=scratch)
    return scratch.view(torch.int16)[:values]
