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


def assert_stochastic_rounding_matches_reference(device="cpu", *, momentum=0.9, centered=True,
                                                 state_dtype=torch.bfloat16, seed=1234,
                                                 sizes=(1, 37, 4099, 70000)):
    """Runs one stochastically rounded bfloat16 step of the fused op on
    `device` and checks every stored bfloat16 value bit for bit: it must be
    the float32 result of the same step (computed by the CPU kernel without
    rounding) rounded with the generator's bits of this function. float32
    state must equal the float32 result."""
    from .._ops import rmsprop_

    gen = torch.Generator().manual_seed(seed)
    ids = [3 * i + 1 for i in range(len(sizes))]
    steps = [5 * i for i in range(len(sizes))]

    def draw(dtype, square=False, scale=1.0):
        out = []
        for n in sizes:
            t = torch.randn(n, generator=gen, dtype=torch.float64)
            out.append(((t.abs() + 0.1) if square else scale * t).to(dtype))
        return out

    lists = [draw(torch.bfloat16), draw(torch.bfloat16), draw(state_dtype, square=True),
             draw(state_dtype) if momentum else [], draw(state_dtype, scale=0.1) if centered else [],
             [torch.tensor(float(s)) for s in steps]]
    hyper = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=momentum,
                 maximize=False)
    exact = [[t.to(torch.float32, copy=True) for t in lst] for lst in lists]
    rmsprop_(*exact, **hyper)
    on_device = [[t.to(device, copy=True) for t in lst] for lst in lists]
    rmsprop_(*on_device, **hyper, rounding_ids=ids, rounding_seed=seed)
    names = ["param", None, "square_avg", "momentum_buffer", "grad_avg"]
    for k, slot in enumerate(names):
        for t, (out, want) in enumerate(zip(on_device[k] if slot else [], exact[k])):
            out = out.cpu()
            if out.dtype == torch.float32:
                expected = want
            else:
                expected = round_stochastically(
                    want, random_bits(want.numel(), seed=seed, id=ids[t], step=steps[t], slot=slot))
            got_bits = out.view(torch.int16 if out.dtype == torch.bfloat16 else torch.int32)
            want_bits = expected.view(got_bits.dtype)
            if not torch.equal(got_bits, want_bits):
                bad = (got_bits != want_bits).nonzero()[0].item()
                raise AssertionError(
                    f"stochastic rounding on {device}: {slot} of tensor {t} (of {sizes[t]} "
                    f"elements), element {bad}: got {out[bad].item()!r}, expected "
                    f"{expected[bad].item()!r}")
    for s, step in zip(on_device[5], steps):
        if s.item() != step + 1:
            raise AssertionError(f"stochastic rounding on {device}: step {s.item()}, "
                                 f"expected {step + 1}")
