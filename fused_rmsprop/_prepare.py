"""The slow tier of a step: validation, state creation and conversion.

NOTE: [slow tier] Taken when the fast tier refuses a step (a reason from the
call builder, or the op's own checks, which run before it writes): the first
step, new parameters or options, a checkpoint in another form or layout,
mixed dtypes, strided views. It checks in Python only what the op cannot see
(sparse grads, overlapping memory, DTensor facts, and state before it is
converted for the op), brings each parameter's state to the form its group
wants (_state_forms.py), builds the calls with every group gathered with
care, and has the op check every call. A refusal of the op is raised again
naming the param group and the parameter. Anything that raises puts every
state dict back as it was, so a step that raises changes nothing."""

from __future__ import annotations

import re

import torch

from ._calls import build_calls, selected
from ._ops import rmsprop_check
from ._state import DTensor, Where, is_dense, new_step
from ._state_forms import EIGHT_BIT, check_state, complete, form_for


def prepare_calls(optimizer, select=None):
    """The step's calls, after validating and completing every state (of the
    params `select` names, default all: see _calls.selected)."""
    states = optimizer.state
    snapshots = []  # (param, its state's entries before, or None when it had none)
    try:
        for group_index, group in enumerate(optimizer.param_groups):
            if group["differentiable"]:
                raise ValueError("FusedRMSprop does not support differentiable=True")
            for i, p in selected(group, group_index, select):
                if p.grad is None:
                    continue
                where = Where(i, p, group_index)
                _check_param(p, group, where)
                snapshots.append((p, dict(states[p]) if p in states else None))
                state = states[p]
                if state:
                    check_state(p, group, state, where)
                else:
                    state["step"] = new_step(p)
                complete(p, group, state)
        everything = range(len(optimizer.param_groups))
        built = build_calls(optimizer, everything, optimizer._special_groups, select)
        if built.refusal is not None:
            raise RuntimeError(f"FusedRMSprop: internal error: {built.refusal} after setup")
        for call in built.calls:
            _check_call(optimizer, call)
    except BaseException:
        for p, entries in reversed(snapshots):
            if entries is None:
                states.pop(p, None)
            else:
                states[p].clear()
                states[p].update(entries)
        raise
    return built


def _check_param(p, group, where):
    grad = p.grad
    if grad.is_sparse:
        raise RuntimeError("RMSprop does not support sparse gradients "
                           f"(FusedRMSprop: {where} has a sparse grad)")
    if not (p.is_floating_point() or p.is_complex()):
        raise TypeError(f"FusedRMSprop: {where} has dtype {p.dtype}; "
                        "only floating-point and complex parameters can be optimized")
    if grad.shape != p.shape or grad.dtype != p.dtype or grad.device != p.device:
        raise RuntimeError(
            f"FusedRMSprop: the grad of {where} has shape {tuple(grad.shape)}, "
            f"dtype {grad.dtype}, device {grad.device}; expected the parameter's "
            f"{tuple(p.shape)}, {p.dtype}, {p.device}")
    # A strided view is updated through a dense stand-in, so the op never
    # sees its overlap. (Dense tensors never overlap; asking only for views
    # keeps this check out of what torch.compile traces for dense params.)
    if not is_dense(p) and torch._debug_has_internal_overlap(p) == 1:  # expand()
        raise RuntimeError(
            f"FusedRMSprop: {where} has elements that overlap in memory (strides "
            f"{p.stride()}); torch.optim.RMSprop cannot update it in place either")
    if isinstance(p, DTensor) and p.is_complex() and form_for(p, group) is EIGHT_BIT:
        raise ValueError(
            f"FusedRMSprop: state_bits=8 is not supported for complex DTensor parameters: "
            f"{where} is one; keep its state full precision (state_bits=None, or "
            "min_8bit_size above its size)")


_INDEXED = re.compile(r"fused_rmsprop: (\w+)\[(\d+)\]")


def _check_call(optimizer, call):
    """The op's checks of `call`; a refusal names the param it is about."""
    try:
        rmsprop_check(*call.lists.values(), **call.options)
    except RuntimeError as error:
        match = _INDEXED.search(str(error))
        if match is None or not str(error).startswith("fused_rmsprop:"):
            raise
        name, k = match.group(1), int(match.group(2))
        group_index, i = call.origins[k]
        p = optimizer.param_groups[group_index]["params"][i]
        entry = {name: entry for entry, name in call.slots}.get(name)
        what = f"state '{entry}'" if entry else f"op argument {name}"
        raise RuntimeError(f"FusedRMSprop: {what} of {Where(i, p, group_index)} refused: "
                           f"{error}") from None
