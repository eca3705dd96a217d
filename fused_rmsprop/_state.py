"""FusedRMSprop's per-parameter state: creation, dtype policy and checks."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from ._quantized import BLOCK, dequantize_state, quantize_state

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed
    class DTensor:  # noqa: D101 - nothing is ever an instance
        pass

STATE_KEYS = ("square_avg", "momentum_buffer", "grad_avg")


def local_shards(p, grad, state):
    """This rank's shards of a DTensor parameter, its grad and its state.

    The update is elementwise, so each rank updates its own shard in place
    (FSDP2 keeps grads and state sharded like the parameter)."""
    def local(t):
        return t._local_tensor if isinstance(t, DTensor) else t

    return local(p), local(grad), {k: local(v) for k, v in state.items()}


def state_dtype(p, group):
    """float32 for half-precision params when the group asks for it, else p's dtype."""
    if group["state_dtype"] == torch.float32 and p.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return p.dtype


def zeros_state(p, group):
    return torch.zeros_like(p, dtype=state_dtype(p, group), memory_format=torch.preserve_format)


def quantized(p, group):
    """True when p's state is kept 8-bit (NOTE: [8-bit state codes]):
    state_bits=8 and at least min_8bit_size elements."""
    return group["state_bits"] == 8 and bool(p.numel() >= group["min_8bit_size"])


def codes_key(key):
    return key + "_codes"


def scales_key(key):
    return key + "_scales"


def zeros_quantized(p, value=0.0):
    """(codes, scales) of a state of p's layout whose every element is
    `value` >= 0 (exact: code 255 is 1 times the scale)."""
    real = as_real(dense_layout(p))
    codes = torch.zeros_like(real, dtype=torch.uint8)
    scales = torch.zeros((real.numel() + BLOCK - 1) // BLOCK, dtype=torch.float32,
                         device=p.device)
    if value != 0:
        codes.fill_(255)
        scales.fill_(value)
    return codes, scales


def convert_state(p, group, state):
    """Brings p's state to the form its group asks for: full-precision state
    quantized when it should be 8-bit, 8-bit state dequantized (to
    state_dtype) when it should not be. Returns [(key, old value or None)]
    for what it changed."""
    changes = []
    want = quantized(p, group)
    for key in STATE_KEYS:
        if want and key in state:
            value = as_real(state[key])
            layout = as_real(dense_layout(p))
            if value.stride() != layout.stride():
                value = torch.empty_like(layout, dtype=value.dtype).copy_(value)
            codes, scales = quantize_state(value, key)
            changes += [(key, state.pop(key)), (codes_key(key), state.get(codes_key(key))),
                        (scales_key(key), state.get(scales_key(key)))]
            state[codes_key(key)], state[scales_key(key)] = codes, scales
        elif not want and codes_key(key) in state:
            codes, scales = state.pop(codes_key(key)), state.pop(scales_key(key))
            dtype = state_dtype(p, group)
            real_dtype = {torch.complex64: torch.float32, torch.complex128: torch.float64}
            values = dequantize_state(codes, scales, key, real_dtype.get(dtype, dtype))
            if p.is_complex():
                values = torch.view_as_complex(values)
            values = torch.empty_like(dense_layout(p), dtype=values.dtype).copy_(values)
            changes += [(codes_key(key), codes), (scales_key(key), scales), (key, None)]
            state[key] = values
    return changes


class Where:
    """Names a parameter in error messages; formatted only when one is raised."""

    def __init__(self, index, param):
        self.index, self.param = index, param

    def __str__(self):
        return f"parameter {self.index} of its param group (shape {tuple(self.param.shape)})"


def as_real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def is_dense(t: Tensor) -> bool:
    """True when `t` fills exactly numel consecutive elements of memory, in any
    dimension order (contiguous, channels_last, transposed)."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda d: d[1]):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def dense_layout(p: Tensor) -> Tensor:
    """p when it is dense; else a new tensor of p's shape laid out densely,
    as torch lays out p's state (torch.empty_like): the stand-in the kernel
    updates in place of a strided-view parameter."""
    return p if is_dense(p) else torch.empty_like(p)


def new_step(p, value=0.0):
    """A step counter on p's device, as torch's fused optimizers keep it.

    NOTE: [step on the device] torch.optim.RMSprop keeps `step` on the CPU
    unless capturable; then a GradScaler step on CUDA would have to read
    found_inf on the host to know whether to count the step, a sync every
    step. On the parameter's device, the op adds 1 - found_inf with a kernel
    (csrc/op_checks.h, NOTE: [step counters]) and nothing waits."""
    return torch.full((), float(value), dtype=_get_scalar_dtype(), device=p.device)


def new_state(p, group):
    state = {"step": new_step(p)}
    if quantized(p, group):
        keys = ["square_avg"]
        keys += ["momentum_buffer"] if group["momentum"] > 0 else []
        keys += ["grad_avg"] if group["centered"] else []
        for key in keys:
            value = group["initial_square_avg"] if key == "square_avg" else 0.0
            state[codes_key(key)], state[scales_key(key)] = zeros_quantized(p, value)
        return state
    square_avg = zeros_state(p, group)
    if group["initial_square_avg"] != 0:
        as_real(square_avg).fill_(group["initial_square_avg"])
    state["square_avg"] = square_avg
    if group["momentum"] > 0:
        state["momentum_buffer"] = zeros_state(p, group)
    if group["centered"]:
        state["grad_avg"] = zeros_state(p, group)
    return state

def check_state(p, state, group, where):
    if not torch.is_tensor(state.get("step")):
        raise RuntimeError(f"FusedRMSprop: the state of {where} has no 'step' tensor")
    required = ["square_avg"]
    required += ["momentum_buffer"] if group["momentum"] > 0 else []
    required += ["grad_avg"] if group["centered"] else []
    wanted = state_dtype(p, group)
    for key in required:
        value = state.get(key)
        if codes_key(key) in state:
            _check_quantized(p, state, key, where)
            continue
        if value is None:
            continue  # created on first use (torch would raise a KeyError)
        if (not torch.is_tensor(value) or value.shape != p.shape
                or value.dtype not in (wanted, p.dtype) or value.device != p.device):
            got = (f"shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
                   if torch.is_tensor(value) else type(value).__name__)
            raise RuntimeError(
                f"FusedRMSprop: state '{key}' of {where} has {got}; expected shape "
                f"{tuple(p.shape)}, dtype {wanted}, device {p.device} "
                "(was a state_dict from another model loaded?)")


def _check_quantized(p, state, key, where):
    codes, scales = state[codes_key(key)], state.get(scales_key(key))
    shape = tuple(as_real(p).shape)
    blocks = (as_real(p).numel() + BLOCK - 1) // BLOCK
    if not (torch.is_tensor(codes) and codes.dtype == torch.uint8 and tuple(codes.shape) == shape
            and codes.device == p.device):
        got = (f"shape {tuple(codes.shape)}, dtype {codes.dtype}, device {codes.device}"
               if torch.is_tensor(codes) else type(codes).__name__)
        raise RuntimeError(
            f"FusedRMSprop: state '{codes_key(key)}' of {where} has {got}; expected shape "
            f"{shape}, dtype torch.uint8, device {p.device} (8-bit state codes)")
    if not (torch.is_tensor(scales) and scales.dtype == torch.float32
            and tuple(scales.shape) == (blocks,) and scales.device == p.device):
        got = (f"shape {tuple(scales.shape)}, dtype {scales.dtype}, device {scales.device}"
               if torch.is_tensor(scales) else type(scales).__name__)
        raise RuntimeError(
            f"FusedRMSprop: state '{scales_key(key)}' of {where} has {got}; expected shape "
            f"({blocks},), dtype torch.float32, device {p.device} (one scale per block of "
            f"{BLOCK} elements)")
