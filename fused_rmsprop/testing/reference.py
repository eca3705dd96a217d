"""The RMSprop update in plain PyTorch, written from the equations, for checking.

This is deliberately the slow, obvious form: one tensor at a time, no fusion,
meant to run in float64. It covers every option FusedRMSprop has.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


def reference_rmsprop_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
    eps_in_sqrt: bool = False,
    lr_in_momentum: bool = False,
    decoupled_weight_decay: bool = False,
) -> None:
    """One RMSprop step on `param`, in place, with its state dict.

    `state` holds ``square_avg`` and, when the options use them,
    ``momentum_buffer`` and ``grad_avg`` (created as zeros if missing).
    Complex tensors are treated as pairs of real numbers.

        g = -g if maximize
        p = p * (1 - lr wd)          if decoupled_weight_decay
        g = g + wd p                 otherwise
        v = alpha v + (1 - alpha) g^2
        centered:  gbar = alpha gbar + (1 - alpha) g;  var = max(v - gbar^2, 0)
        else:      var = v
        d = sqrt(var + eps) if eps_in_sqrt else sqrt(var) + eps
        momentum:  b = mu b + (lr if lr_in_momentum else 1) g / d
                   p = p - (1 if lr_in_momentum else lr) b
        else:      p = p - lr g / d
    """
    real = torch.view_as_real if param.is_complex() else (lambda t: t)
    p, g = real(param), real(grad)
    g = -g if maximize else g
    if decoupled_weight_decay:
        p.mul_(1 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + weight_decay * p
    v = real(state["square_avg"])
    v.copy_(alpha * v + (1 - alpha) * g * g)
    var = v
    if centered:
        state.setdefault("grad_avg", torch.zeros_like(param))
        gbar = real(state["grad_avg"])
        gbar.copy_(alpha * gbar + (1 - alpha) * g)
        var = (v - gbar * gbar).clamp(min=0)
    d = torch.sqrt(var + eps) if eps_in_sqrt else torch.sqrt(var) + eps
    if momentum > 0:
        state.setdefault("momentum_buffer", torch.zeros_like(param))
        b = real(state["momentum_buffer"])
        b.copy_(momentum * b + (lr if lr_in_momentum else 1.0) * g / d)
        p.sub_((1.0 if lr_in_momentum else lr) * b)
    else:
        p.sub_(lr * g / d)


class ReferenceRMSprop(Optimizer):
    """A torch.optim.Optimizer running `reference_rmsprop_update` per tensor.

    Same arguments and state keys as FusedRMSprop (the switches included).
    Give it float64 parameters to get the exact-arithmetic reference.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
                 momentum=0, centered=False, maximize=False, *, eps_in_sqrt=False,
                 initial_square_avg=0.0, lr_in_momentum=False,
                 decoupled_weight_decay=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize,
                        eps_in_sqrt=eps_in_sqrt, initial_square_avg=initial_square_avg,
                        lr_in_momentum=lr_in_momentum,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            hyper = {k: group[k] for k in (
                "lr", "alpha", "eps", "weight_decay", "momentum", "centered",
                "maximize", "eps_in_sqrt", "lr_in_momentum", "decoupled_weight_decay")}
            hyper["lr"] = float(hyper["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    square_avg = torch.zeros_like(p)
                    (torch.view_as_real(square_avg) if p.is_complex() else square_avg
                     ).fill_(group["initial_square_avg"])
                    state["square_avg"] = square_avg
                    if group["momentum"] > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                state["step"] += 1
                reference_rmsprop_update(p, p.grad, state, **hyper)
        return loss
