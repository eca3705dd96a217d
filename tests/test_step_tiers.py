"""The two tiers of a step (fused_rmsprop/_calls.py, _prepare.py): a steady
loop stays in the fast tier, every refusal has a reason, and the op's
refusals are raised naming the parameter."""

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop._calls import build_calls


def _params(kind):
    torch.manual_seed(0)
    if kind == "views":
        return [torch.nn.Parameter(torch.randn(10, 5, 2)[..., 0]), torch.nn.Parameter(torch.randn(3))]
    if kind == "mixed dtypes":
        return [torch.nn.Parameter(torch.randn(5)),
                torch.nn.Parameter(torch.randn(7, dtype=torch.float64))]
    if kind == "complex":
        return [torch.nn.Parameter(torch.randn(4, dtype=torch.complex64))]
    if kind == "channels_last grad":
        return [torch.nn.Parameter(torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last))]
    if kind == "bfloat16":
        return [torch.nn.Parameter(torch.randn(300, dtype=torch.bfloat16)) for _ in range(3)]
    return [torch.nn.Parameter(torch.randn(300)) for _ in range(3)]


CASES = [
    ("plain", {}),
    ("plain", dict(momentum=0.9, centered=True, weight_decay=0.1)),
    ("plain", dict(state_bits=8, min_8bit_size=256, momentum=0.9, centered=True)),
    ("plain", dict(max_grad_norm=0.5)),
    ("bfloat16", dict(stochastic_rounding=True, momentum=0.9)),
    ("bfloat16", dict(state_bits=8, min_8bit_size=0, stochastic_rounding=True)),
    ("views", dict(momentum=0.9)),
    ("mixed dtypes", {}),
    ("complex", dict(centered=True)),
    ("channels_last grad", {}),
]


@pytest.mark.parametrize("kind, options", CASES)
def test_a_steady_loop_never_leaves_the_fast_tier(kind, options):
    params = _params(kind)
    opt = FusedRMSprop(params, lr=1e-3, **options)
    for step in range(6):
        for p in params:
            p.grad = torch.randn_like(p).contiguous()  # channels_last params: a contiguous grad
        opt.step()
        if step == 0:
            assert opt.slow_steps == 1  # the first step creates the state
    assert opt.slow_steps == 1, f"{kind} {options}: left the fast tier in a steady loop"


def test_new_options_take_the_slow_tier_once_with_a_reason():
    params = _params("plain")
    opt = FusedRMSprop(params)
    for p in params:
        p.grad = torch.randn_like(p)
    assert build_calls(opt, set(), set()).refusal == "a parameter of param group 0 has no 'step'"
    opt.step()
    assert build_calls(opt, set(), set()).refusal is None
    opt.param_groups[0]["momentum"] = 0.9
    assert build_calls(opt, set(), set()).refusal == \
        "a parameter of param group 0 has no 'momentum_buffer'"
    opt.step()
    opt.param_groups[0]["state_bits"] = 8
    opt.param_groups[0]["min_8bit_size"] = 0
    assert "has no 'square_avg_codes'" in build_calls(opt, set(), set()).refusal
    opt.step()
    opt.step()
    assert opt.slow_steps == 3


def test_the_gradients_are_gathered_even_when_the_fast_tier_refuses():
    # clip_grad_norm_ before the first step takes the norm of what the
    # builder gathered, without creating any state.
    params = _params("plain")
    for p in params:
        p.grad = torch.randn_like(p)
    opt = FusedRMSprop(params)
    built = build_calls(opt, set(), set())
    assert built.refusal is not None
    assert [g.data_ptr() for g in built.grads()] == [p.grad.data_ptr() for p in params]
    norm = opt.clip_grad_norm_(1.0)
    torch.testing.assert_close(norm, torch.linalg.vector_norm(torch.cat([p.grad for p in params])))
    assert not opt.state


def test_a_refusal_of_the_op_names_the_group_and_the_parameter():
    # A step counter of an integer dtype passes the Python checks (it is a
    # tensor); the op refuses it, and the message says whose it is.
    a, b, c = _params("plain")
    opt = FusedRMSprop([{"params": [a]}, {"params": [b, c], "lr": 0.1}])
    for p in (a, b, c):
        p.grad = torch.randn_like(p)
    opt.step()
    opt.state[c]["step"] = torch.tensor(1, dtype=torch.int64)
    before = [p.detach().clone() for p in (a, b, c)]
    with pytest.raises(RuntimeError, match=r"op argument state_steps of parameter 1 of param "
                                           r"group 1 \(shape \(300,\)\) refused: fused_rmsprop: "
                                           r"state_steps\[1\] must be a one-element float32"):
        opt.step()
    for p, old in zip((a, b, c), before):
        assert torch.equal(p.detach(), old)
    assert opt.state[c]["step"].dtype == torch.int64  # left as it was


def test_a_state_the_op_refuses_is_named_by_its_entry():
    # Scales that are a strided view pass the Python check (shape, dtype,
    # device) but not the op's: the message names the state entry and the
    # parameter.
    (p,) = [torch.nn.Parameter(torch.randn(256))]
    opt = FusedRMSprop([p], state_bits=8, min_8bit_size=0)
    p.grad = torch.randn_like(p)
    opt.step()
    opt.state[p]["square_avg_scales"] = torch.ones(4)[::2]
    with pytest.raises(RuntimeError, match=r"state 'square_avg_scales' of parameter 0 of param "
                                           r"group 0 .* refused: .*square_avg_scales\[0\] must "
                                           "be a contiguous"):
        opt.step()


def test_the_norm_sums_the_grads_in_the_params_order_whatever_the_calls():
    # A group with 8-bit and full-precision state makes two calls; the norm is
    # still of the grads in the params' order (as before the call builder),
    # so clipping gives the same bits however the calls are cut.
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64))
              for s in ((70000,), (231,), (5000,))]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = FusedRMSprop(params, state_bits=8, min_8bit_size=1000)
    opt.step()
    assert len(build_calls(opt, set(), set()).calls) == 2
    expected = torch.ops.fused_rmsprop.grad_norm([p.grad for p in params], 2.0)
    assert torch.equal(opt.clip_grad_norm_(1.0), expected)
