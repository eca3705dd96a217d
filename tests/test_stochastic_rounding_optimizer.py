"""FusedRMSprop(stochastic_rounding=True): options, reproducibility,
checkpoints, AMP skips, torch.compile, and the ids the generator is keyed on."""

import copy

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing.rounding import random_bits, round_stochastically


def model(dtype=torch.bfloat16, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 8)).to(dtype)


def train(m, opt, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    dtype = next(m.parameters()).dtype
    for _ in range(steps):
        x = torch.randn(16, 32, generator=gen).to(dtype)
        opt.zero_grad()
        m(x).float().pow(2).mean().backward()
        opt.step()


def param_bits(m):
    return [p.detach().view(torch.int16).clone() if p.dtype == torch.bfloat16 else
            p.detach().clone() for p in m.parameters()]


def assert_same(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def run(steps=20, **kwargs):
    m = model()
    train(m, FusedRMSprop(m.parameters(), lr=1e-3, **kwargs), steps)
    return param_bits(m)


def test_same_seed_same_bits_other_seed_other_bits():
    a = run(stochastic_rounding=True, rounding_seed=3, momentum=0.9, centered=True)
    b = run(stochastic_rounding=True, rounding_seed=3, momentum=0.9, centered=True)
    c = run(stochastic_rounding=True, rounding_seed=4, momentum=0.9, centered=True)
    nearest = run(momentum=0.9, centered=True)
    assert_same(a, b)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert not all(torch.equal(x, y) for x, y in zip(a, nearest))


def test_default_seed_follows_torch_manual_seed():
    params = list(model().parameters())
    torch.manual_seed(123)
    first = FusedRMSprop(params, stochastic_rounding=True)
    torch.manual_seed(2**64 - 1)  # stored as the op's signed 64-bit integer
    second = FusedRMSprop(params, stochastic_rounding=True)
    assert first.defaults["rounding_seed"] == 123
    assert second.defaults["rounding_seed"] == -1


def test_float32_params_are_unaffected():
    m1, m2 = model(torch.float32), model(torch.float32)
    train(m1, FusedRMSprop(m1.parameters(), stochastic_rounding=True), 5)
    train(m2, FusedRMSprop(m2.parameters()), 5)
    assert_same(param_bits(m1), param_bits(m2))


@pytest.mark.parametrize("state_dtype", [None, torch.float32])
def test_a_checkpoint_carries_the_generators_position(state_dtype):
    m = model()
    opt = FusedRMSprop(m.parameters(), lr=1e-3, momentum=0.5, stochastic_rounding=True,
                       rounding_seed=77, state_dtype=state_dtype)
    train(m, opt, 5)
    saved_model, saved = copy.deepcopy(m.state_dict()), copy.deepcopy(opt.state_dict())
    assert saved["param_groups"][0]["rounding_seed"] == 77
    train(m, opt, 5, seed=2)
    # a new optimizer with another seed takes the checkpoint's seed and steps
    m2 = model(seed=9)
    m2.load_state_dict(saved_model)
    opt2 = FusedRMSprop(m2.parameters(), lr=1e-3, momentum=0.5, stochastic_rounding=True,
                        rounding_seed=1, state_dtype=state_dtype)
    opt2.load_state_dict(saved)
    train(m2, opt2, 5, seed=2)
    assert_same(param_bits(m), param_bits(m2))


def test_state_dict_without_stochastic_rounding_has_torchs_keys():
    opt = FusedRMSprop(model().parameters(), rounding_seed=5)
    keys = set(opt.state_dict()["param_groups"][0])
    assert keys == set(torch.optim.RMSprop(model().parameters()).state_dict()["param_groups"][0])


def test_a_skipped_amp_step_leaves_the_generator_where_it_was():
    m1, m2 = model(), model()
    opt1 = FusedRMSprop(m1.parameters(), stochastic_rounding=True, rounding_seed=2)
    opt2 = FusedRMSprop(m2.parameters(), stochastic_rounding=True, rounding_seed=2)
    train(m1, opt1, 3)
    train(m2, opt2, 3)
    opt1.grad_scale, opt1.found_inf = torch.tensor(1.0), torch.tensor(1.0)
    train(m1, opt1, 1, seed=5)  # skipped: nothing written, steps not advanced
    opt1.found_inf = torch.tensor(0.0)
    train(m1, opt1, 4, seed=6)
    train(m2, opt2, 4, seed=6)
    assert_same(param_bits(m1), param_bits(m2))
    assert all(s["step"].item() == 7 for s in opt1.state.values())


def test_each_param_is_keyed_on_its_index_in_the_optimizer():
    # Group 0: a float32 param and a bfloat16 one without a grad; group 1: a
    # bfloat16 param (index 2 in the state_dict) and a float32 one. One group
    # mixes dtypes, so the step splits it.
    gen = torch.Generator().manual_seed(0)
    p32 = torch.randn(10, generator=gen, requires_grad=True)
    idle = torch.randn(10, generator=gen).bfloat16().requires_grad_()
    b = torch.randn(3000, generator=gen).bfloat16().requires_grad_()
    q32 = torch.randn(5, generator=gen, requires_grad=True)
    for p in (p32, b, q32):
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
    exact = b.detach().float().requires_grad_()
    exact.grad = b.grad.float()
    opt = FusedRMSprop([{"params": [p32, idle]}, {"params": [b, q32]}], lr=0.01,
                       stochastic_rounding=True, rounding_seed=8)
    assert opt.state_dict()["param_groups"][1]["params"] == [2, 3]
    for _ in range(2):
        FusedRMSprop([exact], lr=0.01).step()  # the float32 values before rounding
        with torch.no_grad():
            want = round_stochastically(
                exact, random_bits(b.numel(), seed=8, id=2, step=0, slot="param"))
        opt.step()
        assert torch.equal(b.detach().view(torch.int16), want.view(torch.int16))
        # the next step starts from the same values
        exact.data.copy_(b.detach().float())
        opt.state[b]["step"].zero_()
        opt.state[b]["square_avg"].zero_()


@pytest.mark.parametrize("kwargs,message", [
    ({"stochastic_rounding": "yes"}, "Invalid stochastic_rounding"),
    ({"rounding_seed": 1.5}, "Invalid rounding_seed"),
    ({"rounding_seed": True}, "Invalid rounding_seed"),
    ({"rounding_seed": 2**64}, "Invalid rounding_seed"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusedRMSprop(model().parameters(), **kwargs)


def test_compiled_step_stores_the_same_bits():
    m1, m2 = model(), model()
    opt1 = FusedRMSprop(m1.parameters(), lr=1e-3, stochastic_rounding=True, rounding_seed=4)
    opt2 = FusedRMSprop(m2.parameters(), lr=1e-3, stochastic_rounding=True, rounding_seed=4)
    compiled = torch.compile(opt2.step)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(16, 32, generator=gen).bfloat16()
        for m, opt, step in ((m1, opt1, opt1.step), (m2, opt2, compiled)):
            opt.zero_grad()
            m(x).float().pow(2).mean().backward()
            step()
    assert_same(param_bits(m1), param_bits(m2))
