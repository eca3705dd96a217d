"""Gradient release in one process (NOTE: [gradient release]): updates
during backward, fused in buckets, equal to step() after backward().

The update of a bucket is the same elementwise kernel call as a step's,
on fewer parameters, so the results are compared bit for bit (the issue's
float64 tolerance, 1e-10, is a bound they meet with room to spare); the
8-bit and stochastic-rounding cases too (blocks and random bits belong to
each parameter, whichever call updates it). Distributed engines:
test_distributed_release.py."""

import copy
import warnings

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop import _calls

KW = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)
OPTIONS = {
    "plain": dict(lr=0.01),
    "momentum+centered+wd": KW,
    "switches": dict(KW, eps_in_sqrt=True, lr_in_momentum=True, decoupled_weight_decay=True,
                     initial_square_avg=1.0, maximize=True, lr=torch.tensor(0.01)),
    "8bit": dict(KW, state_bits=8, min_8bit_size=256),
}
STEPS = 4


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 33), torch.nn.Tanh(),
                               torch.nn.Linear(33, 2)).to(dtype)


def _batches(steps=STEPS, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 8, generator=gen).to(dtype), torch.randn(16, 2, generator=gen)
             .to(dtype)) for _ in range(steps)]


def _loss(model, x, y):
    return torch.nn.functional.mse_loss(model(x).float(), y.float()).to(x.dtype) \
        if x.dtype == torch.bfloat16 else torch.nn.functional.mse_loss(model(x), y)


def _groups(model):
    """Two param groups (the last layer with its own lr and momentum)."""
    params = list(model.parameters())
    return [{"params": params[:4]}, {"params": params[4:], "lr": 0.02, "momentum": 0.5}]


def _train(model, opt, batches, release, scheduler=None):
    for x, y in batches:
        opt.zero_grad()
        _loss(model, x, y).backward()
        if release:
            assert all(p.grad is None for p in model.parameters())  # freed in backward
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _pair(options, dtype=torch.float64, bucket_bytes=None, groups=True, **extra):
    """(model, optimizer) twice: normal steps, and gradient release."""
    runs = []
    for release in (False, True):
        # a Tensor lr of its own (an LR scheduler fills it in place)
        kw = {k: v.clone() if isinstance(v, torch.Tensor) else v
              for k, v in dict(OPTIONS[options], **extra).items()}
        model = _model(dtype)
        opt = FusedRMSprop(_groups(model) if groups else model.parameters(), **kw)
        if release:
            opt.release_gradients(**({} if bucket_bytes is None else
                                     {"bucket_bytes": bucket_bytes}))
        runs.append((model, opt))
    return runs


def _assert_same(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.fixture(params=["cpu", "emulation"])
def kernel(request, monkeypatch):
    """The CPU kernel, or the CUDA kernel under host emulation (small chunks
    and launches, so a bucket spans several)."""
    if request.param == "emulation":
        pytest.importorskip("fused_rmsprop._C_emulation")
        emulated = torch.ops.fused_rmsprop_emulation.rmsprop_
        monkeypatch.setattr(_calls, "rmsprop_", lambda *lists, **kw: emulated(
            *lists, **kw, chunk_size=512, kernel_arg_bytes=4096))
    return request.param


@pytest.mark.parametrize("bucket_bytes", [0, 2048, None])  # None: the default, one bucket
@pytest.mark.parametrize("options", list(OPTIONS))
def test_release_equals_step_after_backward(options, bucket_bytes, kernel):
    (normal, opt), (released, ropt) = _pair(options, bucket_bytes=bucket_bytes)
    schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9) for o in (opt, ropt)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        _train(normal, opt, _batches(), False, schedulers[0])
        _train(released, ropt, _batches(), True, schedulers[1])
    _assert_same(normal, released)
    for a, b in zip(normal.parameters(), released.parameters()):
        p, q = opt.state[a], ropt.state[b]
        assert p.keys() == q.keys()
        for key in p:
            torch.testing.assert_close(p[key], q[key], rtol=0, atol=0)
    if options == "8bit":
        assert any("square_avg_codes" in s for s in ropt.state.values())


def test_release_of_bfloat16_params_with_stochastic_rounding_and_8bit_state_is_bit_exact():
    (normal, opt), (released, ropt) = _pair("8bit", torch.bfloat16, bucket_bytes=1024,
                                            stochastic_rounding=True, rounding_seed=5)
    _train(normal, opt, _batches(dtype=torch.bfloat16), False)
    _train(released, ropt, _batches(dtype=torch.bfloat16), True)
    _assert_same(normal, released)


def _count_calls(monkeypatch):
    """Records the bytes of the grads of each op call."""
    calls, real = [], _calls.rmsprop_

    def counting(params, grads, *rest, **kw):
        calls.append(sum(g.nbytes for g in grads))
        return real(params, grads, *rest, **kw)

    monkeypatch.setattr(_calls, "rmsprop_", counting)
    return calls


@pytest.mark.parametrize("bucket_bytes", [0, 3000, 2**20])
def test_updates_are_fused_in_buckets_bounded_by_bucket_bytes(bucket_bytes, monkeypatch):
    model = _model()
    opt = FusedRMSprop(model.parameters(), **KW)
    opt.release_gradients(bucket_bytes=bucket_bytes)
    _train(model, opt, _batches(1), True)  # the first step creates the state
    slow = opt.slow_steps
    calls = _count_calls(monkeypatch)
    _train(model, opt, _batches(1), True)
    assert opt.slow_steps == slow  # steady buckets take the fast tier
    sizes = [p.nbytes for p in model.parameters()]
    assert sum(calls) == sum(sizes)  # every gradient, once
    if bucket_bytes == 0:
        assert len(calls) == len(sizes)  # each parameter on its own
    elif bucket_bytes >= sum(sizes):
        assert len(calls) == 1  # the whole backward: one call
    else:  # waiting: under the bound, until the param that crosses it
        assert 1 < len(calls) < len(sizes)
        assert all(c < bucket_bytes + max(sizes) for c in calls), calls


def test_accumulation_inside_no_release_equals_accumulated_step():
    normal, released = _model(), _model()
    opt, ropt = FusedRMSprop(normal.parameters(), **KW), FusedRMSprop(released.parameters(), **KW)
    ropt.release_gradients()
    for x, y in _batches():
        for model, o in ((normal, opt), (released, ropt)):
            o.zero_grad()
            with o.no_release():
                (0.5 * _loss(model, x[:8], y[:8])).backward()
            assert all(p.grad is not None for p in model.parameters())  # held
            (0.5 * _loss(model, x[8:], y[8:])).backward()
            o.step()
    _assert_same(normal, released)


def _snapshot(model, opt):
    return copy.deepcopy([p.detach() for p in model.parameters()]), copy.deepcopy(opt.state_dict())


def _assert_unchanged(model, opt, snapshot):
    params, state = snapshot
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    for s, t in zip(opt.state_dict()["state"].values(), state["state"].values()):
        assert all(torch.equal(s[k], t[k]) for k in t)


def test_a_second_backward_without_step_raises_before_it_writes():
    model = _model()
    opt = FusedRMSprop(model.parameters(), **KW)
    opt.release_gradients(bucket_bytes=0)
    (x, y), = _batches(1)
    _loss(model, x, y).backward()
    before = _snapshot(model, opt)
    with pytest.raises(RuntimeError, match="step\\(\\) was not called in between"):
        _loss(model, x, y).backward()
    _assert_unchanged(model, opt, before)
    opt.zero_grad()
    opt.step()  # closes the step; training goes on
    _loss(model, x, y).backward()
    assert float(opt.state[next(model.parameters())]["step"]) == 2


def test_a_backward_that_raised_leaves_release_working():
    model = _model()
    opt = FusedRMSprop(model.parameters(), **KW)
    opt.release_gradients()  # one bucket: updated at the end of backward
    (x, y), = _batches(1)
    first = next(model.parameters())

    def fail(_):
        raise RuntimeError("a hook of the user's")

    handle = first.register_post_accumulate_grad_hook(fail)
    before = _snapshot(model, opt)
    with pytest.raises(RuntimeError, match="a hook of the user's"):
        _loss(model, x, y).backward()
    handle.remove()
    _assert_unchanged(model, opt, before)  # the bucket never reached its end
    opt.zero_grad()
    opt.step()  # nothing held: no update
    _assert_unchanged(model, opt, before)
    _loss(model, x, y).backward()  # the next step releases as usual
    assert all(p.grad is None for p in model.parameters())
    assert float(opt.state[first]["step"]) == 1


def test_what_needs_every_gradient_is_refused_with_gradient_release():
    model = _model()
    clipping = FusedRMSprop(model.parameters(), max_grad_norm=1.0)
    with pytest.raises(ValueError, match="max_grad_norm=1.0.*cannot release gradients"):
        clipping.release_gradients()
    opt = FusedRMSprop(model.parameters(), **KW)
    opt.release_gradients()
    with pytest.raises(RuntimeError, match="clip_grad_norm_ with gradient release"):
        opt.clip_grad_norm_(1.0)
    (x, y), = _batches(1)
    closure_ran = []
    with pytest.raises(ValueError, match="step\\(closure\\) with gradient release"):
        opt.step(lambda: closure_ran.append(1))
    assert not closure_ran
    # GradScaler: refused at scaler.step, the first place it can be seen
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(_loss(model, x, y)).backward()
    with pytest.raises(RuntimeError, match="GradScaler cannot be used"):
        scaler.step(opt)


@pytest.mark.parametrize("bad,error,match", [
    (dict(bucket_bytes=-1), ValueError, "Invalid bucket_bytes: -1"),
    (dict(bucket_bytes=1.5), ValueError, "Invalid bucket_bytes: 1.5"),
    (dict(ddp=torch.nn.Linear(2, 2)), TypeError, "expected the DistributedDataParallel"),
])
def test_bad_release_arguments_are_refused(bad, error, match):
    model = _model()
    opt = FusedRMSprop(model.parameters())
    with pytest.raises(error, match=match):
        opt.release_gradients(**bad)
    (x, y), = _batches(1)
    _loss(model, x, y).backward()  # nothing was turned on: the gradients stay
    assert all(p.grad is not None for p in model.parameters())
    opt.release_gradients()
    with pytest.raises(RuntimeError, match="already on"):
        opt.release_gradients()


@pytest.mark.parametrize("load_into", [FusedRMSprop, torch.optim.RMSprop])
def test_checkpoints_of_a_released_run_continue_like_an_uninterrupted_one(load_into):
    batches = _batches(6)
    (normal, opt), (released, ropt) = _pair("momentum+centered+wd", bucket_bytes=2048,
                                            groups=False)
    _train(normal, opt, batches, False)
    _train(released, ropt, batches[:3], True)
    saved = ropt.state_dict()
    model = copy.deepcopy(released)
    resumed = load_into(model.parameters(), **KW)
    resumed.load_state_dict(saved)
    release = load_into is FusedRMSprop
    if release:
        resumed.release_gradients(bucket_bytes=2048)
    _train(model, resumed, batches[3:], release)
    for p, q in zip(normal.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=0)


def test_param_groups_added_later_and_params_without_grads():
    # a frozen layer and an unused one keep their values; a group added after
    # release_gradients() is released too
    (normal, opt), (released, ropt) = [
        (model, FusedRMSprop(list(model.parameters())[:2], **KW)) for model in
        (_model(), _model())]
    ropt.release_gradients(bucket_bytes=0)
    unused = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64)) for _ in range(2)]
    for model, o, extra in ((normal, opt, unused[0]), (released, ropt, unused[1])):
        params = list(model.parameters())
        params[2].requires_grad_(False)
        o.add_param_group({"params": params[3:] + [extra], "lr": 0.03})
    _train(normal, opt, _batches(), False)
    _train(released, ropt, _batches(), True)
    _assert_same(normal, released)
    assert torch.equal(unused[1], torch.ones(3, dtype=torch.float64))
    assert torch.equal(list(released.parameters())[2], list(_model().parameters())[2])


def test_a_tied_weight_is_updated_once_with_its_summed_gradient():
    def model():
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 6).double()
        return emb, torch.nn.Parameter(torch.randn(6, 6, dtype=torch.float64))

    runs = []
    for release in (False, True):
        emb, w = model()
        opt = FusedRMSprop([emb.weight, w], **KW)
        if release:
            opt.release_gradients(bucket_bytes=0)
        for step in range(3):
            ids = torch.arange(step, step + 4)
            # the embedding weight is used twice: as the input table and the output head
            logits = (emb(ids) @ w) @ emb.weight.T
            torch.nn.functional.cross_entropy(logits, ids).backward()
            opt.step()
            opt.zero_grad()
        runs.append((emb.weight.detach(), w.detach()))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pickled_copy_and_a_deep_copy_of_the_model_do_not_release():
    import pickle

    model = _model()
    opt = FusedRMSprop(model.parameters(), **KW)
    opt.release_gradients()
    (x, y), = _batches(1)
    copied = copy.deepcopy(model)  # e.g. an EMA copy: its params carry no hooks
    _loss(copied, x, y).backward()
    assert all(p.grad is not None for p in copied.parameters())
    restored = pickle.loads(pickle.dumps(opt))
    assert restored._release is None
    restored.step()  # a plain optimizer over its own copies of the params


def test_mixed_dtypes_complex_and_strided_view_params_in_one_group():
    # one group whose calls split by dtype, a complex param (pairs of reals)
    # and a strided view (updated through a dense stand-in)
    def params():
        gen = torch.Generator().manual_seed(3)
        base = torch.randn(6, 8, dtype=torch.float64, generator=gen)
        return [torch.nn.Parameter(base[:, ::2]),
                torch.nn.Parameter(torch.randn(5, dtype=torch.complex128, generator=gen)),
                torch.nn.Parameter(torch.randn(7, generator=gen)),
                torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64, generator=gen))]

    runs = []
    for release in (False, True):
        ps = params()
        opt = FusedRMSprop(ps, **KW)
        if release:
            opt.release_gradients(bucket_bytes=100)
        for step in range(3):
            loss = sum((p.abs() if p.is_complex() else p).pow(2).sum().double() * (k + step + 1)
                       for k, p in enumerate(ps))
            loss.backward()
            opt.step()
            opt.zero_grad()
        runs.append(ps)
    assert not runs[1][0].is_contiguous()
    for p, q in zip(*runs):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_compiled_model_releases_like_a_compiled_model_without_release():
    # torch.compile(model): the backward is one compiled node, and the
    # parameters' post-accumulate-grad hooks still run after it
    runs = []
    for release in (False, True):
        model = _model()
        opt = FusedRMSprop(model.parameters(), **KW)
        if release:
            opt.release_gradients(bucket_bytes=2048)
        _train(torch.compile(model), opt, _batches(), release)
        runs.append(model)
    _assert_same(*runs)
