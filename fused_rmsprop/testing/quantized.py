"""A reference RMSprop with 8-bit block-wise quantized state, for checking.

The codes are those of fused_rmsprop._quantized (and csrc/quantized_state.h):
see NOTE: [8-bit state codes] there.
"""

from __future__ import annotations

import torch

from .._quantized import (BLOCK, NEAREST, SHIFT, SIGNED_STATES, decode, dequantize, encode,
                          quantize)
from .._state import STATE_KEYS
from .reference import ReferenceRMSprop

__all__ = ["BLOCK", "QuantizedReferenceRMSprop", "assert_quantized_steps_match_reference", "decode", "dequantize", "encode",
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


def assert_quantized_steps_match_reference(optimizer_class=None, *, steps=4,
                                           dtype=torch.float32, shapes=((40, 50), (300,), (7,)),
                                           seed=0, memory_format=torch.preserve_format,
                                           device="cpu", **options):
    """Runs ``optimizer_class(params, state_bits=8, min_8bit_size=256,
    **options)`` (default FusedRMSprop) for a few steps and checks each one
    against `reference_rmsprop_update` in float64, started from the
    optimizer's own dequantized state: the parameters agree to the rounding
    of ``dtype``, each 8-bit state is within its codes' error bound of the
    reference's new state (`error_bound`), and the full-precision state of
    the small parameters (below min_8bit_size) agrees to rounding.
    ``memory_format`` lays out the 4-D parameters (and their grads); the
    parameters live on ``device``."""
    from .._quantized import dequantize_state
    from .reference import reference_rmsprop_update

    if optimizer_class is None:
        from ..optimizer import FusedRMSprop as optimizer_class
    gen = torch.Generator().manual_seed(seed)
    def laid_out(t):
        t = t.to(device)
        return t.to(memory_format=memory_format) if t.dim() == 4 else t

    params = [laid_out(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype))
              .requires_grad_() for s in shapes]
    options = dict(dict(lr=1e-2, state_bits=8, min_8bit_size=256), **options)
    opt = optimizer_class(params, **options)
    group = opt.param_groups[0]
    hyper = {k: group[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum",
                                   "centered", "maximize", "eps_in_sqrt", "lr_in_momentum",
                                   "decoupled_weight_decay")}
    hyper["lr"] = float(hyper["lr"])
    real = lambda t: torch.view_as_real(t) if t.is_complex() else t  # noqa: E731
    opmath_eps = torch.finfo(torch.float64 if dtype in (torch.float64, torch.complex128)
                             else torch.float32).eps
    for _ in range(steps):
        for p in params:
            p.grad = laid_out((torch.randn(p.shape, generator=gen, dtype=torch.float64)
                               * torch.logspace(-3, 1, p.numel(), dtype=torch.float64)
                               .view(p.shape)).to(dtype))
        expected = []
        for p in params:
            state = opt.state.get(p, {})
            ref = {}
            for key in STATE_KEYS:
                if key + "_codes" in state:
                    ref[key] = dequantize_state(state[key + "_codes"], state[key + "_scales"],
                                                key).double()
                elif key in state:
                    ref[key] = real(state[key]).double().clone()
                elif key == "square_avg" or (key == "momentum_buffer" and hyper["momentum"] > 0) \
                        or (key == "grad_avg" and hyper["centered"]):
                    ref[key] = torch.full(real(p).shape, float(group["initial_square_avg"])
                                          if key == "square_avg" else 0.0, dtype=torch.float64,
                                          device=p.device)
            q = real(p.detach()).double().clone()
            reference_rmsprop_update(q, real(p.grad).double(), ref, **hyper)
            moved = (q - real(p.detach()).double()).abs().max()  # the reference's step
            expected.append((q, ref, moved))
        opt.step()
        for p, (q, ref, moved) in zip(params, expected):
            torch.testing.assert_close(real(p.detach()).double(), q,
                                       rtol=2 * torch.finfo(real(p).dtype).eps,
                                       atol=float(moved) * 1e-5 + 1e-30)
            state = opt.state[p]
            for key, want in ref.items():
                if key + "_codes" in state:
                    scales = state[key + "_scales"]
                    got = dequantize_state(state[key + "_codes"], scales, key).double()
                    per = scales.double().repeat_interleave(BLOCK)[:got.numel()].view(got.shape)
                    rel, absolute = error_bound(key in SIGNED_STATES)
                    bound = rel * want.abs() + (absolute + 1e-5) * per
                    worst = ((got - want).abs() - bound).max()
                    assert worst <= 0, f"{key} of a {tuple(p.shape)} parameter off by {worst}"
                else:
                    eps = max(opmath_eps, torch.finfo(real(state[key]).dtype).eps)
                    torch.testing.assert_close(real(state[key]).double(), want, rtol=4 * eps,
                                               atol=8 * eps * float(want.abs().max()))
