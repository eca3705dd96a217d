"""The keyword arguments of one fused op call, from a param group."""

from __future__ import annotations

import torch
from torch import Tensor


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


def lr_for(lr, device):
    """A Tensor lr on the call's device is read by the kernel (no host sync,
    CUDA-graph safe). A CPU Tensor lr was read on the host in op_kwargs (no
    sync either); one on another GPU is copied over."""
    if not isinstance(lr, Tensor) or lr.is_cpu:
        return {}
    return {"lr_tensor": lr.to(device, torch.float32, non_blocking=True).reshape(())}


def op_kwargs(group):
    lr = group["lr"]
    return dict(
        # a Tensor lr on a GPU goes to the kernel as lr_tensor (see lr_for)
        lr=float(lr) if not isinstance(lr, Tensor) or lr.is_cpu else 0.0,
        alpha=float(group["alpha"]),
        eps=float(group["eps"]),
        weight_decay=float(group["weight_decay"]),
        momentum=float(group["momentum"]),
        maximize=bool(group["maximize"]),
        eps_in_sqrt=bool(group["eps_in_sqrt"]),
        lr_in_momentum=bool(group["lr_in_momentum"]),
        decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
    )
