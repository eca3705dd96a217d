"""FusedRMSprop against torch.optim.RMSprop and against the float64 reference."""

import itertools

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing import (
    assert_matches_reference,
    assert_matches_torch,
    assert_no_less_accurate,
    assert_steps_match_reference,
    compare_optimizers,
)

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
GRID = [
    dict(momentum=m, centered=c, weight_decay=wd, maximize=mx, alpha=a)
    for m, c, wd, mx, a in itertools.product(
        [0.0, 0.9], [False, True], [0.0, 0.1], [False, True], [0.99, 0.9])
]


def _id(kw):
    return "-".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hyper", GRID, ids=_id)
def test_matches_torch(hyper, dtype):
    assert_matches_torch(FusedRMSprop, dtype=dtype, steps=7, lr=0.01, **hyper)


@pytest.mark.parametrize("eps_in_sqrt", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hyper", GRID, ids=_id)
def test_matches_reference(hyper, dtype, eps_in_sqrt):
    assert_matches_reference(FusedRMSprop, dtype=dtype, steps=7, lr=0.01,
                             eps_in_sqrt=eps_in_sqrt, **hyper)


@pytest.mark.parametrize("eps_in_sqrt", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hyper", GRID[::3], ids=_id)
def test_every_step_within_ulps_of_reference(hyper, dtype, eps_in_sqrt):
    assert_steps_match_reference(FusedRMSprop, dtype=dtype, steps=7, lr=0.01,
                                 eps_in_sqrt=eps_in_sqrt, **hyper)


@pytest.mark.parametrize("initial_square_avg", [0.0, 1.0])
def test_initial_square_avg_matches_reference(initial_square_avg):
    assert_matches_reference(FusedRMSprop, dtype=torch.float32, momentum=0.9,
                             initial_square_avg=initial_square_avg, eps_in_sqrt=True)
    assert_steps_match_reference(FusedRMSprop, dtype=torch.float64,
                                 initial_square_avg=initial_square_avg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_large_tensor_spread_over_threads(dtype):
    # A few hundred thousand elements: several threads and many vectors.
    assert_matches_torch(FusedRMSprop, shapes=[(300_001,), (513, 517)], steps=3,
                         dtype=dtype, momentum=0.9, centered=True)


def test_many_tensors_in_one_group():
    shapes = [(i % 37 + 1, (i * 7) % 5 + 1) for i in range(300)] + [(0,)] * 5
    assert_matches_torch(FusedRMSprop, shapes=shapes, steps=3, momentum=0.9, weight_decay=0.1)


def test_several_param_groups_with_different_hyperparameters():
    def groups(params):
        return [
            {"params": params[0::3]},
            {"params": params[1::3], "lr": 0.05, "momentum": 0.9, "centered": True},
            {"params": params[2::3], "alpha": 0.9, "weight_decay": 0.1, "maximize": True},
        ]

    compare_optimizers(lambda p: FusedRMSprop(groups(p), lr=0.01),
                       lambda p: torch.optim.RMSprop(groups(p), lr=0.01),
                       dtype=torch.float32)


def test_mixed_dtypes_in_one_group():
    torch.manual_seed(0)
    cand = [torch.randn(n, requires_grad=True) for n in (5, 17, 33, 64)]
    cand[1].data = cand[1].data.double()
    cand[3].data = cand[3].data.double()
    base = [p.detach().clone().requires_grad_() for p in cand]
    exact = [p.detach().to(torch.float64, copy=True).requires_grad_() for p in cand]
    opts = [FusedRMSprop(cand, momentum=0.9), torch.optim.RMSprop(base, momentum=0.9),
            torch.optim.RMSprop(exact, momentum=0.9)]
    for _ in range(5):
        for pc, pb, pe in zip(cand, base, exact):
            pc.grad = torch.randn_like(pc)
            pb.grad = pc.grad.clone()
            pe.grad = pc.grad.double()
        for opt in opts:
            opt.step()
    for i, (pc, pb, pe) in enumerate(zip(cand, base, exact)):
        if pc.dtype == torch.float64:
            torch.testing.assert_close(pc, pb, rtol=1e-10, atol=1e-12)
        else:
            assert_no_less_accurate(pc, pb, pe, f"param {i}")


def test_complex_parameters_match_torch():
    compare_optimizers(lambda p: FusedRMSprop(p, momentum=0.9, centered=True),
                       lambda p: torch.optim.RMSprop(p, momentum=0.9, centered=True),
                       shapes=[(3,), (17, 2), (65,)], dtype=torch.complex64,
                       complex_params=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lr_in_momentum,decoupled", [(True, False), (False, True), (True, True)])
def test_framework_switches_match_reference(dtype, lr_in_momentum, decoupled):
    kw = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1, eps_in_sqrt=True,
              lr_in_momentum=lr_in_momentum, decoupled_weight_decay=decoupled)
    assert_matches_reference(FusedRMSprop, dtype=dtype, **kw)
    assert_steps_match_reference(FusedRMSprop, dtype=dtype, **kw)
