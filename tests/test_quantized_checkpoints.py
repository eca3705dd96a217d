"""FusedRMSprop(state_bits=8): the state_dict paths (round trips, loading into
full precision and back, torch_state_dict)."""

import copy

import pytest
import torch

from fused_rmsprop import FusedRMSprop, torch_state_dict
from fused_rmsprop._quantized import dequantize_state, quantize_state

from test_quantized_optimizer import _params, _run


def _trained(state_bits, steps=3, **kw):
    params = _params()
    opt = FusedRMSprop(params, state_bits=state_bits, momentum=0.9, centered=True, **kw)
    _run(opt, params, steps)
    return params, opt


def test_state_dict_round_trips_exactly_and_training_continues_the_same():
    params, opt = _trained(8)
    saved = copy.deepcopy(opt.state_dict())  # as if saved to disk (torch's loader shares
    clone = [p.detach().clone().requires_grad_() for p in params]
    other = FusedRMSprop(clone, state_bits=8, momentum=0.9, centered=True)
    other.load_state_dict(saved)
    for p, q in zip(params, clone):
        for key, value in opt.state[p].items():
            assert torch.equal(other.state[q][key], value) and \
                other.state[q][key].dtype == value.dtype, key
    _run(opt, params, 2, start=10)
    _run(other, clone, 2, start=10)
    assert all(torch.equal(p, q) for p, q in zip(params, clone))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_8bit_state_loads_into_full_precision_and_back(dtype):
    params, opt = _trained(8)
    full = FusedRMSprop([p.detach().clone().to(dtype).requires_grad_() for p in params],
                        momentum=0.9, centered=True)
    full.load_state_dict(opt.state_dict())
    big, big_full = opt.state[params[0]], full.state[full.param_groups[0]["params"][0]]
    for key in ("square_avg", "momentum_buffer", "grad_avg"):
        want = dequantize_state(big[key + "_codes"], big[key + "_scales"], key).to(dtype)
        assert torch.equal(big_full[key], want) and key + "_codes" not in big_full
    # and back: the full-precision state quantized again, exactly as before
    again = FusedRMSprop([p.detach().clone().requires_grad_() for p in params], state_bits=8,
                         momentum=0.9, centered=True)
    if dtype == torch.float32:
        again.load_state_dict(full.state_dict())
        back = again.state[again.param_groups[0]["params"][0]]
        for key in ("square_avg", "momentum_buffer", "grad_avg"):
            assert torch.equal(back[key + "_codes"], big[key + "_codes"]), key
            assert torch.equal(back[key + "_scales"], big[key + "_scales"]), key


def test_full_precision_state_is_quantized_when_loaded_or_when_the_group_switches():
    params, opt = _trained(None)
    eight = FusedRMSprop([p.detach().clone().requires_grad_() for p in params], state_bits=8,
                         momentum=0.9, centered=True)
    eight.load_state_dict(opt.state_dict())
    state = eight.state[eight.param_groups[0]["params"][0]]
    for key in ("square_avg", "momentum_buffer", "grad_avg"):
        codes, scales = quantize_state(opt.state[params[0]][key], key)
        assert torch.equal(state[key + "_codes"], codes) and torch.equal(
            state[key + "_scales"], scales)
    # switching a live optimizer's group converts at the next step
    opt.param_groups[0]["state_bits"] = 8
    _run(opt, params, 1)
    assert "square_avg_codes" in opt.state[params[0]]
    opt.param_groups[0]["state_bits"] = None
    _run(opt, params, 1)
    assert opt.state[params[0]]["square_avg"].dtype == torch.float32


def test_torch_state_dict_loads_into_torch_rmsprop_and_continues_as_full_precision():
    # (not centered: there v - grad_avg^2 of dequantized state can be far
    # below v, where 1-ulp differences between torch's kernels and ours grow)
    params = _params()
    opt = FusedRMSprop(params, state_bits=8, momentum=0.9, weight_decay=0.01)
    _run(opt, params, 3)
    converted = torch_state_dict(opt.state_dict())
    assert all("_codes" not in k for s in converted["state"].values() for k in s)
    assert "state_bits" not in converted["param_groups"][0]
    runs = []
    for cls in (torch.optim.RMSprop, FusedRMSprop):
        clone = [p.detach().clone().requires_grad_() for p in params]
        other = cls(clone, momentum=0.9, weight_decay=0.01)
        other.load_state_dict(copy.deepcopy(converted))  # (torch's loader shares tensors)
        _run(other, clone, 2, start=10)
        runs.append(clone)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_torch_state_dict_refuses_a_rule_torch_does_not_have():
    params = _params()
    opt = FusedRMSprop(params, state_bits=8, eps_in_sqrt=True)
    _run(opt, params, 1)
    with pytest.raises(ValueError, match="eps_in_sqrt=True"):
        torch_state_dict(opt.state_dict())


def test_state_dict_at_the_defaults_has_torchs_keys():
    params, opt = _trained(None, steps=1)
    assert not {"state_bits", "min_8bit_size"} & set(opt.state_dict()["param_groups"][0])
    params, opt = _trained(8, steps=1)
    assert opt.state_dict()["param_groups"][0]["state_bits"] == 8
