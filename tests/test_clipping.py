"""Gradient clipping inside the step (max_grad_norm, clip_grad_norm_) and the
fused norm op, against torch.nn.utils.clip_grad_norm_ + torch.optim.RMSprop.

Training comparisons run in float64: two correct runs agree to 1e-10."""

import copy
import itertools
import math

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop._ops import grad_norm

OPTIONS = [dict(momentum=m, centered=c, weight_decay=wd, maximize=mx)
           for m, c, wd, mx in itertools.product([0.0, 0.9], [False, True], [0.0, 0.1],
                                                 [False, True])]
NORMS = [2.0, 1.0, 3.0, math.inf]


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 2)).to(dtype)


def _losses(model, steps, bad_steps=()):
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        x = torch.randn(32, 8, generator=gen, dtype=torch.float64).to(next(model.parameters()))
        loss = 30 * model(x).pow(2).mean()  # gradients well above max_norm
        yield loss * float("inf") if i in bad_steps else loss


def _torch_run(max_norm, norm_type, steps=6, scaler=None, bad_steps=(), **kw):
    model = _model()
    opt = torch.optim.RMSprop(model.parameters(), **kw)
    norms = []
    for loss in _losses(model, steps, bad_steps):
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type))
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type))
            scaler.step(opt)
            scaler.update()
    return model, opt, norms


def _fused_run(max_norm, norm_type, steps=6, scaler=None, bad_steps=(), explicit=False, **kw):
    model = _model()
    opt = FusedRMSprop(model.parameters(), max_grad_norm=None if explicit else max_norm,
                       norm_type=norm_type, **kw)
    norms = []
    for loss in _losses(model, steps, bad_steps):
        opt.zero_grad()
        (loss if scaler is None else scaler.scale(loss)).backward()
        if explicit:
            opt.clip_grad_norm_(max_norm, norm_type)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)  # no unscale_: the step unscales and clips by itself
            scaler.update()
        norms.append(opt.last_grad_norm)
    return model, opt, norms


def _assert_same(fused, ref, rtol=1e-10):
    (m1, o1, n1), (m2, o2, n2) = fused, ref
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12, equal_nan=True)
        for key in o2.state[b]:
            torch.testing.assert_close(o1.state[a][key], o2.state[b][key], rtol=rtol,
                                       atol=1e-12, equal_nan=True)
    for x, y in zip(n1, n2):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("norm_type", NORMS, ids=str)
@pytest.mark.parametrize("kw", OPTIONS, ids=str)
def test_max_grad_norm_equals_clip_grad_norm_then_torch(kw, norm_type):
    ref = _torch_run(0.5, norm_type, **kw)
    assert all(n > 0.5 for n in ref[2])  # every step is clipped
    _assert_same(_fused_run(0.5, norm_type, **kw), ref)


@pytest.mark.parametrize("norm_type", [2.0, math.inf], ids=str)
@pytest.mark.parametrize("kw", OPTIONS[::5], ids=str)
def test_clip_grad_norm_method_equals_torch(kw, norm_type):
    _assert_same(_fused_run(0.5, norm_type, explicit=True, **kw), _torch_run(0.5, norm_type, **kw))


@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9, centered=True, weight_decay=0.01)],
                         ids=str)
def test_under_grad_scaler_with_skipped_steps(kw):
    # GradScaler drives the step: the norm is of the unscaled gradients, and
    # the steps with inf gradients are skipped (scale halves) as in torch.
    def scaler():
        return torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)

    fused = _fused_run(0.5, 2.0, steps=8, scaler=scaler(), bad_steps=(2, 5), **kw)
    ref = _torch_run(0.5, 2.0, steps=8, scaler=scaler(), bad_steps=(2, 5), **kw)
    _assert_same(fused, ref)
    assert all(math.isinf(float(fused[2][i])) or math.isnan(float(fused[2][i])) for i in (2, 5))
    assert all(float(s["step"]) == 6 for s in fused[1].state.values())


def test_non_finite_gradients_without_a_scaler_poison_the_params_as_torch():
    # clip_grad_norm_ scales by max_norm / inf = 0: inf * 0 = NaN, as torch.
    fused = _fused_run(0.5, 2.0, steps=3, bad_steps=(1,))
    ref = _torch_run(0.5, 2.0, steps=3, bad_steps=(1,))
    assert any(p.isnan().any() for p in ref[0].parameters())
    _assert_same(fused, ref)


def test_clip_grad_norm_leaves_grads_and_clips_the_next_step_only():
    model = _model()
    opt = FusedRMSprop(model.parameters())
    losses = _losses(model, 2)
    next(losses).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    total = opt.clip_grad_norm_(0.5)
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    torch.testing.assert_close(total, expected, rtol=1e-14, atol=0)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))  # documented
    opt.step()
    torch.testing.assert_close(opt.last_grad_norm, expected, rtol=1e-14, atol=0)
    # the next step is not clipped: it equals torch's unclipped step
    ref_model = _model()
    ref = torch.optim.RMSprop(ref_model.parameters())
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))  # (else they share state tensors)
    with torch.no_grad():
        for a, b in zip(ref_model.parameters(), model.parameters()):
            a.copy_(b)
    opt.zero_grad()
    next(losses).backward()
    for a, b in zip(ref_model.parameters(), model.parameters()):
        a.grad = b.grad.clone()
    opt.step()
    ref.step()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_clip_grad_norm_can_refuse_a_non_finite_norm_as_torch():
    model = _model()
    opt = FusedRMSprop(model.parameters())
    (next(_losses(model, 1)) * float("inf")).backward()
    with pytest.raises(RuntimeError, match="is non-finite, so it cannot be clipped"):
        opt.clip_grad_norm_(1.0, error_if_nonfinite=True)
    assert not math.isfinite(float(opt.clip_grad_norm_(1.0)))


@pytest.mark.parametrize("bad", [dict(max_grad_norm=0.0), dict(max_grad_norm=-1.0),
                                 dict(max_grad_norm=float("nan")), dict(max_grad_norm=float("inf")),
                                 dict(norm_type=0.0), dict(norm_type=-2.0), dict(norm_type="2")],
                         ids=str)
def test_bad_clipping_options_are_refused(bad):
    with pytest.raises(ValueError, match="Invalid (max_grad_norm|norm_type)"):
        FusedRMSprop(_model().parameters(), **bad)
    with pytest.raises(ValueError, match="Invalid (max_grad_norm|norm_type)"):
        FusedRMSprop(_model().parameters()).clip_grad_norm_(
            bad.get("max_grad_norm", 1.0), bad.get("norm_type", 2.0))


def test_mixed_dtypes_channels_last_complex_and_switches():
    # One norm over groups of several dtypes and layouts; our own switches
    # (not in torch) compared with clip_grad_norm_ + an unclipped FusedRMSprop.
    torch.manual_seed(0)
    shapes = [((4, 3, 3, 3), torch.float64), ((7,), torch.float32), ((5,), torch.complex128)]

    def params():
        torch.manual_seed(0)
        ps = []
        for shape, dtype in shapes:
            p = torch.randn(shape, dtype=dtype)
            if len(shape) == 4:
                p = p.to(memory_format=torch.channels_last)
            ps.append(p.requires_grad_())
        return ps

    kw = dict(eps_in_sqrt=True, lr_in_momentum=True, momentum=0.9, decoupled_weight_decay=True,
              weight_decay=0.1)
    a, b = params(), params()
    fused = FusedRMSprop(a, max_grad_norm=0.3, **kw)
    ref = FusedRMSprop(b, **kw)
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        for x, y in zip(a, b):
            x.grad = 3 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
            y.grad = x.grad.clone()
        fused.step()
        torch.nn.utils.clip_grad_norm_(b, 0.3)
        ref.step()
    for x, y in zip(a, b):
        # One coefficient for all: the float32 group's norm is a float32
        # number in both runs (torch accumulates it in float32, we in float64,
        # then round), so the coefficient agrees to a few float32 eps, and a
        # step (|lr * update| <= ~0.03 here) moves params by < 1e-8 apart.
        torch.testing.assert_close(x, y, rtol=0, atol=1e-8)


# ----- the norm op -----

def _reference_norm(grads, p):
    flat = torch.cat([g.double().reshape(-1) for g in grads])
    return torch.linalg.vector_norm(flat, p)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16],
                         ids=str)
@pytest.mark.parametrize("p", NORMS + [0.5], ids=str)
def test_grad_norm_op_matches_float64(dtype, p):
    gen = torch.Generator().manual_seed(0)
    # sizes around the 16-lane accumulators and the 8192-element blocks
    sizes = [0, 1, 15, 17, 8191, 8192, 8193, 3 * 8192 + 5]
    grads = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for n in sizes]
    got = grad_norm(grads, p)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    want = _reference_norm(grads, p)
    # float32 accumulators over at most 512 terms each, then float64: the
    # error is a few float32 roundings of the largest partial sums
    eps = torch.finfo(got.dtype).eps
    torch.testing.assert_close(got.double(), want, rtol=64 * eps, atol=0)


def test_grad_norm_op_is_the_same_for_any_thread_count():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=gen) for n in (300_000, 5, 70_001)]
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(grad_norm(grads, 2.0))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(r, results[0]) for r in results)


def test_grad_norm_op_propagates_nan_and_inf():
    for p in NORMS:
        g = torch.ones(20_000)
        g[12_345] = float("nan")
        assert grad_norm([torch.ones(3), g], p).isnan()
        g[12_345] = float("inf")
        assert grad_norm([g], p).isinf()


def test_grad_norm_op_checks_its_arguments():
    with pytest.raises(RuntimeError, match="norm_type must be > 0"):
        grad_norm([torch.ones(3)], 0.0)
    with pytest.raises(RuntimeError, match="empty list"):  # the dispatcher refuses it
        grad_norm([], 2.0)
    with pytest.raises(RuntimeError, match=r"share a dtype and device; grads\[1\]"):
        grad_norm([torch.ones(3), torch.ones(3, dtype=torch.float64)], 2.0)
    with pytest.raises(RuntimeError, match=r"grads\[0\] must be a dense"):
        grad_norm([torch.ones(4, 4)[:, 0]], 2.0)


def test_grad_norm_op_passes_opcheck():
    torch.library.opcheck(torch.ops.fused_rmsprop.grad_norm.default,
                          ([torch.randn(5), torch.randn(3, 2)], 2.0))


def test_a_clipped_step_compiles_with_fullgraph():
    model = _model(torch.float32)
    opt = FusedRMSprop(model.parameters(), max_grad_norm=0.5, momentum=0.9)
    next(_losses(model, 1)).backward()
    opt.step()  # state
    compiled = torch.compile(opt.step, fullgraph=True)
    compiled()


def test_without_gradients_the_norm_is_zero_and_nothing_is_clipped():
    model = _model()
    opt = FusedRMSprop(model.parameters(), max_grad_norm=1.0)
    assert float(opt.clip_grad_norm_(1.0)) == 0.0
    opt.step()  # no grads: nothing happens, as in torch
    assert opt.last_grad_norm is None and not opt.state
