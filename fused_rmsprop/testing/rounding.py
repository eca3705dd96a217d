"""Stochastic rounding to bfloat16 as the kernels do it, in plain PyTorch.

The same function as csrc/stochastic_rounding.h (NOTE: [rounding generator]),
written again from its definition so that tests can check the kernels' bits
against it: the random bits of element ``i`` of the parameter with id ``id``
at step ``step`` (its step counter before the step) under ``seed``.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1

# Which 16 bits round which stored tensor: (generator word, shift).
SLOTS = {
    "param": (0, 16),
    "square_avg": (0, 0),
    "momentum_buffer": (1, 16),
    "grad_avg": (1, 0),
}


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _lowbias32(x: torch.Tensor) -> torch.Tensor:
    """C. Wellons' lowbias32 on uint32 values held in int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def random_bits(numel: int, *, seed: int, id: int, step: int, slot: str,
                start: int = 0) -> torch.Tensor:
    """The 16 random bits (int64 in [0, 65536)) that round the ``slot``
    tensor's elements ``start .. start + numel - 1``."""
    word, shift = SLOTS[slot]
    stream = splitmix64(splitmix64(seed & _MASK64) ^ (id & _MASK64))
    key = splitmix64(stream ^ splitmix64(step))
    index = torch.arange(start, start + numel, dtype=torch.int64)
    salt = ((index >> 32) * 0x9E3779B9) & _MASK32
    k = (key >> (32 * word)) & _MASK32
    u = _lowbias32((index & _MASK32) ^ salt ^ k)
    return (u >> shift) & 0xFFFF


def round_stochastically(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` rounded to bfloat16 with the 16 random bits ``bits``
    (one per element, in x's flat memory order): round up with probability
    (x - down) / (up - down). Every NaN becomes 0x7FC0."""
    if x.dtype != torch.float32:
        raise TypeError(f"round_stochastically: x must be float32, got {x.dtype}")
    u = x.contiguous().view(torch.int32).to(torch.int64).reshape(-1) & _MASK32
    u = torch.where(x.isnan().reshape(-1), 0x7FC00000, u)
    out = ((u + bits.reshape(-1)) >> 16) & 0xFFFF
    out = torch.where(out >= 0x8000, out - 0x10000, out).to(torch.int16)
    return out.view(torch.bfloat16).reshape(x.shape)
