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
(2 more passes over that parameter only).

NOTE: [state columns] The state lists are list comprehensions over the
params' state dicts, one per entry, after the params are gathered: fewer
instructions than appending entry by entry, and no object per param. (Reading
a row per param with operator.itemgetter made a tuple per param, whose
garbage collection cost more than the rows saved: 200 params, plain step 260
vs 231 us with gc on and off.)"""

from __future__ import annotations

import torch
from torch import Tensor

from ._op_args import amp_tensors, lr_for, op_kwargs, rounding_for, shard_rounding_id
from ._ops import rmsprop_
from ._state import DTensor, as_real, is_dense, local_shards, wanted_keys
from ._state_forms import group_forms

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)  # never DTensors
_NO_STATE = {}


class Call:
    """One op call: its tensor lists by argument name, its other arguments,
    where each param came from, and the strided-view params whose dense
    stand-ins it updates."""

    __slots__ = ("lists", "keyword_lists", "options", "ids", "origins", "views", "slots")

    def __init__(self, slots, params, grads, ids, origins):
        self.slots = slots  # (state entry, op argument) of each state tensor
        # The op's positional lists, in its order: passed by position (by
        # keyword, the dispatcher takes 10 % longer per call), and the
        # keyword-only ones (8-bit state's scales), which join the options.
        self.lists = {"params": params, "grads": grads, "square_avgs": [],
                      "momentum_buffers": [], "grad_avgs": [], "state_steps": []}
        self.keyword_lists = {}
        self.ids = ids          # each param's index in the optimizer (stochastic rounding)
        # (group index, index in the group) of each param, in careful groups:
        # the slow tier names a param the op refuses by it
        self.origins = origins
        self.views = ()         # (strided view, its dense stand-in)
        self.options = None

    def gather_state(self, states):
        """The state lists from each param's state dict; the missing entry
        (no state, new options, state in another form), or None."""
        lists = self.lists
        try:
            lists["state_steps"] = [s["step"] for s in states]
            for entry, name in self.slots:
                (lists if name in lists else self.keyword_lists)[name] = [s[entry] for s in states]
        except KeyError as missing:  # (the one lookup in these lines)
            return missing.args[0]
        return None

    def subset(self, positions):
        """The call of the params at `positions`."""
        def pick(lst):
            return [lst[k] for k in positions] if lst else []

        sub = Call(self.slots, pick(self.lists["params"]), pick(self.lists["grads"]),
                   pick(self.ids), pick(self.origins))
        sub.lists = {name: pick(lst) for name, lst in self.lists.items()}
        return sub

    def run(self):
        rmsprop_(*self.lists.values(), **self.options)
        for view, dense in self.views:
            view.copy_(dense)


class Built:
    """The calls of a step, or the reason the fast tier refuses it. The
    gradients are gathered either way (clipping takes their norm)."""

    __slots__ = ("calls", "refusal", "dtensors", "has_complex", "group_grads")

    def __init__(self):
        self.calls, self.refusal, self.dtensors, self.has_complex = [], None, [], False
        self.group_grads = []  # each group's gathered grads, in the params' order

    def grads(self):
        """Every gathered grad in the params' order (the order a norm sums in)."""
        return [g for grads in self.group_grads for g in grads]


def selected(group, index, select):
    """(index in the group, param) of the params of param group `index` that
    `select` names ({group index: [index in the group, ...]}; None: all)."""
    if select is None:
        return enumerate(group["params"])
    params = group["params"]
    return [(i, params[i]) for i in select.get(index, ())]


def build_calls(optimizer, careful, special, select=None):
    """The step's calls. `careful`: the indices of the param groups to gather
    with care (NOTE: [grouping]): the fast tier passes `special`, the slow
    tier every group; those found to need care are added to `special`.
    `select`: only these params (see `selected`; gradient release updates a
    bucket of them)."""
    built = Built()
    state = optimizer.state
    amp = amp_tensors(optimizer)
    first_id = 0  # the index in the optimizer of the group's first param
    compiling = torch.compiler.is_compiling()
    for index, group in enumerate(optimizer.param_groups):
        group_first_id, first_id = first_id, first_id + len(group["params"])
        care, rounding = index in careful, group["stochastic_rounding"]
        small, large, threshold = group_forms(group)
        params, grads, states, ids, origins, large_at = [], [], [], [], [], []
        views, copied = [], False
        for i, p in selected(group, index, select):
            grad = p.grad
            if grad is None:
                continue
            s = state.get(p, _NO_STATE)
            # (traced, the size test is left out: dynamo cannot always
            # evaluate it, and the state already says it; of a DTensor, the
            # size is the whole tensor's, so every rank picks the same form)
            if large is not small and (large.marker in s if compiling
                                       else p.numel() >= threshold):
                large_at.append(len(params))
            # type() first: isinstance(p, DTensor) costs 0.1 us per param
            if type(p) not in _PLAIN_TYPES and isinstance(p, DTensor):
                built.dtensors.append(p)
                if rounding:
                    ids.append(shard_rounding_id(group_first_id + i, p))
                p, grad, s = local_shards(p, grad, s)
            elif rounding:
                ids.append(group_first_id + i)
            if care:
                origins.append((index, i))
                if not is_dense(p):
                    view, p = p, torch.empty_like(p).copy_(p)
                    views.append((view, p))
                if grad.stride() != p.stride() and grad.shape == p.shape:
                    grad, copied = torch.empty_like(p).copy_(grad), True
            if p.is_complex():
                built.has_complex = True
                p, grad = as_real(p), as_real(grad)
                s = {k: as_real(v) for k, v in s.items()}
            params.append(p)
            grads.append(grad)
            states.append(s)
        if not params:
            continue
        built.group_grads.append(grads)
        keys = wanted_keys(group)
        whole = Call(small.slots(keys), params, grads, ids, origins)
        calls = _split_by_form(whole, states, large_at, large.slots(keys))
        forms = len(calls)
        if care:
            calls = [sub for call, sub_states in calls
                     for sub in _split_by_device_and_dtype(call, sub_states)]
        group_calls = []
        for call, call_states in calls:
            missing = call.gather_state(call_states)
            if missing is not None and built.refusal is None:
                built.refusal = f"a parameter of param group {index} has no '{missing}'"
            group_calls.append(call)
        if views or copied or len(group_calls) > forms:  # mixed devices or dtypes
            special.add(index)
        if views:
            group_calls[-1].views = views
        kwargs = op_kwargs(group)
        for call in group_calls:
            p = call.lists["params"][0]
            call.options = dict(kwargs, **amp(p.device), **lr_for(group["lr"], p.device),
                                **rounding_for(group, p.dtype, call.ids), **call.keyword_lists)
        built.calls += group_calls
    return built


def _split_by_form(call, states, large_at, large_slots):
    """[(call, its params' states)]: the params whose state has the large
    form (`large_at`, e.g. 8-bit) in a call of their own."""
    if not large_at:
        return [(call, states)]
    small_at = sorted(set(range(len(states))) - set(large_at))
    large = call.subset(large_at)
    large.slots = large_slots
    pairs = [(large, [states[k] for k in large_at])]
    if small_at:
        pairs.insert(0, (call.subset(small_at), [states[k] for k in small_at]))
    return pairs


def _split_by_device_and_dtype(call, states):
    positions = {}
    for k, p in enumerate(call.lists["params"]):
        positions.setdefault((p.device, p.dtype), []).append(k)
    if len(positions) == 1:
        return [(call, states)]
    return [(call.subset(ks), [states[k] for k in ks]) for ks in positions.values()]
