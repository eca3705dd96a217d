"""Other frameworks' RMSprop, written from their documented equations.

Each `*_step` function applies one step of that framework's RMSprop to
float64 tensors, in place, with the framework's own names for its state and
hyperparameters. Each `*_args` function maps the framework's hyperparameters
to the FusedRMSprop keyword arguments that reproduce it. The tests run both
side by side, so the convention table in the README is checked line by line.

Sources (the equations in each framework's documentation or source):
- d2l, RMSProp section: s = g s + (1 - g) grad^2; x -= lr grad / sqrt(s + eps).
- Keras 3 `keras.optimizers.RMSprop`: v = rho v + (1 - rho) g^2;
  centered: a = rho a + (1 - rho) g, denom = v - a^2 + eps, else denom = v + eps;
  increment = lr g / sqrt(denom); momentum: m = momentum m + increment, p -= m,
  else p -= increment; weight_decay is decoupled: p -= p wd lr, before the step.
- TF raw ops `ApplyRMSProp` / `ApplyCenteredRMSProp`: ms = rho ms + (1 - rho) g^2;
  centered: mg = rho mg + (1 - rho) g, mom = momentum mom + lr g / sqrt(ms - mg^2 + eps),
  else mom = momentum mom + lr g / sqrt(ms + eps); var -= mom. The state starts
  as the caller sets it (TF1's RMSPropOptimizer starts ms at 1).
- timm `RMSpropTF`: square_avg starts at 1; weight decay coupled (g += wd p) or
  decoupled (p *= 1 - lr wd); v += (1 - alpha)(g^2 - v); centered:
  a += (1 - alpha)(g - a), avg = sqrt(v - a^2 + eps), else avg = sqrt(v + eps);
  momentum with lr_in_momentum (default): buf = momentum buf + lr g / avg,
  p -= buf; without momentum p -= lr g / avg.
- Optax `optax.rmsprop` (no Nesterov, no bias correction): nu = decay nu +
  (1 - decay) g^2 (starting at initial_scale); centered: mu = decay mu +
  (1 - decay) g, u = g / sqrt(nu - mu^2 + eps); else u = g / sqrt(nu + eps)
  (eps_in_sqrt=True, the default) or g / (sqrt(nu) + eps); u = -lr u;
  momentum: t = momentum t + u, update = t; p += update.
- MXNet 1.9 `mx.optimizer.RMSProp`: g = grad + wd w; n = (1 - gamma1) g^2 +
  gamma1 n; not centered: w -= lr g / sqrt(n + eps); centered:
  g_avg = (1 - gamma1) g + gamma1 g_avg, delta = gamma2 delta - lr g /
  sqrt(n - g_avg^2 + eps), w += delta.
"""

from __future__ import annotations

import torch


def _zeros(p, state, key, value=0.0):
    if key not in state:
        state[key] = torch.full_like(p, value)
    return state[key]


def d2l_step(p, g, state, *, lr, gamma, eps=1e-6):
    s = _zeros(p, state, "s")
    s.copy_(gamma * s + (1 - gamma) * g * g)
    p.sub_(lr * g / torch.sqrt(s + eps))


def d2l_args(*, lr, gamma, eps=1e-6):
    return dict(lr=lr, alpha=gamma, eps=eps, eps_in_sqrt=True)


def keras_step(p, g, state, *, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
               centered=False, weight_decay=0.0):
    if weight_decay:
        p.sub_(p * weight_decay * learning_rate)
    v = _zeros(p, state, "velocity")
    v.copy_(rho * v + (1 - rho) * g * g)
    if centered:
        a = _zeros(p, state, "average_gradient")
        a.copy_(rho * a + (1 - rho) * g)
        denominator = v - a * a + epsilon
    else:
        denominator = v + epsilon
    increment = learning_rate * g / torch.sqrt(denominator)
    if momentum > 0:
        m = _zeros(p, state, "momentum")
        m.copy_(momentum * m + increment)
        p.sub_(m)
    else:
        p.sub_(increment)


def keras_args(*, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
               weight_decay=0.0):
    return dict(lr=learning_rate, alpha=rho, eps=epsilon, momentum=momentum, centered=centered,
                weight_decay=weight_decay, eps_in_sqrt=True, lr_in_momentum=True,
                decoupled_weight_decay=True)


def tf_raw_op_step(p, g, state, *, lr, rho, momentum, epsilon, centered=False,
                   initial_ms=0.0):
    ms = _zeros(p, state, "ms", initial_ms)
    mom = _zeros(p, state, "mom")
    ms.copy_(rho * ms + (1 - rho) * g * g)
    if centered:
        mg = _zeros(p, state, "mg")
        mg.copy_(rho * mg + (1 - rho) * g)
        mom.copy_(momentum * mom + lr * g / torch.sqrt(ms - mg * mg + epsilon))
    else:
        mom.copy_(momentum * mom + lr * g / torch.sqrt(ms + epsilon))
    p.sub_(mom)


def tf_raw_op_args(*, lr, rho, momentum, epsilon, centered=False, initial_ms=0.0):
    # The raw op always keeps `mom`; with momentum = 0 it holds lr g / d, which
    # is the plain step, so FusedRMSprop needs no buffer then.
    return dict(lr=lr, alpha=rho, eps=epsilon, momentum=momentum, centered=centered,
                eps_in_sqrt=True, lr_in_momentum=True, initial_square_avg=initial_ms)


def timm_rmsprop_tf_step(p, g, state, *, lr=1e-2, alpha=0.9, eps=1e-10, weight_decay=0.0,
                         momentum=0.0, centered=False, decoupled_decay=False,
                         lr_in_momentum=True):
    if weight_decay != 0:
        if decoupled_decay:
            p.mul_(1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    v = _zeros(p, state, "square_avg", 1.0)
    v.add_((1 - alpha) * (g * g - v))
    if centered:
        a = _zeros(p, state, "grad_avg")
        a.add_((1 - alpha) * (g - a))
        avg = torch.sqrt(v - a * a + eps)
    else:
        avg = torch.sqrt(v + eps)
    if momentum > 0:
        buf = _zeros(p, state, "momentum_buffer")
        if lr_in_momentum:
            buf.copy_(momentum * buf + lr * g / avg)
            p.sub_(buf)
        else:
            buf.copy_(momentum * buf + g / avg)
            p.sub_(lr * buf)
    else:
        p.sub_(lr * g / avg)


def timm_rmsprop_tf_args(*, lr=1e-2, alpha=0.9, eps=1e-10, weight_decay=0.0, momentum=0.0,
                         centered=False, decoupled_decay=False, lr_in_momentum=True):
    return dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                centered=centered, eps_in_sqrt=True, initial_square_avg=1.0,
                lr_in_momentum=lr_in_momentum, decoupled_weight_decay=decoupled_decay)


def optax_step(p, g, state, *, learning_rate, decay=0.9, eps=1e-8, initial_scale=0.0,
               eps_in_sqrt=True, centered=False, momentum=None):
    nu = _zeros(p, state, "nu", initial_scale)
    nu.copy_(decay * nu + (1 - decay) * g * g)
    if centered:
        mu = _zeros(p, state, "mu")
        mu.copy_(decay * mu + (1 - decay) * g)
        u = g / torch.sqrt(nu - mu * mu + eps)
    elif eps_in_sqrt:
        u = g / torch.sqrt(nu + eps)
    else:
        u = g / (torch.sqrt(nu) + eps)
    u = -learning_rate * u
    if momentum is not None:
        t = _zeros(p, state, "trace")
        t.copy_(momentum * t + u)
        u = t
    p.add_(u)


def optax_args(*, learning_rate, decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True,
               centered=False, momentum=None):
    return dict(lr=learning_rate, alpha=decay, eps=eps, initial_square_avg=initial_scale,
                eps_in_sqrt=eps_in_sqrt or centered, centered=centered,
                momentum=momentum or 0.0, lr_in_momentum=True)


def mxnet_step(p, g, state, *, learning_rate=0.001, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
               centered=False, wd=0.0):
    g = g + wd * p
    n = _zeros(p, state, "n")
    n.copy_((1 - gamma1) * g * g + gamma1 * n)
    if not centered:
        p.sub_(learning_rate * g / torch.sqrt(n + epsilon))
        return
    g_avg = _zeros(p, state, "g")
    delta = _zeros(p, state, "delta")
    g_avg.copy_((1 - gamma1) * g + gamma1 * g_avg)
    delta.copy_(gamma2 * delta - learning_rate * g / torch.sqrt(n - g_avg * g_avg + epsilon))
    p.add_(delta)


def mxnet_args(*, learning_rate=0.001, gamma1=0.9, gamma2=0.9, epsilon=1e-8, centered=False,
               wd=0.0):
    return dict(lr=learning_rate, alpha=gamma1, eps=epsilon, weight_decay=wd,
                centered=centered, momentum=gamma2 if centered else 0.0,
                eps_in_sqrt=True, lr_in_momentum=True)


FRAMEWORKS = {
    "d2l": (d2l_step, d2l_args),
    "keras": (keras_step, keras_args),
    "tf_raw_op": (tf_raw_op_step, tf_raw_op_args),
    "timm_rmsprop_tf": (timm_rmsprop_tf_step, timm_rmsprop_tf_args),
    "optax": (optax_step, optax_args),
    "mxnet": (mxnet_step, mxnet_args),
}
