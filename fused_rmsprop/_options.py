"""FusedRMSprop's constructor arguments: their checks, and the param-group
defaults they make."""

from __future__ import annotations

import torch
from torch import Tensor

from ._op_args import rounding_seed_from


def checked_defaults(lr, alpha, eps, weight_decay, momentum, centered, capturable, foreach,
                     maximize, differentiable, eps_in_sqrt, initial_square_avg, lr_in_momentum,
                     decoupled_weight_decay, state_dtype, stochastic_rounding, rounding_seed,
                     state_bits, min_8bit_size):
    # The same checks, in the same order and words, as torch.optim.RMSprop.
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= momentum:
        raise ValueError(f"Invalid momentum value: {momentum}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if not 0.0 <= alpha:
        raise ValueError(f"Invalid alpha value: {alpha}")
    if not 0.0 <= initial_square_avg < float("inf"):
        raise ValueError(f"Invalid initial_square_avg value: {initial_square_avg}")
    if state_dtype not in (None, torch.float32):
        raise ValueError(f"Invalid state_dtype: {state_dtype}; use None (the parameter's "
                         "dtype, as torch) or torch.float32 (for float16/bfloat16 params)")
    if not isinstance(stochastic_rounding, bool):
        raise ValueError(f"Invalid stochastic_rounding: {stochastic_rounding!r}; expected "
                         "True or False")
    rounding_seed = rounding_seed_from(rounding_seed)
    if state_bits not in (None, 8) or isinstance(state_bits, bool):
        raise ValueError(f"Invalid state_bits: {state_bits!r}; use None (full-precision "
                         "state) or 8 (8-bit block-wise quantized state)")
    if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) \
            or min_8bit_size < 0:
        raise ValueError(f"Invalid min_8bit_size: {min_8bit_size!r}; expected an integer "
                         ">= 0 (parameters with fewer elements keep full-precision state)")
    if differentiable:
        raise ValueError(
            "FusedRMSprop does not support differentiable=True: its fused step "
            "is not recorded by autograd. Use torch.optim.RMSprop(differentiable=True)."
        )
    return {
        "lr": lr,
        "momentum": momentum,
        "alpha": alpha,
        "eps": eps,
        "centered": centered,
        "weight_decay": weight_decay,
        "capturable": capturable,
        "foreach": foreach,
        "maximize": maximize,
        "differentiable": differentiable,
        "eps_in_sqrt": eps_in_sqrt,
        "initial_square_avg": initial_square_avg,
        "lr_in_momentum": lr_in_momentum,
        "decoupled_weight_decay": decoupled_weight_decay,
        "state_dtype": state_dtype,
        "stochastic_rounding": stochastic_rounding,
        "rounding_seed": rounding_seed,
        "state_bits": state_bits,
        "min_8bit_size": min_8bit_size,
    }
