"""FusedRMSprop as a drop-in: signature, validation, state, groups, schedulers."""

import copy
import inspect

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing import assert_close_scaled


def _snapshot(opt, params):
    return ([p.detach().clone() for p in params],
            {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()})


def _assert_unchanged(opt, params, snap):
    for p, old in zip(params, snap[0]):
        assert torch.equal(p.detach(), old)
    assert {id(p) for p in opt.state} == set(snap[1])
    for p, s in opt.state.items():
        assert set(s) == set(snap[1][id(p)])
        for k, v in s.items():
            assert torch.equal(v, snap[1][id(p)][k]), k


# Training runs that compare FusedRMSprop with torch run in float64: two
# correct implementations then agree to 1e-10 on every CPU (rounding at 1e-16,
# amplified by a few steps of a small tanh network), and any real difference
# shows. (float32 end-to-end accuracy: test_amp.py and fused_rmsprop.testing.)
F64 = dict(rtol=1e-10, atol=1e-12)


def _train(opt_class, steps=5, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1)).to(dtype)
    opt = opt_class(model.parameters(), **kw)
    data = torch.randn(steps, 32, 8).to(dtype)
    for x in data:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_signature_and_defaults_match_torch():
    ours = inspect.signature(FusedRMSprop).parameters
    theirs = inspect.signature(torch.optim.RMSprop).parameters
    for name, param in theirs.items():
        assert name in ours, name
        assert ours[name].default == param.default, name
        assert ours[name].kind == param.kind, name
    extra = set(ours) - set(theirs)
    assert extra == {"eps_in_sqrt", "initial_square_avg", "lr_in_momentum",
                     "decoupled_weight_decay", "state_dtype", "max_grad_norm", "norm_type",
                     "stochastic_rounding", "rounding_seed", "state_bits", "min_8bit_size"}
    assert all(ours[n].kind is inspect.Parameter.KEYWORD_ONLY for n in extra)
    p = [torch.zeros(1, requires_grad=True)]
    t_defaults = torch.optim.RMSprop(p).defaults
    f_defaults = FusedRMSprop(p).defaults
    assert {k: f_defaults[k] for k in t_defaults} == t_defaults


@pytest.mark.parametrize("kw", [
    dict(lr=-1.0), dict(eps=-1e-8), dict(momentum=-0.1), dict(weight_decay=-0.1),
    dict(alpha=-0.5), dict(lr=torch.tensor([0.1, 0.2])),
])
def test_invalid_hyperparameters_raise_as_torch(kw):
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError) as theirs:
        torch.optim.RMSprop(p, **kw)
    with pytest.raises(ValueError) as ours:
        FusedRMSprop(p, **kw)
    assert str(ours.value) == str(theirs.value)


def test_own_arguments_are_validated():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="initial_square_avg"):
        FusedRMSprop(p, initial_square_avg=-1.0)
    with pytest.raises(ValueError, match="differentiable=True"):
        FusedRMSprop(p, differentiable=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        FusedRMSprop([])


def test_same_training_as_torch_with_closure_zero_grad_and_foreach():
    for kw in [dict(), dict(momentum=0.9, centered=True, foreach=True)]:
        m1, _ = _train(FusedRMSprop, **kw)
        m2, _ = _train(torch.optim.RMSprop, **kw)
        for a, b in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(a, b, **F64)
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = FusedRMSprop([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 5.0
    assert w.grad is not None and not torch.equal(w.detach(), torch.tensor([1.0, -2.0]))


def test_params_without_grad_are_skipped_and_get_no_state():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = FusedRMSprop([a, b])
    a.grad = torch.ones(3)
    opt.step()
    assert b not in opt.state and torch.equal(b.detach(), torch.ones(3))
    assert a in opt.state and opt.state[a]["step"].item() == 1.0


def test_state_keys_dtypes_and_devices_match_torch():
    for kw in [dict(), dict(momentum=0.9), dict(centered=True), dict(momentum=0.5, centered=True)]:
        _, ours = _train(FusedRMSprop, steps=2, **kw)
        _, theirs = _train(torch.optim.RMSprop, steps=2, **kw)
        for so, st in zip(ours.state.values(), theirs.state.values()):
            assert set(so) == set(st)
            for k in st:
                assert (so[k].dtype, so[k].shape, so[k].device) == (st[k].dtype, st[k].shape, st[k].device), k
        assert ours.state_dict()["param_groups"][0].keys() >= theirs.state_dict()["param_groups"][0].keys()


@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_state_dict_round_trip_continues_identically(direction):
    kw = dict(momentum=0.9, centered=True, weight_decay=0.01)
    first, second = ((torch.optim.RMSprop, FusedRMSprop) if direction == "torch_to_fused"
                     else (FusedRMSprop, torch.optim.RMSprop))
    model, opt = _train(first, steps=3, **kw)
    model2 = copy.deepcopy(model)
    opt2 = second(model2.parameters(), **kw)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    x = torch.randn(32, 8, dtype=torch.float64)
    for m, o in ((model, opt), (model2, opt2)):
        for _ in range(3):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert_close_scaled(a, b, F64["rtol"], F64["atol"], "param")
    for sa, sb in zip(opt.state.values(), opt2.state.values()):
        assert set(sa) == set(sb)
        for k in sa:
            assert_close_scaled(sa[k], sb[k], F64["rtol"], F64["atol"], k)


def test_add_param_group_and_lr_scheduler_follow_torch():
    def run(cls):
        torch.manual_seed(0)
        a, b = torch.randn(5, requires_grad=True), torch.randn(7, requires_grad=True)
        opt = cls([a], lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        for i in range(6):
            if i == 2:
                opt.add_param_group({"params": [b], "momentum": 0.9})
            a.grad, b.grad = torch.randn(5), torch.randn(7)
            opt.step()
            sched.step()
        return a, b, opt.param_groups[0]["lr"]

    a1, b1, lr1 = run(FusedRMSprop)
    a2, b2, lr2 = run(torch.optim.RMSprop)
    assert lr1 == lr2 == 0.0125
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(b1, b2)


def test_tensor_lr_on_cpu_matches_float_lr():
    torch.manual_seed(0)
    a = torch.randn(9, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    o1, o2 = FusedRMSprop([a], lr=torch.tensor(0.05)), FusedRMSprop([b], lr=0.05)
    for _ in range(3):
        a.grad = torch.randn(9)
        b.grad = a.grad.clone()
        o1.step()
        o2.step()
    assert torch.equal(a, b)


def test_sparse_grad_raises_and_changes_nothing():
    a, b = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    opt = FusedRMSprop([a, b], momentum=0.9)
    a.grad = torch.randn(4)
    b.grad = torch.randn(4).to_sparse()
    snap = _snapshot(opt, [a, b])
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    _assert_unchanged(opt, [a, b], snap)


@pytest.mark.parametrize("corrupt", ["shape", "dtype", "missing_step"])
def test_bad_state_in_a_later_group_leaves_everything_unchanged(corrupt):
    a, b = torch.randn(4, requires_grad=True), torch.randn(6, requires_grad=True)
    opt = FusedRMSprop([{"params": [a]}, {"params": [b], "centered": True}])
    for _ in range(2):
        a.grad, b.grad = torch.randn(4), torch.randn(6)
        opt.step()
    c = torch.randn(3, requires_grad=True)  # a new param: its state must not appear
    opt.add_param_group({"params": [c]})
    c.grad = torch.randn(3)
    state = opt.state[b]
    if corrupt == "shape":
        state["grad_avg"] = torch.zeros(5)
    elif corrupt == "dtype":
        state["square_avg"] = state["square_avg"].double()
    else:
        del state["step"]
    snap = _snapshot(opt, [a, b, c])
    with pytest.raises(RuntimeError, match="state"):
        opt.step()
    _assert_unchanged(opt, [a, b, c], snap)


def test_grad_of_wrong_shape_raises_and_changes_nothing():
    a, b = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    opt = FusedRMSprop([a, b])
    a.grad = torch.randn(4)
    b.grad = torch.randn(4)
    opt.step()
    b.grad_dtype = None  # lets a grad of another dtype through autograd's check
    b.grad = torch.randn(4, dtype=torch.float64)
    snap = _snapshot(opt, [a, b])
    with pytest.raises(RuntimeError, match="grad of parameter 1"):
        opt.step()
    _assert_unchanged(opt, [a, b], snap)


def test_float16_with_zero_gradients_stays_finite_unlike_torch():
    p = torch.randn(64, dtype=torch.float16, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    grad = torch.randn(64, dtype=torch.float16)
    grad[::4] = 0
    ours, theirs = FusedRMSprop([p]), torch.optim.RMSprop([q])
    for _ in range(3):
        p.grad, q.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
    assert torch.isfinite(p).all() and torch.isfinite(ours.state[p]["square_avg"]).all()
    assert torch.isnan(q[::4]).all()  # torch's eager fp16 path: 0 / (0 + 0)


def test_channels_last_and_transposed_params_are_updated_correctly():
    torch.manual_seed(0)
    conv = torch.randn(8, 3, 3, 3).to(memory_format=torch.channels_last).requires_grad_()
    lin = torch.randn(5, 7).t().requires_grad_()  # dense, transposed
    ref = [conv.detach().clone().requires_grad_(), lin.detach().clone().requires_grad_()]
    ours, theirs = FusedRMSprop([conv, lin], momentum=0.9), torch.optim.RMSprop(ref, momentum=0.9)
    for _ in range(3):
        g1, g2 = torch.randn(8, 3, 3, 3), torch.randn(7, 5)  # contiguous grads
        conv.grad, lin.grad = g1, g2
        ref[0].grad, ref[1].grad = g1.clone(), g2.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(conv, ref[0])
    torch.testing.assert_close(lin, ref[1])
    assert ours.state[conv]["square_avg"].is_contiguous(memory_format=torch.channels_last)


def test_integer_param_is_rejected_clearly():
    p = torch.zeros(3, dtype=torch.int64)
    opt = FusedRMSprop([p])
    p.grad = torch.ones(3, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating-point"):
        opt.step()


def test_momentum_switched_on_later_creates_the_buffer():
    p = torch.randn(5, requires_grad=True)
    opt = FusedRMSprop([p])
    p.grad = torch.randn(5)
    opt.step()
    opt.param_groups[0]["momentum"] = 0.9
    opt.step()
    assert opt.state[p]["momentum_buffer"].shape == p.shape


def test_help_shows_the_class_docstring():
    import pydoc

    assert FusedRMSprop.__doc__.startswith("RMSprop whose step is one fused kernel call")
    text = pydoc.render_doc(FusedRMSprop, renderer=pydoc.plaintext)
    for word in ("eps_in_sqrt", "lr_in_momentum", "state_dtype", "strided views", "state_dict"):
        assert word in text, word
