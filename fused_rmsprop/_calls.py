"""The call builder: a step's op calls, gathered from the param groups.

NOTE: [fast tier] A steady training step only gathers tensors into lists:
one `Call` per (param group, state form, device, dtype). The builder looks at
nothing the op checks itself; it refuses (with a reason) only what it cannot
pass on: a parameter without state, or state in another form than its group
wants. The op checks every argument before it writes anything, so a call
that the op refuses changes nothing, and the step then takes the slow tier
(_prepare.py), which validates, creates or converts state, and builds again.

NOTE: [grouping] Splitting a group's lists by device and dtype costs
0.1-0.4 ms per step for 200 params, so a group is passed whole unless it is
known to need care (`special`, filled by the slow tier): mixed devices or
dtypes, strided-view parameters, or grads laid out unlike their parameter.
Passing such a group whole is safe: the op refuses it before writing. A
strided view is updated through a dense stand-in, copied back after the call
(2 more passes over that parameter only)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._op_args import amp_tensors, lr_for, op_kwargs, rounding_for
from ._ops import rmsprop_
from ._state import DTensor, as_real, is_dense, local_shards
from ._state_forms import group_forms

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)  # never DTensors
_LISTS = ("params", "grads", "square_avgs", "momentum_buffers", "grad_avgs", "state_steps")


class Call:
    """One op call: its tensor lists by argument name, its other arguments,
    where each param came from, and the strided-view params whose dense
    stand-ins it updates."""

    __slots__ = ("lists", "options", "ids", "origins", "views", "slots")

    def __init__(self, slots):
        self.slots = slots  # (state entry, op argument) of each state tensor
        self.lists = {name: [] for name in _LISTS}
        self.lists.update((name, []) for _, name in slots)
        self.ids = []      # each param's index in the optimizer (stochastic rounding)
        self.origins = []  # (group index, index in the group), kept for special groups
        self.views = []    # (strided view, its dense stand-in)
        self.options = None

    def subset(self, positions):
        """The call of the params at `positions` (a split by device and dtype)."""
        sub = Call(self.slots)
        sub.lists = {name: [lst[k] for k in positions] if lst else []
                     for name, lst in self.lists.items()}
        sub.ids = [self.ids[k] for k in positions] if self.ids else []
        sub.origins = [self.origins[k] for k in positions]
        return sub

    def run(self):
        rmsprop_(**self.lists, **self.options)
        for view, dense in self.views:
            view.copy_(dense)


class Built:
    """The calls of a step, or the reason the fast tier refuses it. The
    gradients are gathered either way (clipping takes their norm)."""

    __slots__ = ("calls", "refusal", "dtensors", "has_complex")

    def __init__(self):
        self.calls, self.refusal, self.dtensors, self.has_complex = [], None, [], False

    def grads(self):
        return [g for call in self.calls for g in call.lists["grads"]]


def build_calls(optimizer, careful, special):
    """The step's calls. `careful`: the indices of the param groups to gather
    with care (NOTE: [grouping]): the fast tier passes `special`, the slow
    tier every group; those found to need care are added to `special`."""
    built = Built()
    state = optimizer.state
    amp = amp_tensors(optimizer)
    first_id = 0  # the index in the optimizer of the group's first param
    compiling = torch.compiler.is_compiling()
    for index, group in enumerate(optimizer.param_groups):
        group_first_id, first_id = first_id, first_id + len(group["params"])
        care = index in careful
        keys = ("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ()) \
            + (("grad_avg",) if group["centered"] else ())
        small, large, threshold = group_forms(group)
        calls = {small: Call(small.slots(keys))}
        if large is not small:
            calls[large] = Call(large.slots(keys))
        rounding = group["stochastic_rounding"]
        views, copied = [], False
        for i, p in enumerate(group["params"]):
            grad = p.grad
            if grad is None:
                continue
            s = state.get(p) or {}
            # type() first: isinstance(p, DTensor) costs 0.1 us per param
            if type(p) not in _PLAIN_TYPES and isinstance(p, DTensor):
                built.dtensors.append(p)
                p, grad, s = local_shards(p, grad, s)
            if care:
                if not is_dense(p):
                    view, p = p, torch.empty_like(p).copy_(p)
                    views.append((view, p))
                if grad.stride() != p.stride() and grad.shape == p.shape:
                    grad, copied = torch.empty_like(p).copy_(grad), True
            if p.is_complex():
                built.has_complex = True
                p, grad = as_real(p), as_real(grad)
                s = {k: as_real(v) for k, v in s.items()}
            if large is small:
                form = small
            # (traced, the size test is left out: dynamo cannot always
            # evaluate it, and the state already says it)
            elif large.marker in s if compiling else p.numel() >= threshold:
                form = large
            else:
                form = small
            call = calls[form]
            lists = call.lists
            lists["params"].append(p)
            lists["grads"].append(grad)
            if care:
                call.origins.append((index, i))
            if rounding:
                call.ids.append(group_first_id + i)
            if built.refusal is not None:
                continue
            step = s.get("step")
            if step is None:
                built.refusal = f"parameter {i} of param group {index} has no state"
                continue
            lists["state_steps"].append(step)
            for entry, name in call.slots:
                value = s.get(entry)
                if value is None:
                    built.refusal = (f"parameter {i} of param group {index} has no '{entry}' "
                                     "(new options, or state in another form)")
                    break
                lists[name].append(value)
        kwargs = op_kwargs(group)
        group_calls = []
        for call in calls.values():
            if not call.lists["params"]:
                continue
            split = _split_by_device_and_dtype(call) if care else [call]
            copied = copied or len(split) > 1
            group_calls += split
        if views or copied:
            special.add(index)
            group_calls[-1].views = views
        for call in group_calls:
            p = call.lists["params"][0]
            call.options = dict(kwargs, **amp(p.device), **lr_for(group["lr"], p.device),
                                **rounding_for(group, p.dtype, call.ids))
        built.calls += group_calls
    return built


def _split_by_device_and_dtype(call):
    positions = {}
    for k, p in enumerate(call.lists["params"]):
        positions.setdefault((p.device, p.dtype), []).append(k)
    if len(positions) == 1:
        return [call]
    return [call.subset(ks) for ks in positions.values()]
