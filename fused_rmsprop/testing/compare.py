"""Side-by-side checks of an RMSprop optimizer against torch and the reference.

Every check builds the same problem for both optimizers (the same starting
parameters and the same gradients at every step, a tenth of them exactly
zero), runs N steps, and asserts that parameters and every state entry agree.
"""

from __future__ import annotations

import torch

from .reference import ReferenceRMSprop, reference_rmsprop_update

# Sizes that exercise vector bodies, remainders, empty and scalar tensors.
DEFAULT_SHAPES = [(0,), (), (1,), (7,), (3, 5), (33,), (257, 3), (4099,)]
_TORCH_KEYS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered",
               "capturable", "foreach", "maximize", "differentiable")


def trajectory_tolerance(dtype: torch.dtype, baseline_dtype: torch.dtype, steps: int):
    """(rtol, atol relative to each tensor's largest value) for N steps, or
    None where the bound is derived from a float64 run instead.

    Two float64 runs agree to 1e-10 (rounding at 1e-16, amplified by the
    problem's conditioning, which for these problems stays far below 1e6).
    A float32 run is compared with assert_no_less_accurate: how far
    rounding drifts over many steps depends on the problem's conditioning,
    which no fixed tolerance captures. A half type run against a wider
    baseline rounds its parameters and state once per step, so its bound
    grows with the number of steps: steps * machine epsilon.
    """
    if dtype == torch.float64 and baseline_dtype == torch.float64:
        return 1e-10, 1e-12
    if dtype in (torch.float32, torch.float64):
        return None
    eps = torch.finfo(dtype).eps
    return steps * eps, steps * eps


def make_problem(shapes, steps, *, seed=0, zero_fraction=0.1):
    """float64 starting parameters and per-step gradients for `shapes`."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
    grads = []
    for _ in range(steps):
        step_grads = []
        for s in shapes:
            g = torch.randn(s, dtype=torch.float64, generator=gen)
            keep = torch.rand(s, dtype=torch.float64, generator=gen) >= zero_fraction
            step_grads.append(g * keep)
        grads.append(step_grads)
    return params, grads


def assert_close_scaled(actual, expected, rtol, atol, what="", also=None):
    """assert_close in float64 with atol taken relative to the tensor's scale:
    the largest |value| of `expected` (and of `also`, e.g. its value before
    the step, where the update cancels it)."""
    actual, expected = _real64(actual), _real64(expected)
    scale = _max_abs(expected)
    if also is not None:
        scale = max(scale, _max_abs(_real64(also)))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * max(scale, 1e-30),
                               equal_nan=False, msg=lambda m: f"{what}: {m}")


def assert_no_less_accurate(actual, baseline, exact, what="", *, factor=8.0, ulps=8,
                            also=None):
    """`actual` is about as close to `exact` as `baseline` is.

    For long runs in float32 (or any dtype): `exact` is the same problem run
    in float64, `baseline` an implementation we trust (torch) run in
    `actual`'s dtype. The baseline's largest distance from `exact` measures
    how much this problem amplifies rounding; `actual` may be `factor` times
    as far, plus `ulps` units of its dtype relative to the tensor's largest
    value (and `also`'s, e.g. the value before the step, where the update
    cancels it). A real error (a wrong term, a skipped step) moves a result
    by far more than either.

    Why 8: each run's largest rounding error is a sample, and a tensor's
    rounding can come from intermediates larger than its own values (the
    centered average's `(1 - alpha) * (g - gbar)`), so one run can be a few
    times luckier than another. Over 2016 comparisons (float32, 20 steps, 3
    seeds, every option of the parity grid, and the GradScaler runs), our
    error beyond the ulps term was at most 2.7 times torch's drift.
    """
    a, b, e = _real64(actual), _real64(baseline), _real64(exact)
    eps = torch.finfo(actual.real.dtype if actual.is_complex() else actual.dtype).eps
    scale = _max_abs(e)
    if also is not None:
        scale = max(scale, _max_abs(_real64(also)))
    drift = (b - e).abs().nan_to_num(float("inf")).max().item() if e.numel() else 0.0
    bound = factor * drift + ulps * eps * max(scale, 1e-30)
    error = (a - e).abs()
    bad = ~(error <= bound)  # NaN counts as a mismatch
    if bad.any():
        i = int(error.nan_to_num(float("inf")).flatten().argmax())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements are further from the float64 "
            f"run than allowed ({bound:.3g} = {factor} x the baseline's largest drift "
            f"{drift:.3g} + {ulps} ulps of the scale {scale:.3g}); worst at flat index {i}: "
            f"got {a.flatten()[i].item()!r}, float64 run {e.flatten()[i].item()!r}, baseline "
            f"{b.flatten()[i].item()!r}")


def compare_optimizers(make_candidate, make_baseline, *, shapes=DEFAULT_SHAPES, steps=7,
                       dtype=torch.float32, baseline_dtype=None, device="cpu", seed=0,
                       rtol=None, atol=None, complex_params=False, baseline_device=None):
    """Run two optimizers side by side for `steps` steps and compare them.

    `make_candidate(params)` and `make_baseline(params)` build optimizers over
    lists of leaf tensors. The baseline's parameters start from the
    candidate's (rounded) values and receive the candidate's gradients, cast to
    `baseline_dtype` (default: `dtype`) on `baseline_device` (default:
    `device`). After the last step every parameter and every state entry of
    the two must agree: within `rtol`/`atol` when given, else within
    trajectory_tolerance, or, for a float32 candidate, as assert_no_less_accurate
    says: the baseline then runs twice, in float32 and in float64.
    """
    baseline_dtype = baseline_dtype or dtype
    baseline_device = baseline_device or device
    derived = False
    if rtol is None:
        tolerance = trajectory_tolerance(
            torch.empty((), dtype=dtype).real.dtype,
            torch.empty((), dtype=baseline_dtype).real.dtype, steps)
        derived = tolerance is None
        rtol, atol = tolerance or (None, None)
        if derived:  # the baseline runs in the candidate's dtype, and in float64
            baseline_dtype = dtype
    init, grads = make_problem(shapes, steps, seed=seed)
    if complex_params:
        init = [torch.complex(x, x.flip(0) if x.dim() else -x) for x in init]
        grads = [[torch.complex(g, 0.5 * g) for g in gs] for gs in grads]
    cand = [x.to(device=device, dtype=dtype).requires_grad_() for x in init]
    base = [x.detach().to(baseline_device, baseline_dtype, copy=True).requires_grad_()
            for x in cand]
    wide = torch.complex128 if complex_params else torch.float64
    exact = [x.detach().to(baseline_device, wide, copy=True).requires_grad_()
             for x in cand] if derived else []
    opt_c, opt_b = make_candidate(cand), make_baseline(base)
    opt_e = make_baseline(exact) if derived else None
    for step_grads in grads:
        for i, (pc, pb, g) in enumerate(zip(cand, base, step_grads)):
            pc.grad = g.to(device=device, dtype=dtype)
            pb.grad = pc.grad.to(baseline_device, baseline_dtype, copy=True)
            if derived:
                exact[i].grad = pc.grad.to(baseline_device, wide, copy=True)
        opt_c.step()
        opt_b.step()
        if derived:
            opt_e.step()

    def check(c, b, e, what):
        if derived:
            assert_no_less_accurate(c, b, e, what)
        else:
            assert_close_scaled(c, b, rtol, atol, what)

    for i, (pc, pb) in enumerate(zip(cand, base)):
        se = opt_e.state[exact[i]] if derived else {}
        check(pc.detach(), pb.detach(), exact[i].detach() if derived else None, f"param {i}")
        sc, sb = opt_c.state[pc], opt_b.state[pb]
        assert set(sc) == set(sb), f"param {i}: state keys {sorted(sc)} != {sorted(sb)}"
        for key in sb:
            if key == "step":
                assert float(sc[key]) == float(sb[key]), f"param {i}: step differs"
            else:
                assert sc[key].dtype == pc.dtype, f"param {i}: state {key} has {sc[key].dtype}"
                check(sc[key], sb[key], se.get(key), f"param {i} state {key}")


def assert_matches_torch(optimizer_class, *, shapes=DEFAULT_SHAPES, steps=7,
                         dtype=torch.float32, device="cpu", seed=0, **kwargs):
    """`optimizer_class(params, **kwargs)` against torch.optim.RMSprop.

    Half types are compared with torch run on float32 copies (torch's own
    half-precision RMSprop rounds after every operation and turns zero
    gradients into NaN with the default eps).
    """
    torch_kwargs = {k: v for k, v in kwargs.items() if k in _TORCH_KEYS}
    baseline_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    compare_optimizers(lambda p: optimizer_class(p, **kwargs),
                       lambda p: torch.optim.RMSprop(p, **torch_kwargs),
                       shapes=shapes, steps=steps, dtype=dtype,
                       baseline_dtype=baseline_dtype, device=device, seed=seed)


def assert_matches_reference(optimizer_class, *, shapes=DEFAULT_SHAPES, steps=7,
                             dtype=torch.float32, device="cpu", seed=0, **kwargs):
    """`optimizer_class(params, **kwargs)` against the float64 reference."""
    compare_optimizers(lambda p: optimizer_class(p, **kwargs),
                       lambda p: ReferenceRMSprop(p, **kwargs),
                       shapes=shapes, steps=steps, dtype=dtype,
                       baseline_dtype=torch.float64, device=device, seed=seed)


def assert_steps_match_reference(optimizer_class, *, shapes=DEFAULT_SHAPES, steps=7,
                                 dtype=torch.float32, device="cpu", seed=0, ulps=4,
                                 compute_ulps=128, **kwargs):
    """Check every single step against the reference, to within a few ulps.

    Before each step the candidate's parameters and state are copied to
    float64 and the reference step is applied to the copy; the candidate's
    result must then match it within `ulps` units of its own dtype, relative
    to each element and to each tensor's largest value. Unlike a trajectory
    comparison, this bound does not grow with the number of steps, so it is
    tight for float16 and bfloat16 too.

    Two more terms cover the compute precision (float32 for every dtype but
    float64): `compute_ulps` units of it times the tensor's scale, and the
    problem's own conditioning. Where `g + wd * p` cancels, or eps dominates
    sqrt(v), rounding the inputs to the compute precision moves the exact
    result far more than an ulp. The reference step is therefore also run with
    the gradient, and separately the parameter, scaled by (1 + 8 ulps of the
    compute precision), and each element may differ by as much as those runs
    move it. Results below the dtype's normal range may be off by one step of
    its subnormal grid.
    """
    init, grads = make_problem(shapes, steps, seed=seed)
    params = [x.to(device=device, dtype=dtype).requires_grad_() for x in init]
    opt = optimizer_class(params, **kwargs)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    tol = ulps * torch.finfo(dtype).eps
    atol = tol + compute_ulps * torch.finfo(compute).eps
    nudge = 1 + 8 * torch.finfo(compute).eps
    # Values below the dtype's normal range round to its subnormal grid.
    floor = torch.finfo(dtype).tiny * torch.finfo(dtype).eps
    for step, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad = g.to(device=device, dtype=dtype)
        checks = []
        for p in params:
            group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
            state = opt.state.get(p, {})
            before = _reference_step(p, state, group, apply=False)
            exact = _reference_step(p, state, group)
            moved = [_reference_step(p, state, group, grad_factor=nudge),
                     _reference_step(p, state, group, param_factor=nudge)]
            checks.append((before, exact, moved))
        opt.step()
        for i, (p, (before, exact, moved)) in enumerate(zip(params, checks)):
            where = f"step {step + 1}, param {i}"
            slack = floor + sum((m[0] - exact[0]).abs() for m in moved)
            _assert_within(p.detach(), exact[0], tol, atol, slack, where, before[0])
            for key, value in exact[1].items():
                slack = floor + sum((m[1][key] - value).abs() for m in moved)
                _assert_within(opt.state[p][key], value, tol, atol, slack,
                               f"{where} state {key}", before[1].get(key))


def _assert_within(actual, expected, rtol, atol, slack, what, also):
    """|actual - expected| <= rtol |expected| + atol * scale + slack, elementwise."""
    actual, expected, slack = _real64(actual), _real64(expected), _real64(slack)
    scale = _max_abs(expected)
    if also is not None:
        scale = max(scale, _max_abs(_real64(also)))
    bound = rtol * expected.abs() + atol * max(scale, 1e-30) + slack
    error = (actual - expected).abs()
    bad = ~(error <= bound)  # NaN counts as a mismatch
    if bad.any():
        i = int((error - bound).nan_to_num(float("inf")).flatten().argmax())
        flat = lambda t: t.flatten()[i].item()  # noqa: E731
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ; worst at flat index "
            f"{i}: got {flat(actual)!r}, expected {flat(expected)!r}, allowed difference "
            f"{flat(bound):.3g}")


def _reference_step(p, state, group, apply=True, grad_factor=1.0, param_factor=1.0):
    """The reference step applied to float64 copies of p and its state
    (with apply=False: just the copies); the factors scale grad and param."""
    wide = torch.complex128 if p.is_complex() else torch.float64
    p64 = p.detach().to(wide, copy=True) * param_factor
    s64 = {k: v.detach().to(wide).clone() for k, v in state.items()
           if k != "step" and torch.is_tensor(v)}
    if "square_avg" not in s64:
        s64["square_avg"] = torch.zeros_like(p64)
        _as_real(s64["square_avg"]).fill_(float(group.get("initial_square_avg", 0.0)))
    if not apply:
        return p64, s64
    hyper = dict(lr=float(group["lr"]), alpha=group["alpha"], eps=group["eps"],
                 weight_decay=group["weight_decay"], momentum=group["momentum"],
                 centered=group["centered"], maximize=group["maximize"])
    for key in ("eps_in_sqrt", "lr_in_momentum", "decoupled_weight_decay"):
        hyper[key] = group.get(key, False)
    reference_rmsprop_update(p64, p.grad.to(wide) * grad_factor, s64, **hyper)
    return p64, s64


def _max_abs(t):
    finite = t[torch.isfinite(t)]
    return finite.abs().max().item() if finite.numel() else 0.0


def _as_real(t):
    return torch.view_as_real(t) if t.is_complex() else t


def _real64(t):
    return _as_real(t.detach().cpu()).to(torch.float64)
