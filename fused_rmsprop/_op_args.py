"""The keyword arguments of one fused op call, from a param group."""

from __future__ import annotations

import torch
from torch import Tensor

from ._state import shard_offset


def amp_tensors(optimizer):
    """Maps a device to the GradScaler arguments for a call on it."""
    grad_scale = getattr(optimizer, "grad_scale", None)
    found_inf = getattr(optimizer, "found_inf", None)
    cache = {}

    def on(device):
        if device not in cache:
            cache[device] = {
                "grad_scale": None if grad_scale is None else
                grad_scale.to(device, torch.float32, non_blocking=True),
                "found_inf": None if found_inf is None else
                found_inf.to(device, torch.float32, non_blocking=True),
            }
        return cache[device]

    return on


def grad_factor_for(coefficient):
    """Maps (device, param dtype) to the grad_factor argument of a call: the
    clipping coefficient in the params' opmath precision (float64 for float64
    params, else float32), or nothing when not clipping."""
    cache = {}

    def on(device, dtype):
        if coefficient is None:
            return {}
        key = (device, dtype)
        if key not in cache:
            wanted = torch.float64 if dtype == torch.float64 else torch.float32
            cache[key] = {"grad_factor": coefficient.to(device, wanted, non_blocking=True)}
        return cache[key]

    return on


def lr_for(lr, device):
    """A Tensor lr goes to the kernel as lr_tensor on the call's device, on
    every device: the kernel reads it, so nothing syncs with the host, a
    captured CUDA graph follows its value, and torch.compile traces it as a
    graph input (no graph break at float(lr), no recompile per new lr).
    float64 is kept (float64 params then use the lr's full precision)."""
    if not isinstance(lr, Tensor):
        return {}
    if lr.device != device and lr.is_cpu and torch.cuda.is_current_stream_capturing():
        # A captured graph would replay the copy of the lr's first value.
        raise ValueError("FusedRMSprop: a CPU Tensor lr cannot follow its value in a "
                         f"captured CUDA graph; put the lr on {device} (e.g. "
                         f"torch.tensor(lr, device='{device}')) before capturing")
    dtype = lr.dtype if lr.dtype in (torch.float32, torch.float64) else torch.float32
    return {"lr_tensor": lr.to(device, dtype, non_blocking=True).reshape(())}


def rounding_seed_from(seed):
    """The generator seed of stochastic rounding: `seed`, or by default
    torch.initial_seed() (which torch.manual_seed sets), as a signed 64-bit
    integer (the op's int)."""
    if seed is None:
        seed = torch.initial_seed()
    if isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**64:
        raise ValueError(f"Invalid rounding_seed: {seed!r}; expected None or an integer "
                         "in [-2**63, 2**64)")
    return seed - 2**64 if seed >= 2**63 else seed


def rounding_for(group, dtype, ids):
    """The stochastic-rounding arguments of a call: the params' ids (their
    indices in the optimizer) and the seed, for bfloat16 params of a group
    that asks for it; nothing otherwise (round to nearest)."""
    if not group["stochastic_rounding"] or dtype != torch.bfloat16:
        return {}
    return {"rounding_ids": ids, "rounding_seed": rounding_seed_from(group["rounding_seed"])}


def shard_rounding_id(index, p):
    """The rounding id of this rank's shard of DTensor `p`, the param at
    `index` in the optimizer: NOTE: [rounding generator] keys the random
    bits on the id and the element's index in the tensor the kernel
    updates, which for a shard restarts at 0. The shard's offset in the
    whole tensor goes into the id's upper 32 bits, so shards of one param
    draw different bits (replicas of a shard the same, and the first shard
    those of an unsharded param). A signed 64-bit integer (the op's int)."""
    rounding_id = (index + (shard_offset(p) << 32)) & (2**64 - 1)
    return rounding_id - 2**64 if rounding_id >= 2**63 else rounding_id


def op_kwargs(group):
    lr = group["lr"]
    return dict(
        lr=0.0 if isinstance(lr, Tensor) else float(lr),  # a Tensor lr: see lr_for
        alpha=float(group["alpha"]),
        eps=float(group["eps"]),
        weight_decay=float(group["weight_decay"]),
        momentum=float(group["momentum"]),
        maximize=bool(group["maximize"]),
        eps_in_sqrt=bool(group["eps_in_sqrt"]),
        lr_in_momentum=bool(group["lr_in_momentum"]),
        decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
    )
