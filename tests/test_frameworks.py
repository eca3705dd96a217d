"""Every framework's RMSprop, reproduced by FusedRMSprop with the README's arguments.

fused_rmsprop.testing.frameworks holds each framework's update written from
its documented equations; here FusedRMSprop, given the mapped arguments, must
follow it for 10 steps in float64.
"""

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing import FRAMEWORKS, make_problem
from fused_rmsprop.testing.reference import ReferenceRMSprop

CASES = [
    ("d2l", dict(lr=0.01, gamma=0.9)),
    ("keras", dict()),
    ("keras", dict(learning_rate=0.01, rho=0.8, momentum=0.9, centered=True, weight_decay=0.05)),
    ("keras", dict(learning_rate=0.01, momentum=0.5, epsilon=1e-3)),
    ("tf_raw_op", dict(lr=0.01, rho=0.9, momentum=0.0, epsilon=1e-7)),
    ("tf_raw_op", dict(lr=0.01, rho=0.9, momentum=0.9, epsilon=1e-10, initial_ms=1.0)),
    ("tf_raw_op", dict(lr=0.01, rho=0.95, momentum=0.5, epsilon=1e-6, centered=True)),
    ("timm_rmsprop_tf", dict()),
    ("timm_rmsprop_tf", dict(momentum=0.9, weight_decay=1e-2, centered=True)),
    ("timm_rmsprop_tf", dict(momentum=0.9, weight_decay=1e-2, decoupled_decay=True)),
    ("timm_rmsprop_tf", dict(momentum=0.9, lr_in_momentum=False)),
    ("optax", dict(learning_rate=0.01)),
    ("optax", dict(learning_rate=0.01, eps_in_sqrt=False, initial_scale=0.5)),
    ("optax", dict(learning_rate=0.01, momentum=0.9, centered=True)),
    ("mxnet", dict(learning_rate=0.01, wd=0.01)),
    ("mxnet", dict(learning_rate=0.01, gamma1=0.95, gamma2=0.9, centered=True)),
]


def _id(case):
    return f"{case[0]}-" + "-".join(f"{k}={v}" for k, v in case[1].items())


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
@pytest.mark.parametrize("optimizer_class", [FusedRMSprop, ReferenceRMSprop],
                         ids=["fused", "reference"])
def test_framework_convention_is_reproduced(case, optimizer_class):
    name, hyper = case
    step, to_args = FRAMEWORKS[name]
    shapes = [(5,), (33, 3), (129,)]
    init, grads = make_problem(shapes, 10, seed=1)
    ours = [x.clone().requires_grad_() for x in init]
    theirs = [x.clone() for x in init]
    states = [{} for _ in shapes]
    opt = optimizer_class(ours, **to_args(**hyper))
    for step_grads in grads:
        for p, q, g, s in zip(ours, theirs, step_grads, states):
            p.grad = g.clone()
            step(q, g, s, **hyper)
        opt.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.detach(), q, rtol=1e-10, atol=1e-12)


def test_the_switches_change_the_result():
    # Each switch must matter, or the table above could not fail. lr_in_momentum
    # only changes the parameters when lr changes during training (the buffer
    # holds lr-scaled steps), so lr changes halfway.
    init, grads = make_problem([(17,)], 5, seed=2)
    base = dict(lr=0.01, momentum=0.9, weight_decay=0.1)
    results = {}
    for switch in ("none", "eps_in_sqrt", "lr_in_momentum", "decoupled_weight_decay"):
        p = init[0].clone().requires_grad_()
        opt = FusedRMSprop([p], eps=1e-2, **base, **({} if switch == "none" else {switch: True}))
        for i, g in enumerate(grads):
            p.grad = g[0].clone()
            opt.param_groups[0]["lr"] = 0.01 if i < 2 else 0.002
            opt.step()
        results[switch] = p.detach()
    for switch in ("eps_in_sqrt", "lr_in_momentum", "decoupled_weight_decay"):
        assert not torch.allclose(results[switch], results["none"]), switch
