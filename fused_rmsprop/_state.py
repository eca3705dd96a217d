"""What every form of FusedRMSprop's per-parameter state shares: the state
keys, the step counter, the dtype policy, and the tensors the kernels update
in place of DTensors, complex parameters and strided views."""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed
    class DTensor:  # noqa: D101 - nothing is ever an instance
        pass

# torch.optim.RMSprop's state tensors besides `step`, in the op's order
STATE_KEYS = ("square_avg", "momentum_buffer", "grad_avg")


def wanted_keys(group):
    """The state keys the options of `group` need."""
    return (("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ())
            + (("grad_avg",) if group["centered"] else ()))


def local(t):
    """This rank's shard of a DTensor; any other tensor as it is."""
    return t._local_tensor if isinstance(t, DTensor) else t


def local_shards(p, grad, state):
    """This rank's shards of a DTensor parameter, its grad and its state.

    The update is elementwise, so each rank updates its own shard in place
    (FSDP2 keeps grads and state sharded like the parameter; 8-bit state's
    scales are this rank's own, plain tensors)."""
    return local(p), local(grad), {k: local(v) for k, v in state.items()}


def sharded_like(p, shard):
    """`shard` (this rank's piece of a tensor shaped like DTensor `p`, any
    dtype) as a DTensor placed as `p` is; `shard` itself when p is no DTensor."""
    if not isinstance(p, DTensor):
        return shard
    return DTensor.from_local(shard, p.device_mesh, p.placements, run_check=False,
                              shape=p.shape, stride=p.stride())


def shard_offset(p):
    """The flat index in the whole tensor of the first element of this
    rank's shard of DTensor `p` (0 for a tensor that is no DTensor): shards
    that hold different elements start at different indices, replicas of a
    shard at the same one."""
    if not isinstance(p, DTensor):
        return 0
    return _shard_offset(p.shape, p.device_mesh, tuple(p.placements))


@functools.lru_cache(maxsize=4096)
def _shard_offset(shape, mesh, placements):
    # (cached: torch takes tens of microseconds for it, and a step asks for
    # it for every DTensor param)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(shape, mesh, placements)
    flat, stride = 0, 1
    for size, start in reversed(list(zip(shape, offset))):
        flat, stride = flat + start * stride, stride * size
    return flat


def state_dtype(p, group):
    """float32 for half-precision params when the group asks for it, else p's dtype."""
    if group["state_dtype"] == torch.float32 and p.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return p.dtype


class Where:
    """Names a parameter in error messages; formatted only when one is raised."""

    def __init__(self, index, param, group_index=None):
        self.index, self.param, self.group_index = index, param, group_index

    def __str__(self):
        group = "its param group" if self.group_index is None else \
            f"param group {self.group_index}"
        return f"parameter {self.index} of {group} (shape {tuple(self.param.shape)})"


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
    (csrc/step_counters.h, NOTE: [step counters]) and nothing waits."""
    return torch.full((), float(value), dtype=_get_scalar_dtype(), device=p.device)
