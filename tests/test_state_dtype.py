"""state_dtype=torch.float32: float32 state for float16/bfloat16 parameters."""

import copy

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing import assert_steps_match_reference

HALF = [torch.bfloat16, torch.float16]
KW = dict(momentum=0.9, centered=True, weight_decay=0.01)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_state_is_float32_and_every_step_matches_the_reference(dtype):
    p = torch.randn(10, dtype=dtype, requires_grad=True)
    opt = FusedRMSprop([p], state_dtype=torch.float32, **KW)
    p.grad = torch.randn(10, dtype=dtype)
    opt.step()
    for key in ("square_avg", "momentum_buffer", "grad_avg"):
        assert opt.state[p][key].dtype == torch.float32
    assert_steps_match_reference(FusedRMSprop, dtype=dtype, state_dtype=torch.float32, **KW)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_float32_state_tracks_torch_on_float32_copies_more_closely(dtype):
    def state_error(state_dtype):
        gen = torch.Generator().manual_seed(0)
        p = torch.randn(4096, generator=gen).to(dtype).requires_grad_()
        q = p.detach().float().requires_grad_()
        opt = FusedRMSprop([p], state_dtype=state_dtype, **KW)
        ref = torch.optim.RMSprop([q], **KW)
        for _ in range(7):
            g = torch.randn(4096, generator=gen).to(dtype)
            p.grad, q.grad = g, g.float()
            opt.step()
            ref.step()
        mine, theirs = opt.state[p]["square_avg"].double(), ref.state[q]["square_avg"].double()
        return ((mine - theirs).abs() / theirs.abs().clamp_min(1e-12)).median().item()

    # Rounding the state to the half type every step costs about an ulp of
    # it; float32 state leaves only the effect of the rounded parameters.
    assert state_error(torch.float32) < state_error(None) / 10


def test_float32_params_ignore_state_dtype_and_invalid_values_raise():
    p = torch.randn(3, requires_grad=True)
    q = torch.randn(3, dtype=torch.float64, requires_grad=True)
    opt = FusedRMSprop([p, q], state_dtype=torch.float32)
    p.grad, q.grad = torch.randn(3), torch.randn(3, dtype=torch.float64)
    opt.step()
    assert opt.state[q]["square_avg"].dtype == torch.float64
    with pytest.raises(ValueError, match="state_dtype"):
        FusedRMSprop([p], state_dtype=torch.float16)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_float32_state_survives_state_dict_save_and_load(dtype):
    p = torch.randn(64, dtype=dtype, requires_grad=True)
    opt = FusedRMSprop([p], state_dtype=torch.float32, **KW)
    for _ in range(3):
        p.grad = torch.randn(64, dtype=dtype)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    p2 = p.detach().clone().requires_grad_()
    opt2 = FusedRMSprop([p2], state_dtype=torch.float32, **KW)
    opt2.load_state_dict(saved)
    for key in ("square_avg", "momentum_buffer", "grad_avg"):
        assert opt2.state[p2][key].dtype == torch.float32
        assert torch.equal(opt2.state[p2][key], opt.state[p][key])  # not rounded on the way
    g = torch.randn(64, dtype=dtype)
    p.grad, p2.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    assert torch.equal(p, p2)


def test_torch_checkpoint_of_bfloat16_state_is_widened_on_load():
    p = torch.randn(16, dtype=torch.bfloat16, requires_grad=True)
    ref = torch.optim.RMSprop([p], momentum=0.9)
    p.grad = torch.randn(16, dtype=torch.bfloat16)
    ref.step()
    q = p.detach().clone().requires_grad_()
    opt = FusedRMSprop([q], momentum=0.9, state_dtype=torch.float32)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    assert opt.param_groups[0]["state_dtype"] == torch.float32
    assert opt.state[q]["square_avg"].dtype == torch.float32
    assert torch.equal(opt.state[q]["square_avg"], ref.state[p]["square_avg"].float())
    q.grad = p.grad.clone()
    opt.step()
    assert opt.state[q]["momentum_buffer"].dtype == torch.float32
