"""The forms a parameter's state can take, one class each.

A form owns everything about how the state tensors (``square_avg``,
``momentum_buffer``, ``grad_avg``) are stored: the state-dict entries that
hold them, their creation, checks, conversion to and from the other forms,
re-layout, the op arguments they feed, and what a checkpoint restores. The
optimizer, the call builder and the checkpoint code ask `form_for` which form
a parameter wants and then talk to that object; none of them knows the forms.

A new form (4-bit, fp8, ...) is one class here, listed in FORMS and chosen in
`form_for`, plus its load/store policy in the kernels (docs/design.md).
"""

from __future__ import annotations

import torch

from ._quantized import BLOCK, dequantize_state, quantize_state
from ._state import (STATE_KEYS, DTensor, as_real, dense_layout, local, sharded_like, state_dtype,
                     wanted_keys)


def _describe(t):
    return (f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"
            if torch.is_tensor(t) else type(t).__name__)


class FullPrecision:
    """Each state a tensor of the parameter's shape and layout, in the
    parameter's dtype or (``state_dtype=torch.float32``) float32: torch's form."""

    marker = "square_avg"  # in a state dict when square_avg has this form

    @staticmethod
    def entries(key):
        return (key,)

    def holds(self, state, key):
        return key in state

    @staticmethod
    def slots(keys):
        """(state entry, op argument) for the state `keys` of a call."""
        return tuple((key, key + "s") for key in keys)

    @staticmethod
    def create(p, group, state, key, value):
        tensor = torch.zeros_like(p, dtype=state_dtype(p, group),
                                  memory_format=torch.preserve_format)
        if value != 0:
            as_real(tensor).fill_(value)
        state[key] = tensor

    @staticmethod
    def pop_values(p, state, key):
        return as_real(state.pop(key))

    @staticmethod
    def store(p, group, state, key, values):
        """Stores real `values` of as_real(p)'s shape."""
        tensor = torch.empty_like(dense_layout(p), dtype=state_dtype(p, group))
        as_real(tensor).copy_(values)
        state[key] = tensor

    @staticmethod
    def relayout(p, group, state, key):
        # e.g. a contiguous checkpoint loaded for a channels_last parameter,
        # or half-precision state where float32 is wanted
        value, layout, dtype = state[key], dense_layout(p), state_dtype(p, group)
        if value.stride() != layout.stride() or value.dtype != dtype:
            state[key] = torch.empty_like(layout, dtype=dtype).copy_(value)

    @staticmethod
    def check(p, group, state, key, where):
        value, wanted = state[key], state_dtype(p, group)
        if (not torch.is_tensor(value) or value.shape != p.shape
                or value.dtype not in (wanted, p.dtype) or value.device != p.device):
            raise RuntimeError(
                f"FusedRMSprop: state '{key}' of {where} has {_describe(value)}; expected "
                f"shape {tuple(p.shape)}, dtype {wanted}, device {p.device} "
                "(was a state_dict from another model loaded?)")

    def restore(self, p, group, state, saved):
        """After torch's loader: float32 state put back where torch cast it
        to a half-precision parameter's dtype and float32 is wanted (by
        state_dtype, or by the form p's group wants, which converts it
        exactly), and state saved in the parameter's dtype widened to float32
        where that is wanted."""
        wanted, converted = state_dtype(p, group), form_for(p, group) is not self
        for key in STATE_KEYS:
            value = saved.get(key)
            if (converted or wanted != p.dtype) and torch.is_tensor(value) \
                    and value.dtype == torch.float32:
                # (the kernel would update a kept tensor in place, and the
                # caller's state dict must not change; conversion only reads it)
                state[key] = value.to(p.device, copy=not converted)
            elif key in state and state[key].dtype != wanted:
                state[key] = state[key].to(wanted)

    @staticmethod
    def torch_format(saved, key, p):
        pass  # already torch's


class BlockwiseEightBit:
    """NOTE: [8-bit state codes] (csrc/quantized_state.h): ``<key>_codes``,
    uint8 laid out like the (real view of the) parameter, and ``<key>_scales``,
    float32, one per BLOCK elements in memory order.

    NOTE: [8-bit shards] For a DTensor parameter (FSDP2) the blocks are cut
    in each rank's shard, which the kernel updates as a tensor of its own:
    the codes are a DTensor placed like the parameter, and the scales a plain
    tensor of this rank's blocks (how many depends on the shard, so it has no
    global shape). Nothing is gathered; a checkpoint holds float32 state
    (NOTE: [8-bit checkpoints] in _checkpoint.py), which any sharding loads."""

    marker = "square_avg_codes"

    @staticmethod
    def entries(key):
        return key + "_codes", key + "_scales"

    def holds(self, state, key):
        return key + "_codes" in state

    @staticmethod
    def slots(keys):
        return tuple(pair for key in keys
                     for pair in ((key + "_codes", key + "s"), (key + "_scales", key + "_scales")))

    @staticmethod
    def create(p, group, state, key, value):
        """Every element `value` >= 0 (exact: code 255 is 1 times the scale)."""
        real = as_real(dense_layout(local(p)))
        codes = torch.zeros_like(real, dtype=torch.uint8)
        scales = torch.zeros((real.numel() + BLOCK - 1) // BLOCK, dtype=torch.float32,
                             device=real.device)
        if value != 0:
            codes.fill_(255)
            scales.fill_(value)
        state[key + "_codes"], state[key + "_scales"] = sharded_like(p, codes), scales

    @staticmethod
    def pop_values(p, state, key):
        """float32 values, a DTensor placed like the codes where they are one."""
        codes, scales = state.pop(key + "_codes"), state.pop(key + "_scales")
        return sharded_like(codes, dequantize_state(local(codes), scales, key))

    @staticmethod
    def store(p, group, state, key, values):
        layout, values = as_real(dense_layout(local(p))), local(values)
        if values.stride() != layout.stride():  # blocks follow memory order
            values = torch.empty_like(layout, dtype=values.dtype).copy_(values)
        codes, scales = quantize_state(values, key)
        state[key + "_codes"], state[key + "_scales"] = sharded_like(p, codes), scales

    def relayout(self, p, group, state, key):
        if local(state[key + "_codes"]).stride() != as_real(dense_layout(local(p))).stride():
            self.store(p, group, state, key, self.pop_values(p, state, key))

    @staticmethod
    def check(p, group, state, key, where):
        codes, scales = state[key + "_codes"], state.get(key + "_scales")
        real, sharded = as_real(p), isinstance(p, DTensor)
        shape, blocks = tuple(real.shape), (local(real).numel() + BLOCK - 1) // BLOCK
        if not (torch.is_tensor(codes) and codes.dtype == torch.uint8
                and tuple(codes.shape) == shape and codes.device == p.device
                and isinstance(codes, DTensor) == sharded):
            placed = ", a DTensor placed like the parameter" if sharded else ""
            raise RuntimeError(
                f"FusedRMSprop: state '{key}_codes' of {where} has {_describe(codes)}; "
                f"expected shape {shape}, dtype torch.uint8, device {p.device} (8-bit state "
                f"codes{placed})")
        if not (torch.is_tensor(scales) and scales.dtype == torch.float32
                and tuple(scales.shape) == (blocks,) and scales.device == p.device
                and not isinstance(scales, DTensor)):
            whose = " of this rank's shard" if sharded else ""
            raise RuntimeError(
                f"FusedRMSprop: state '{key}_scales' of {where} has {_describe(scales)}; expected "
                f"shape ({blocks},), dtype torch.float32, device {p.device} (one scale per "
                f"block of {BLOCK} elements{whose}, a plain tensor)")

    def restore(self, p, group, state, saved):
        """After torch's loader, which would cast codes and scales: the saved
        ones (a checkpoint that holds codes, saved before NOTE: [8-bit
        checkpoints])."""
        for key in STATE_KEYS:
            for entry in self.entries(key):
                if entry in state and torch.is_tensor(saved.get(entry)):
                    state[entry] = saved[entry].to(p.device, copy=True)

    def torch_format(self, saved, key, p):
        """float32 `key` in place of its codes and scales (torch casts it to
        the parameter's dtype when it loads it); complex64 for a complex
        parameter `p` (the codes are of its real view)."""
        if key + "_codes" in saved:
            values = self.pop_values(p, saved, key)
            if p is not None and p.is_complex():
                values = torch.view_as_complex(values.contiguous())
            saved[key] = values


FULL, EIGHT_BIT = FullPrecision(), BlockwiseEightBit()
FORMS = (FULL, EIGHT_BIT)


def group_forms(group):
    """(form of small params, form of large params, size threshold) of a group."""
    if group["state_bits"] == 8:
        return FULL, EIGHT_BIT, group["min_8bit_size"]
    return FULL, FULL, 0


def form_for(p, group):
    small, large, threshold = group_forms(group)
    return large if small is large or bool(p.numel() >= threshold) else small


def check_state(p, group, state, where):
    """Checks the state a step will use, in whatever form it holds it."""
    if not torch.is_tensor(state.get("step")):
        raise RuntimeError(f"FusedRMSprop: the state of {where} has no 'step' tensor")
    for key in wanted_keys(group):
        for form in FORMS:
            if form.holds(state, key):
                form.check(p, group, state, key, where)
                break  # a key missing is created on first use (torch would raise a KeyError)


def convert(p, group, state):
    """Brings the state p holds to the form its group wants (e.g. after
    state_bits changed, or a checkpoint saved in the other form)."""
    form = form_for(p, group)
    for key in STATE_KEYS:
        for other in FORMS:
            if other is not form and other.holds(state, key):
                form.store(p, group, state, key, other.pop_values(p, state, key))


def complete(p, group, state):
    """Converts p's state, creates what its group's options need and re-lays
    what is laid out unlike p (NOTE: [slow tier] in _prepare.py)."""
    convert(p, group, state)
    form = form_for(p, group)
    for key in wanted_keys(group):
        if not form.holds(state, key):
            value = group["initial_square_avg"] if key == "square_avg" else 0.0
            form.create(p, group, state, key, value)
    for key in STATE_KEYS:
        if form.holds(state, key):
            form.relayout(p, group, state, key)


def restore(p, group, state, saved):
    """After torch's loader has cast a checkpoint's state: the state each
    form keeps as saved, then converted to the form p's group wants."""
    for form in FORMS:
        form.restore(p, group, state, saved)
    convert(p, group, state)


def torch_format(saved, p=None):
    """A param's saved state (a fresh dict) in torch.optim.RMSprop's form.
    Without the param `p`, the state of a complex one stays its real view."""
    for key in STATE_KEYS:
        for form in FORMS:
            form.torch_format(saved, key, p)
    return saved
