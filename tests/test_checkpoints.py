"""Checkpoints a user brings: torch's format both ways, old formats, and the
switches. (Distributed checkpoints, dcp and get/set_optimizer_state_dict on
2 ranks: test_distributed.py.)"""

import copy

import pytest
import torch

from fused_rmsprop import FusedRMSprop

KW = dict(momentum=0.9, centered=True, weight_decay=0.01)


def _trained(opt_class, steps=3, **kw):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(4, dtype=torch.float64))]
    opt = opt_class(params, **kw)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return params, opt


def _continue(params, opt, steps=2):
    gen = torch.Generator().manual_seed(9)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        opt.step()
    return [p.detach().clone() for p in params]


def _keys(state_dict):
    return ({k for g in state_dict["param_groups"] for k in g},
            {k for s in state_dict["state"].values() for k in s})


def test_state_dict_at_the_defaults_has_exactly_torchs_keys():
    ours, theirs = _trained(FusedRMSprop, **KW)[1], _trained(torch.optim.RMSprop, **KW)[1]
    assert _keys(ours.state_dict()) == _keys(theirs.state_dict())
    ours.param_groups[0]["lr"] = torch.tensor(0.01)  # a Tensor lr too
    assert _keys(ours.state_dict()) == _keys(theirs.state_dict())


@pytest.mark.parametrize("switch,value", [("eps_in_sqrt", True), ("initial_square_avg", 1.0),
                                          ("lr_in_momentum", True),
                                          ("decoupled_weight_decay", True)])
def test_a_switch_that_is_on_is_saved_and_restored(switch, value):
    params, opt = _trained(FusedRMSprop, **KW, **{switch: value})
    saved = opt.state_dict()
    assert saved["param_groups"][0][switch] == value
    fresh = FusedRMSprop(params, **KW)  # built with the switch off
    fresh.load_state_dict(copy.deepcopy(saved))
    assert fresh.param_groups[0][switch] == value


def test_a_state_dict_without_the_switches_takes_the_loaders_settings():
    params, opt = _trained(torch.optim.RMSprop, **KW)
    fresh = FusedRMSprop(params, eps_in_sqrt=True, **KW)
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert fresh.param_groups[0]["eps_in_sqrt"] is True
    assert fresh.param_groups[0]["state_dtype"] is None


@pytest.mark.parametrize("step_type", [int, float])
@pytest.mark.parametrize("capturable", [False, True])
def test_a_checkpoint_with_numeric_steps_loads_and_steps_like_torch(step_type, capturable):
    # torch before 1.12 (and some converters) saved `step` as a Python number.
    params, opt = _trained(torch.optim.RMSprop, **KW)
    old = copy.deepcopy(opt.state_dict())
    for s in old["state"].values():
        s["step"] = step_type(s["step"].item())
    results = []
    for opt_class in (FusedRMSprop, torch.optim.RMSprop):
        twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
        loaded = opt_class(twins, capturable=capturable, **KW)
        loaded.load_state_dict(copy.deepcopy(old))
        for p in twins:
            step = loaded.state[p]["step"]
            assert torch.is_tensor(step) and step.item() == 3.0
        results.append((_continue(twins, loaded), [loaded.state[p]["step"].item() for p in twins]))
    (ours, our_steps), (theirs, their_steps) = results
    assert our_steps == their_steps == [5.0, 5.0]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_either_class_continues_the_others_checkpoint(direction):
    first, second = ((torch.optim.RMSprop, FusedRMSprop) if direction == "torch_to_fused"
                     else (FusedRMSprop, torch.optim.RMSprop))
    params, opt = _trained(first, **KW)
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    other = second(twins, **KW)
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    for a, b in zip(_continue(params, opt), _continue(twins, other)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
