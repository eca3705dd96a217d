"""8-bit block-wise quantized optimizer state (FusedRMSprop(state_bits=8)).

The codes of csrc/quantized_state.h (NOTE: [8-bit state codes]) written again
in PyTorch, for converting state (checkpoints, a change of state_bits) and for
checking the kernels' bytes. A state tensor is cut into blocks of ``BLOCK``
consecutive elements (in memory order; the last block may be partial). Each
block stores its largest |x| as a float32 scale and each element a one-byte
code of ``x / scale``:

* ``square_avg`` (never negative): an unsigned log-linear code. Code 0 is 0;
  code c >= 1 is the float32 whose bits are ``UNSIGNED_BASE + (c << 20)``:
  32 binades (down to 2.9e-10 of the block's scale), 8 codes per binade, 255
  exactly 1.
* ``momentum_buffer`` and ``grad_avg``: a sign bit and a 7-bit magnitude code
  of the same kind: 16 binades (down to 1.9e-5), 127 exactly 1.

Encoding a magnitude y is ``clamp((bits(y) - BASE + r) >> 20, 0, top)``:
``r = 2**19`` rounds to the nearer code (the mantissa is linear within a
binade, so the relative error is at most 1/16); r uniform in [0, 2**20)
rounds stochastically.
"""

from __future__ import annotations

import torch

SIGNED_STATES = ("momentum_buffer", "grad_avg")
MIN_8BIT_SIZE = 4096  # FusedRMSprop's default: smaller tensors keep full-precision state
BLOCK = 128
SHIFT = 20
UNSIGNED_BASE = 0x3F800000 - (255 << SHIFT)
SIGNED_BASE = 0x3F800000 - (127 << SHIFT)
NEAREST = 1 << (SHIFT - 1)


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32).to(torch.int64)


def _from_bits(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int32).view(torch.float32)


def encode(y: torch.Tensor, signed: bool, r=NEAREST) -> torch.Tensor:
    """uint8 codes of float32 ``y`` (already divided by its block's scale).
    ``r``: the rounding offset, an int or an int64 tensor in [0, 2**20)."""
    if y.dtype != torch.float32:
        raise TypeError(f"encode: y must be float32, got {y.dtype}")
    bits = _bits(y)
    base, top = (SIGNED_BASE, 127) if signed else (UNSIGNED_BASE, 255)
    magnitude = (((bits & 0x7FFFFFFF) - base + r) >> SHIFT).clamp(0, top)
    if signed:
        magnitude = magnitude | ((bits >> 31) & 1) << 7
    return magnitude.to(torch.uint8)


def decode(codes: torch.Tensor, signed: bool) -> torch.Tensor:
    """float32 values (in units of the block's scale) of uint8 ``codes``."""
    c = codes.to(torch.int64)
    magnitude = c & 0x7F if signed else c
    base = SIGNED_BASE if signed else UNSIGNED_BASE
    value = torch.where(magnitude == 0, 0, base + (magnitude << SHIFT))
    if signed:
        value = value | ((c >> 7) << 31)
    return _from_bits(value)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1)
    pad = (-flat.numel()) % BLOCK
    return torch.nn.functional.pad(flat, (0, pad)).view(-1, BLOCK)


def block_scales(x: torch.Tensor) -> torch.Tensor:
    """The float32 scale of each block of float32 ``x``: its largest |x|
    (compared as bit patterns, as the kernels do: a NaN is the largest)."""
    bits = _bits(_blocks(x)) & 0x7FFFFFFF
    return _from_bits(bits.amax(dim=1))


def quantize(x: torch.Tensor, signed: bool, r=NEAREST):
    """(codes of x's shape, scales) of float32 ``x``, as the kernels store a
    state they have just updated. ``r`` as in `encode`, one per element."""
    scales = block_scales(x)
    inverse = torch.where(scales > 0, 1.0 / scales, torch.zeros_like(scales))
    n = x.numel()
    y = (_blocks(x) * inverse[:, None]).reshape(-1)[:n]
    if torch.is_tensor(r):
        r = r.reshape(-1)
    return encode(y, signed, r).view(x.shape), scales


def dequantize(codes: torch.Tensor, scales: torch.Tensor, signed: bool) -> torch.Tensor:
    """float32 values of a quantized state (codes of the parameter's shape)."""
    n = codes.numel()
    values = _blocks(decode(codes, signed)) * scales[:, None]
    return values.reshape(-1)[:n].view(codes.shape)


def _memory_order(x: torch.Tensor) -> torch.Tensor:
    """A 1-D view of dense ``x`` in memory order (the order the kernels cut
    blocks in): x's dimensions permuted from the largest stride down."""
    if x.is_contiguous():
        return x.view(-1)
    order = sorted(range(x.dim()), key=lambda d: (x.stride(d), x.size(d)), reverse=True)
    return x.permute(order).view(-1)


# NOTE: [conversion chunks] The two functions below convert a state tensor
# CHUNK elements at a time (whole blocks, so the result is the same): the
# integer arithmetic above takes about 40 bytes per element in temporaries,
# which for a whole tensor would be ten times the 8-bit state it converts
# (checkpoints: bench/checkpoint_memory.py).
CHUNK = 1 << 18


def _chunks(n):
    return ((start, min(start + CHUNK, n)) for start in range(0, n, CHUNK))


def quantize_state(x: torch.Tensor, key: str):
    """(codes laid out like ``x``, scales) of state ``key`` (float ``x``,
    dense), rounded to the nearer code as the kernels do."""
    codes = torch.empty_like(x, dtype=torch.uint8)
    flat, flat_codes = _memory_order(x), _memory_order(codes)
    scales = torch.empty((x.numel() + BLOCK - 1) // BLOCK, dtype=torch.float32, device=x.device)
    for start, end in _chunks(x.numel()):
        chunk_codes, chunk_scales = quantize(flat[start:end].float(), key in SIGNED_STATES)
        flat_codes[start:end].copy_(chunk_codes)
        scales[start // BLOCK:start // BLOCK + chunk_scales.numel()].copy_(chunk_scales)
    return codes, scales


def dequantize_state(codes: torch.Tensor, scales: torch.Tensor, key: str,
                     dtype=torch.float32) -> torch.Tensor:
    """State ``key`` as ``dtype`` values laid out like ``codes``."""
    values = torch.empty_like(codes, dtype=dtype)
    flat, flat_codes = _memory_order(values), _memory_order(codes)
    for start, end in _chunks(codes.numel()):
        blocks = scales[start // BLOCK:(end + BLOCK - 1) // BLOCK]
        flat[start:end].copy_(dequantize(flat_codes[start:end], blocks, key in SIGNED_STATES))
    return values
