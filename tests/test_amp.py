"""GradScaler: FusedRMSprop unscales inside the kernel and skips inf/NaN steps,
with the same results as torch.optim.RMSprop under the same scaler."""

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop._ops import rmsprop_
from fused_rmsprop.testing import assert_no_less_accurate

emulation = pytest.importorskip("fused_rmsprop._C_emulation")


def _train(opt_class, device="cpu", bad_steps=(2, 5), dtype=torch.float32, clip=None, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 2)).to(device, dtype)
    opt = opt_class(model.parameters(), **kw)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10, growth_interval=2)
    data = torch.randn(8, 32, 8, device=device).to(dtype)
    scales = []
    for i, x in enumerate(data):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        if i in bad_steps:
            loss = loss * float("inf")  # inf gradients: the scaler must skip this step
        scaler.scale(loss).backward()
        if clip is not None:  # the clipping recipe of docs/distributed.md (Lightning)
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return model, opt, scales


KWS = [dict(), dict(momentum=0.9, centered=True, weight_decay=0.01)]


@pytest.mark.parametrize("kw", KWS)
def test_grad_scaler_matches_torch_including_skipped_steps(kw):
    # float64: both optimizers round at 1e-16, so 8 steps agree to 1e-10
    # whatever the CPU (docs/conventions.md's float64 bound).
    m1, o1, s1 = _train(FusedRMSprop, dtype=torch.float64, **kw)
    m2, o2, s2 = _train(torch.optim.RMSprop, dtype=torch.float64, **kw)
    assert s1 == s2  # the same steps were skipped, so the scale moved alike
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        sa, sb = o1.state[a], o2.state[b]
        assert sa["step"].item() == sb["step"].item() == 6  # 8 steps, 2 skipped
        assert set(sa) == set(sb)
        for key in sb:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", KWS)
def test_unscale_then_clip_then_step_matches_torch(kw):
    # GradScaler.unscale_ before step(): the scaler then passes no grad_scale,
    # so the kernel must not unscale a second time; inf steps are still skipped.
    m1, o1, s1 = _train(FusedRMSprop, dtype=torch.float64, clip=0.05, **kw)
    m2, o2, s2 = _train(torch.optim.RMSprop, dtype=torch.float64, clip=0.05, **kw)
    m3, _, _ = _train(torch.optim.RMSprop, dtype=torch.float64, **kw)
    assert s1 == s2
    for a, b, c in zip(m1.parameters(), m2.parameters(), m3.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert not torch.allclose(a, c)  # clipping did change the training
        assert o1.state[a]["step"].item() == o2.state[b]["step"].item() == 6


@pytest.mark.parametrize("kw", KWS)
def test_grad_scaler_in_float32_is_as_accurate_as_torch(kw):
    # float32 training amplifies rounding (centered + momentum most), by an
    # amount that depends on the problem and the CPU's vector width, so the
    # bound comes from the float64 run: ours may drift from it no more than a
    # few times as far as torch's float32 run does.
    m1, o1, s1 = _train(FusedRMSprop, **kw)
    m2, o2, s2 = _train(torch.optim.RMSprop, **kw)
    m3, o3, s3 = _train(torch.optim.RMSprop, dtype=torch.float64, **kw)
    assert s1 == s2 == s3
    for i, (a, b, c) in enumerate(zip(m1.parameters(), m2.parameters(), m3.parameters())):
        assert_no_less_accurate(a, b, c, f"param {i}")
        for key in o3.state[c]:
            if key != "step":
                assert_no_less_accurate(o1.state[a][key], o2.state[b][key], o3.state[c][key],
                                        f"param {i} {key}")


def _lists(n=70):
    torch.manual_seed(0)
    return [[torch.randn(n)], [torch.randn(n) * 512], [torch.rand(n) + 0.5], [torch.randn(n)],
            [], [torch.zeros(())]]


HYPER = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=0.9, maximize=False)


@pytest.mark.parametrize("kernel", ["cpu", "cuda_emulated"])
def test_found_inf_leaves_everything_untouched(kernel):
    op = rmsprop_ if kernel == "cpu" else torch.ops.fused_rmsprop_emulation.rmsprop_
    lists = _lists()
    before = [[t.clone() for t in lst] for lst in lists]
    op(*lists, **HYPER, grad_scale=torch.tensor(512.0), found_inf=torch.tensor(1.0))
    for lst, old in zip(lists, before):
        for t, o in zip(lst, old):
            assert torch.equal(t, o)


@pytest.mark.parametrize("kernel", ["cpu", "cuda_emulated"])
def test_grad_scale_unscales_inside_the_kernel(kernel):
    op = rmsprop_ if kernel == "cpu" else torch.ops.fused_rmsprop_emulation.rmsprop_
    scaled, unscaled = _lists(), _lists()
    unscaled[1] = [unscaled[1][0] / 512]
    op(*scaled, **HYPER, grad_scale=torch.tensor(512.0), found_inf=torch.tensor(0.0))
    op(*unscaled, **HYPER)
    for a, b in zip(scaled, unscaled):
        if a is scaled[1]:
            continue
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert scaled[5][0].item() == 1.0


def test_bad_grad_scale_is_rejected():
    with pytest.raises(RuntimeError, match="grad_scale must be a one-element float32"):
        rmsprop_(*_lists(), **HYPER, grad_scale=torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("kernel", ["cpu", "cuda_emulated"])
def test_lr_tensor_is_read_by_the_kernel(kernel):
    # Capturable CUDA steps with a Tensor lr pass it as lr_tensor; the CUDA
    # kernel reads it from device memory (here under emulation).
    op = rmsprop_ if kernel == "cpu" else torch.ops.fused_rmsprop_emulation.rmsprop_
    from_tensor, from_float = _lists(), _lists()
    op(*from_tensor, **dict(HYPER, lr=0.0), lr_tensor=torch.tensor(0.125))
    op(*from_float, **dict(HYPER, lr=0.125))
    for a, b in zip(from_tensor, from_float):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    unchanged = _lists()
    op(*unchanged, **dict(HYPER, lr=0.125, weight_decay=0.0), lr_tensor=torch.tensor(0.0))
    assert torch.equal(unchanged[0][0], _lists()[0][0])  # lr_tensor = 0 wins over lr
