"""A reference RMSprop with 8-bit block-wise quantized state, for checking.

The codes are those of fused_rmsprop._quantized (and csrc/quantized_state.h):
see NOTE: [8-bit state codes] there.
"""

from __future__ import annotations

import torch

from .._quantized import (BLOCK, NEAREST, SHIFT, SIGNED_STATES, STATE_KEYS, decode,
                          dequantize, encode, quantize)
from .reference import ReferenceRMSprop

__all__ = ["BLOCK", "QuantizedReferenceRMSprop", "decode", "dequantize", "encode",
           "error_bound", "quantize"]


def error_bound(signed: bool) -> tuple[float, float]:
    """(relative, absolute) error of rounding to the nearer code: |x - x'| <=
    relative * |x| + absolute * scale. Relative: half of the widest step
    within a binade (1/8 of its lower end); absolute: below the smallest
    non-zero code a value may go to 0 or up to it."""
    smallest = float(decode(torch.tensor([1], dtype=torch.uint8), signed))
    return 2.0 ** -4, smallest


class QuantizedReferenceRMSprop(ReferenceRMSprop):
    """ReferenceRMSprop keeping ``square_avg``, ``momentum_buffer`` and
    ``grad_avg`` of parameters with at least ``min_8bit_size`` elements as
    8-bit codes (``<key>_codes``, uint8) and block scales (``<key>_scales``,
    float32), as FusedRMSprop(state_bits=8) does. Each step dequantizes the
    state, runs `reference_rmsprop_update` in the parameter's dtype, and
    quantizes the result: rounding to the nearer code, or with
    ``rounding="stochastic"`` up or down at random (torch's generator).

    `quantize` and `dequantize` may be overridden to try other codes."""

    def __init__(self, params, *args, min_8bit_size=4096, rounding="nearest", **kwargs):
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
        self.min_8bit_size, self.rounding = min_8bit_size, rounding
        super().__init__(params, *args, **kwargs)

    def quantize(self, x, signed):
        r = NEAREST
        if self.rounding == "stochastic":
            r = torch.randint(0, 1 << SHIFT, (x.numel(),), dtype=torch.int64)
        return quantize(x.float(), signed, r)

    def dequantize(self, codes, scales, signed):
        return dequantize(codes, scales, signed)

    @torch.no_grad()
    def step(self, closure=None):
        quantized = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if p.grad is None or p.numel() < self.min_8bit_size:
                    continue
                quantized.append((p, state))
                for key in STATE_KEYS:
                    if key + "_codes" in state:
                        state[key] = self.dequantize(
                            state.pop(key + "_codes"), state.pop(key + "_scales"),
                            key in SIGNED_STATES).to(p.dtype)
        loss = super().step(closure)
        for p, state in quantized:
            for key in STATE_KEYS:
                if key in state:
                    codes, scales = self.quantize(state.pop(key), key in SIGNED_STATES)
                    state[key + "_codes"], state[key + "_scales"] = codes, scales
        return loss
