"""The registered op itself: schema, checks, fake kernel, opcheck, compile."""

import pytest
import torch

import fused_rmsprop  # noqa: F401  (registers the op)
from fused_rmsprop import rmsprop_
from fused_rmsprop._ops import rmsprop_check
from fused_rmsprop.testing import ReferenceRMSprop, assert_close_scaled, reference_rmsprop_update

HYPER = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=0.9, maximize=False)


def _lists(shapes, dtype=torch.float32, state_dtype=None, momentum=True, centered=True):
    state_dtype = state_dtype or dtype
    params = [torch.randn(s, dtype=dtype) for s in shapes]
    grads = [torch.randn(s, dtype=dtype) for s in shapes]
    sq = [torch.rand(s, dtype=state_dtype) + 0.5 for s in shapes]
    bufs = [torch.randn(s, dtype=state_dtype) for s in shapes] if momentum else []
    gavg = [0.1 * torch.randn(s, dtype=state_dtype) for s in shapes] if centered else []
    steps = [torch.zeros(()) for _ in shapes]
    return params, grads, sq, bufs, gavg, steps


@pytest.mark.parametrize("momentum,centered", [(False, False), (True, False), (False, True), (True, True)])
def test_opcheck(momentum, centered):
    args = _lists([(3,), (0,), (17, 5)], momentum=momentum, centered=centered)
    kw = dict(HYPER, momentum=0.9 if momentum else 0.0)
    torch.library.opcheck(torch.ops.fused_rmsprop.rmsprop_.default, args, kw)
    torch.library.opcheck(torch.ops.fused_rmsprop.rmsprop_check.default, args, kw)


@pytest.mark.parametrize("param_dtype", [torch.bfloat16, torch.float16], ids=str)
def test_float32_state_for_half_params(param_dtype):
    params, grads, sq, bufs, gavg, steps = _lists([(33,), (129,)], dtype=param_dtype,
                                                  state_dtype=torch.float32)
    expected, before = [], [p.clone() for p in params]
    for p, g, v, b, a in zip(params, grads, sq, bufs, gavg):
        state = {"square_avg": v.double(), "momentum_buffer": b.double(), "grad_avg": a.double()}
        p64 = p.double()
        reference_rmsprop_update(p64, g.double(), state, centered=True, **HYPER)
        expected.append((p64, state))
    rmsprop_(params, grads, sq, bufs, gavg, steps, **HYPER)
    assert [s.item() for s in steps] == [1.0, 1.0]
    # One step computed in float32: params round once to their dtype (half an
    # ulp, at most eps relative), float32 state keeps float32 accuracy (a few
    # ulps of float32) although the params are half precision. atol covers
    # cancellation, relative to each tensor's scale.
    eps, eps32 = torch.finfo(param_dtype).eps, torch.finfo(torch.float32).eps
    for i, (p64, state) in enumerate(expected):
        assert_close_scaled(params[i], p64, eps, 16 * eps32, "param", also=before[i])
        for key, got in (("square_avg", sq[i]), ("momentum_buffer", bufs[i]), ("grad_avg", gavg[i])):
            assert_close_scaled(got, state[key], 8 * eps32, 8 * eps32, key)


@pytest.mark.parametrize("mutate,match", [
    (lambda L: L[1].pop(), "grads has 1 tensors but params has 2"),
    (lambda L: L[1].__setitem__(0, L[1][0].double()), r"grads\[0\] has dtype Double"),
    (lambda L: L[2].__setitem__(1, torch.zeros(4)), r"square_avgs\[1\] has shape"),
    (lambda L: L[3].clear(), "momentum = 0.9 > 0 needs one momentum_buffer"),
    (lambda L: L[4].__setitem__(0, torch.zeros(6)[::2]), r"grad_avgs\[0\] must be dense"),
    (lambda L: L[0].__setitem__(0, torch.zeros(3, dtype=torch.int32)), "supported are float64"),
    (lambda L: L[5].__setitem__(1, torch.zeros(2)), r"state_steps\[1\] must be a one-element"),
], ids=["length", "grad_dtype", "state_shape", "no_buffers", "strided_state", "int_param",
        "step_shape"])
@pytest.mark.parametrize("op", [rmsprop_, rmsprop_check], ids=["update", "check"])
def test_bad_arguments_raise_before_anything_is_written(mutate, match, op):
    lists = [list(x) for x in _lists([(3,), (5,)])]
    mutate(lists)
    before = [[t.clone() for t in lst] for lst in lists]
    with pytest.raises(RuntimeError, match=match):
        op(*lists, **HYPER)
    for lst, old in zip(lists, before):
        for t, o in zip(lst, old):
            assert torch.equal(t, o)


def test_mixed_devices_and_float32_state_for_float32_params_are_rejected():
    lists = _lists([(3,)])
    bad = list(lists[2])
    bad[0] = bad[0].to("meta")
    with pytest.raises(RuntimeError, match="device"):
        rmsprop_(lists[0], lists[1], bad, lists[3], lists[4], lists[5], **HYPER)
    p, g, sq, b, a, st = _lists([(3,)], dtype=torch.float64, state_dtype=torch.float32)
    with pytest.raises(RuntimeError, match="does not fit params"):
        rmsprop_(p, g, sq, b, a, st, **HYPER)


def test_sparse_and_empty_lists_are_refused_by_the_dispatcher():
    # No kernel exists for sparse tensors, and a call without tensors has no
    # device to dispatch on (FusedRMSprop never makes one).
    p, g, sq, _, _, st = _lists([(3,)], momentum=False, centered=False)
    with pytest.raises(NotImplementedError, match="SparseCPU"):
        rmsprop_(p, [g[0].to_sparse()], sq, [], [], st, **dict(HYPER, momentum=0.0))
    with pytest.raises(NotImplementedError, match="empty list"):
        rmsprop_([], [], [], [], [], [], **HYPER)


def test_compiles_with_fullgraph_and_matches_eager():
    params, grads, sq, bufs, gavg, steps = _lists([(7,), (64,)])
    clones = [[t.clone() for t in lst] for lst in (params, grads, sq, bufs, gavg, steps)]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(p, g, s, b, a, st):
        rmsprop_(p, g, s, b, a, st, **HYPER)

    step(params, grads, sq, bufs, gavg, steps)
    rmsprop_(*clones, **HYPER)
    assert torch.equal(steps[0], clones[5][0])
    for lst, ref in zip((params, sq, bufs, gavg), (clones[0], clones[2], clones[3], clones[4])):
        for t, r in zip(lst, ref):
            assert torch.equal(t, r)


def test_reference_optimizer_is_a_real_optimizer():
    x = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    opt = ReferenceRMSprop([x], lr=0.1)
    x.grad = torch.tensor([1.0, 0.0], dtype=torch.float64)
    opt.step()
    # v = 0.01, d = 0.1 + 1e-8: x0 moves by lr * 1 / d, x1 not at all.
    torch.testing.assert_close(x.detach(), torch.tensor([1.0 - 0.1 / (0.1 + 1e-8), -1.0],
                                                        dtype=torch.float64))


def test_optimizer_step_compiles_with_fullgraph_and_matches_eager():
    from fused_rmsprop import FusedRMSprop

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        return model, FusedRMSprop(model.parameters(), momentum=0.9, centered=True)

    x = torch.randn(32, 8)
    (m1, o1), (m2, o2) = make(), make()
    compiled_step = torch.compile(o2.step, fullgraph=True, backend="aot_eager")
    for i in range(3):
        for m, step in ((m1, o1.step), (m2, compiled_step if i > 0 else o2.step)):
            m.zero_grad()
            m(x).pow(2).mean().backward()
            step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert o1.state[p1]["step"].item() == o2.state[p2]["step"].item() == 3


def _tensor_lr_model(dtype=torch.float32):
    from fused_rmsprop import FusedRMSprop

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 2)).to(dtype)
    return model, FusedRMSprop(model.parameters(), lr=torch.tensor(0.01, dtype=dtype),
                               momentum=0.9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_tensor_lr_is_traced_as_an_input(dtype):
    # A Tensor lr goes to the kernel as a tensor on every device: the compiled
    # step has no graph break (fullgraph) and is not recompiled when the lr
    # changes in place, as schedulers change a Tensor lr.
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    x = torch.randn(32, 8, dtype=dtype)
    (m1, o1), (m2, o2) = _tensor_lr_model(dtype), _tensor_lr_model(dtype)
    compiled_step = torch.compile(o2.step, fullgraph=True, backend=counter)
    frames = []
    for i in range(6):
        for m, o, step in ((m1, o1, o1.step), (m2, o2, compiled_step if i > 0 else o2.step)):
            m.zero_grad()
            m(x).pow(2).mean().backward()
            step()
            o.param_groups[0]["lr"].fill_(0.01 * 0.7 ** (i + 1))
        frames.append(counter.frame_count)
    # compiled at the first compiled step (dynamo may trace it twice then, as
    # it does for float64), never again for the 4 new lr values that follow
    assert 1 <= frames[1] == frames[-1] <= 2, frames
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_a_scheduler_in_a_compiled_train_step_does_not_recompile():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    x = torch.randn(32, 8)
    runs = []
    for compiled in (False, True):
        model, opt = _tensor_lr_model()
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)

        def train_step():
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()

        step = torch.compile(train_step, backend=counter) if compiled else train_step
        frames = []
        for _ in range(8):
            step()
            sched.step()
            frames.append(counter.frame_count)
        runs.append(model)
    # graphs are made in the first steps (the first creates the state), then
    # 6 new lr values compile nothing more
    assert frames[2] == frames[-1] <= 3, frames
    for a, b in zip(*(m.parameters() for m in runs)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kernel", ["cpu", "cuda_emulated"])
def test_a_float64_lr_tensor_keeps_float64_params_exact(kernel):
    # 0.1 is not a float32 number: a float64 lr_tensor must give the bits of
    # the Python float 0.1, not of float32(0.1).
    emulation = pytest.importorskip("fused_rmsprop._C_emulation")  # noqa: F841
    op = rmsprop_ if kernel == "cpu" else torch.ops.fused_rmsprop_emulation.rmsprop_
    a = _lists([(33,)], dtype=torch.float64)
    b = [[t.clone() for t in lst] for lst in a]
    c = [[t.clone() for t in lst] for lst in a]
    op(*a, **dict(HYPER, lr=0.0), lr_tensor=torch.tensor(0.1, dtype=torch.float64))
    op(*b, **dict(HYPER, lr=0.1))
    op(*c, **dict(HYPER, lr=0.0), lr_tensor=torch.tensor(0.1, dtype=torch.float32))
    assert torch.equal(a[0][0], b[0][0])
    assert not torch.equal(c[0][0], b[0][0])  # float32(0.1) differs: the test can tell


def test_a_cpu_tensor_lr_is_refused_inside_cuda_graph_capture(monkeypatch):
    # (no GPU needed: the refusal comes before any copy to the device)
    from fused_rmsprop._op_args import lr_for

    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(ValueError, match="CPU Tensor lr cannot follow its value in a captured"):
        lr_for(torch.tensor(0.1), torch.device("cuda", 0))
    assert lr_for(torch.tensor(0.1), torch.device("cpu"))["lr_tensor"].item() == pytest.approx(0.1)


def test_the_schemas_generated_from_the_argument_table():
    # csrc/op_args.h writes the arguments once; the schemas are what the
    # table generates, the update op with its tensors marked as written.
    args = ("{a}[] params, Tensor[] grads, {b}[] square_avgs, {c}[] momentum_buffers, "
            "{d}[] grad_avgs, {e}[] state_steps, *, float lr, float alpha, float eps, "
            "float weight_decay, float momentum, bool maximize, bool eps_in_sqrt=False, "
            "bool lr_in_momentum=False, bool decoupled_weight_decay=False, "
            "Tensor? grad_scale=None, Tensor? found_inf=None, Tensor? lr_tensor=None, "
            "Tensor? grad_factor=None, int[] rounding_ids=[], int rounding_seed=0, "
            "{f}[]? square_avg_scales=None, {g}[]? momentum_buffer_scales=None, "
            "{h}[]? grad_avg_scales=None")
    written = {k: f"Tensor({k}!)" for k in "abcdefgh"}
    read = {k: "Tensor" for k in "abcdefgh"}
    ops = torch.ops.fused_rmsprop
    assert str(ops.rmsprop_.default._schema) == \
        f"fused_rmsprop::rmsprop_({args.format(**written)}) -> ()"
    assert str(ops.rmsprop_check.default._schema) == \
        f"fused_rmsprop::rmsprop_check({args.format(**read)}) -> ()"
