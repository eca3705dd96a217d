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


def test_state_dict_has_torchs_format_whatever_the_storage():
    # NOTE: [8-bit checkpoints]: float32 state under torch's keys, no storage options
    _, full = _trained(None, steps=1)
    params, opt = _trained(8, steps=1)
    saved, saved_full = opt.state_dict(), full.state_dict()
    assert saved["param_groups"] == saved_full["param_groups"]
    assert not {"state_bits", "min_8bit_size"} & set(saved["param_groups"][0])
    for index, p in enumerate(params):
        assert set(saved["state"][index]) == set(saved_full["state"][index])
        live = opt.state[p]
        for key in ("square_avg", "momentum_buffer", "grad_avg"):
            value = saved["state"][index][key]
            assert value.dtype == torch.float32 and value.shape == p.shape
            if key + "_codes" in live:  # decoded; the live state keeps its codes
                want = dequantize_state(live[key + "_codes"], live[key + "_scales"], key)
                assert torch.equal(value, want)
            else:  # below min_8bit_size: the state itself, as torch saves it
                assert value is live[key]
    assert "square_avg_codes" in opt.state[params[0]] and "square_avg" not in opt.state[params[0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_a_checkpoint_round_trip_keeps_every_code_and_scale(dtype):
    # codes -> float32 -> codes is exact for the same blocks, also where
    # torch's loader casts the float32 state to a bfloat16 parameter's dtype
    params = _params(dtype=dtype)
    opt = FusedRMSprop(params, state_bits=8, momentum=0.9, centered=True)
    _run(opt, params, 3)
    clone = [p.detach().clone().requires_grad_() for p in params]
    other = FusedRMSprop(clone, state_bits=8, momentum=0.9, centered=True)
    saved = copy.deepcopy(opt.state_dict())
    other.load_state_dict(saved)
    for p, q in zip(params, clone):
        assert set(other.state[q]) == set(opt.state[p])
        for key, value in opt.state[p].items():
            assert torch.equal(other.state[q][key], value), key
    # training on leaves the loaded 8-bit state's float32 tensors as they were
    # (torch's loader shares the rest, and so do torch's optimizers)
    _run(other, clone, 2, start=10)
    want = opt.state_dict()["state"][0]
    assert "square_avg_codes" in opt.state[params[0]]
    for key in ("square_avg", "momentum_buffer", "grad_avg"):
        assert torch.equal(saved["state"][0][key], want[key]), key


def test_torch_rmsprop_loads_an_8bit_checkpoint_and_continues():
    # A Trainer that saved FusedRMSprop(state_bits=8).state_dict() and loads
    # it into torch.optim.RMSprop: it steps as a full-precision FusedRMSprop
    # loading the same checkpoint does.
    params = _params()
    opt = FusedRMSprop(params, state_bits=8, momentum=0.9, weight_decay=0.01)
    _run(opt, params, 3)
    runs = []
    for cls in (torch.optim.RMSprop, FusedRMSprop):
        clone = [p.detach().clone().requires_grad_() for p in params]
        other = cls(clone, momentum=0.9, weight_decay=0.01)
        other.load_state_dict(copy.deepcopy(opt.state_dict()))
        _run(other, clone, 2, start=10)
        runs.append(clone)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_a_checkpoint_that_holds_codes_still_loads():
    # the live state as a state_dict (codes and scales), as saved before
    # checkpoints held float32 state
    params, opt = _trained(8)
    saved = opt.state_dict()
    saved["state"] = {i: copy.deepcopy(opt.state[p]) for i, p in enumerate(params)}
    for state_bits in (8, None):
        clone = [p.detach().clone().requires_grad_() for p in params]
        other = FusedRMSprop(clone, state_bits=state_bits, momentum=0.9, centered=True)
        other.load_state_dict(saved)
        got = other.state_dict()["state"]
        for i, want in opt.state_dict()["state"].items():
            for key, value in want.items():
                assert torch.equal(got[i][key], value), (state_bits, key)
