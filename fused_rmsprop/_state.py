"""FusedRMSprop's per-parameter state: creation, dtype policy and checks."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

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
