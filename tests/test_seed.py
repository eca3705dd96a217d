"""The seed (d2l, RMSProp section): its 2-D trace, reproduced exactly."""

import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing import ReferenceRMSprop


def _trace(optimizer_class):
    # f(x) = 0.1 x1^2 + 2 x2^2 from (-5, -2); lr 0.4, gamma 0.9, eps 1e-6 inside
    # the square root, 20 steps, in double precision as the seed's Python floats.
    x = torch.tensor([-5.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = optimizer_class([x], lr=0.4, alpha=0.9, eps=1e-6, eps_in_sqrt=True)
    for _ in range(20):
        opt.zero_grad()
        f = 0.1 * x[0] ** 2 + 2 * x[1] ** 2
        f.backward()
        opt.step()
    return x.detach()


def test_seed_2d_trace_prints_the_seed_numbers():
    x = _trace(FusedRMSprop)
    assert f"epoch 20, x1: {x[0]:f}, x2: {x[1]:f}" == "epoch 20, x1: -0.010599, x2: 0.000000"


def test_seed_2d_trace_matches_the_seed_update_written_out():
    # The seed's own from-scratch update, in plain Python floats.
    x1, x2, s1, s2 = -5.0, -2.0, 0.0, 0.0
    for _ in range(20):
        g1, g2 = 0.2 * x1, 4 * x2
        s1 = 0.9 * s1 + 0.1 * g1 ** 2
        s2 = 0.9 * s2 + 0.1 * g2 ** 2
        x1 -= 0.4 / (s1 + 1e-6) ** 0.5 * g1
        x2 -= 0.4 / (s2 + 1e-6) ** 0.5 * g2
    x = _trace(FusedRMSprop)
    torch.testing.assert_close(x, torch.tensor([x1, x2], dtype=torch.float64),
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(_trace(ReferenceRMSprop), x, rtol=1e-12, atol=1e-15)


def test_torch_convention_gives_a_different_trace():
    # eps outside the sqrt (torch's default) is a different method: the switch matters.
    x = torch.tensor([-5.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = FusedRMSprop([x], lr=0.4, alpha=0.9, eps=1e-6)
    for _ in range(20):
        x.grad = torch.stack([0.2 * x[0], 4 * x[1]]).detach()
        opt.step()
    assert f"{x[0]:f}" != "-0.010599"
