"""FusedRMSprop's state_dict: the format of torch.optim.RMSprop, both ways."""

from __future__ import annotations

import torch

from ._op_args import rounding_seed_from
from ._quantized import MIN_8BIT_SIZE
from ._state import new_step
from ._state_forms import restore, torch_format

# FusedRMSprop's own param-group options with the values that reproduce
# torch.optim.RMSprop. NOTE: [torch's format] A state_dict leaves out every
# one of them that has this value, so a state_dict at these defaults has
# exactly torch's keys: torch.distributed.checkpoint (dcp.load,
# set_optimizer_state_dict), which matches keys one to one, then moves state
# between the two classes in either direction. A group loaded without one of
# them (from torch, or saved at the default) takes the loading optimizer's
# own setting. How this optimizer stores state (state_bits, min_8bit_size)
# is never saved: NOTE: [storage options].
#
# NOTE: [8-bit checkpoints] 8-bit state is saved as float32 tensors under
# torch's keys (``square_avg``, ...), the codes decoded: a checkpoint is the
# same whatever the storage, so torch.optim.RMSprop loads and continues it,
# DCP reshards it to any number of ranks (the blocks of the codes are cut in
# each rank's shard, NOTE: [8-bit shards]), and a FusedRMSprop with 8-bit
# state that loads it encodes it again: into the same codes and scales when
# its blocks are the same (a codes -> float32 -> codes round trip is exact,
# tests/test_quantized_checkpoints.py), within the codes' error bound when
# they are not. The cost: state_dict() makes 4 bytes per element and state
# (docs/8bit-state.md, "Checkpoints", measured). A checkpoint that holds codes
# (saved before this format) still loads.
EXTRA_DEFAULTS = {
    "eps_in_sqrt": False,
    "initial_square_avg": 0.0,
    "lr_in_momentum": False,
    "decoupled_weight_decay": False,
    "state_dtype": None,
    "stochastic_rounding": False,
    "state_bits": None,
    "min_8bit_size": MIN_8BIT_SIZE,
}


STORAGE_OPTIONS = ("state_bits", "min_8bit_size")


class TorchFormatCheckpoints:
    """state_dict, load_state_dict and __setstate__ for FusedRMSprop."""

    def state_dict(self):
        """torch.optim.RMSprop's state_dict (NOTE: [torch's format]); 8-bit
        state is in it as float32 tensors, new ones (the live state holds
        codes): see NOTE: [8-bit checkpoints]."""
        state_dict = super().state_dict()
        for group in state_dict["param_groups"]:  # fresh dicts, safe to edit
            for key, default in EXTRA_DEFAULTS.items():
                if key in STORAGE_OPTIONS or key in group and group[key] == default:
                    group.pop(key, None)
            if not group.get("stochastic_rounding", False):
                group.pop("rounding_seed", None)  # used only with stochastic rounding
        # torch's state_dict numbers the params in order over the groups and
        # shares each param's state dict: copied before editing
        params = [p for group in self.param_groups for p in group["params"]]
        state_dict["state"] = {index: torch_format(dict(saved), params[index])
                               for index, saved in state_dict["state"].items()}
        return state_dict

    def __setstate__(self, state):
        super().__setstate__(state)
        self._init_tiers()
        for key, value in (("max_grad_norm", None), ("norm_type", 2.0), ("_in_zero", False)):
            self.__dict__.setdefault(key, value)
        self.__dict__.setdefault("_clipping", {"pending": None, "last": None})
        # hooks are not pickled with the params: a copy does not release gradients
        self.__dict__.setdefault("_release", None)
        # pickled before stochastic rounding existed
        self.defaults.setdefault("stochastic_rounding", False)
        self.defaults.setdefault("rounding_seed", rounding_seed_from(None))
        self.defaults.setdefault("state_bits", None)  # pickled before 8-bit state existed
        self.defaults.setdefault("min_8bit_size", MIN_8BIT_SIZE)
        for group in self.param_groups:
            # Groups loaded from torch.optim.RMSprop (or saved at the
            # defaults) lack some keys; they take this optimizer's settings.
            for key, value in self.defaults.items():
                if key not in ("lr", "alpha", "eps", "weight_decay"):
                    group.setdefault(key, value)
            # torch before 1.12 (and some converters) saved `step` as a
            # number; torch.optim.RMSprop converts it, and so do we.
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = new_step(p, p_state["step"])

    def load_state_dict(self, state_dict):
        """torch's loader, keeping float32 state of half-precision parameters.

        torch.optim.Optimizer.load_state_dict casts every floating-point state
        tensor to its parameter's dtype, which would round float32 state
        (``state_dtype=torch.float32``) to bfloat16 or float16. The float32
        tensors are set aside first and put back afterwards; state saved in
        the parameter's dtype (e.g. by torch.optim.RMSprop) is widened. A
        `step` saved on the CPU (torch.optim.RMSprop's default) moves to the
        parameter's device (NOTE: [step on the device]). 8-bit state keeps
        its uint8 codes and float32 scales (torch would cast both). This
        optimizer's own state_bits and min_8bit_size stay (NOTE: [storage
        options]): state saved in the other form (8-bit where this optimizer
        keeps full precision, or the reverse) is converted.
        """
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        # what was saved, before torch's loader casts it
        saved = {i: dict(state_dict["state"].get(i, {})) for i in ids}
        # NOTE: [storage options] state_bits and min_8bit_size say how this
        # process stores state, not how training goes: they stay this
        # optimizer's own, and the loaded state is converted to them.
        storage = [{k: g[k] for k in STORAGE_OPTIONS} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, own in zip(self.param_groups, storage):
            group.update(own)
        pairs = [(group, p) for group in self.param_groups for p in group["params"]]
        for saved_id, (group, p) in zip(ids, pairs):
            state = self.state.get(p, {})
            step = state.get("step")
            if torch.is_tensor(step) and step.device != p.device:
                state["step"] = step.to(p.device)
            if state:
                restore(p, group, state, saved[saved_id])


def torch_state_dict(state_dict):
    """A copy of a FusedRMSprop state_dict that torch.optim.RMSprop loads.

    FusedRMSprop's own param-group options are left out, and 8-bit state
    saved as codes (``<key>_codes`` and ``<key>_scales``, before checkpoints
    held float32 state) becomes float32 ``<key>`` tensors (torch casts them
    to each parameter's dtype when it loads them; the state of a complex
    parameter stays its real view, which only state_dict() can undo).
    A group whose options change the update rule (another framework's
    convention, clipping aside) raises ValueError: torch would continue it
    with a different rule."""
    groups = []
    for group in state_dict["param_groups"]:
        for key, default in EXTRA_DEFAULTS.items():
            if key in ("eps_in_sqrt", "lr_in_momentum", "decoupled_weight_decay") \
                    and group.get(key, default) != default:
                raise ValueError(f"torch_state_dict: a param group has {key}={group[key]!r}; "
                                 "torch.optim.RMSprop has no such option and would continue "
                                 "with its own update rule")
        groups.append({k: v for k, v in group.items()
                       if k not in EXTRA_DEFAULTS and k != "rounding_seed"})
    state = {index: torch_format(dict(saved)) for index, saved in state_dict["state"].items()}
    return {"state": state, "param_groups": groups}
