"""Tests that need a CUDA GPU; they skip where none is visible (as in CI here)."""

import itertools

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.check import main as self_check
from fused_rmsprop.testing import assert_matches_torch, compare_optimizers

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
GRID = [dict(momentum=m, centered=c, weight_decay=wd, maximize=mx, alpha=a)
        for m, c, wd, mx, a in itertools.product([0.0, 0.9], [False, True], [0.0, 0.1],
                                                 [False, True], [0.99, 0.9])]


def test_self_check_passes_on_every_visible_device(capsys):
    assert self_check() == 0
    assert "cpu" in capsys.readouterr().out


@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("hyper", GRID, ids=str)
def test_cuda_matches_torch(hyper, dtype):
    assert_matches_torch(FusedRMSprop, dtype=dtype, device="cuda", **hyper)


@cuda
def test_cuda_matches_cpu_kernel():
    for dtype in (torch.float32, torch.bfloat16):
        compare_optimizers(lambda p: FusedRMSprop(p, momentum=0.9, centered=True),
                           lambda p: FusedRMSprop(p, momentum=0.9, centered=True),
                           dtype=dtype, device="cuda", baseline_device="cpu")


@cuda
def test_non_default_stream_and_zero_size_last_param():
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        assert_matches_torch(FusedRMSprop, shapes=[(1000,), (3, 7), (0,)], dtype=torch.float32,
                             device="cuda", momentum=0.9)
    stream.synchronize()


@cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="one GPU")
def test_second_device():
    assert_matches_torch(FusedRMSprop, dtype=torch.float32, device="cuda:1", centered=True)


@cuda
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_cuda_graph_capture_and_replay_of_a_capturable_step(tensor_lr):
    p = torch.randn(1000, device="cuda", requires_grad=True)
    q = p.detach().clone().requires_grad_()
    lr = torch.tensor(0.01, device="cuda") if tensor_lr else 0.01
    opt = FusedRMSprop([p], lr=lr, capturable=True, momentum=0.9)
    ref = torch.optim.RMSprop([q], lr=lr.clone() if tensor_lr else lr, capturable=True,
                              momentum=0.9)
    p.grad = torch.randn_like(p)
    q.grad = p.grad.clone()
    opt.step()  # warm up: allocates state outside the graph
    ref.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for i in range(3):
        p.grad.copy_(torch.randn_like(p))
        q.grad.copy_(p.grad)
        if tensor_lr:  # the captured step must follow the lr tensor's new value
            opt.param_groups[0]["lr"].fill_(0.01 / (i + 2))
            ref.param_groups[0]["lr"].fill_(0.01 / (i + 2))
        graph.replay()
        ref.step()
    torch.cuda.synchronize()
    torch.testing.assert_close(p, q)


@cuda
def test_grad_scaler_on_cuda_matches_torch_and_skips_without_sync():
    from test_amp import _train

    for kw in (dict(), dict(capturable=True, momentum=0.9)):
        # float64, as test_amp.py: two correct runs agree to 1e-10 on any device
        m1, o1, s1 = _train(FusedRMSprop, device="cuda", dtype=torch.float64, **kw)
        m2, o2, s2 = _train(torch.optim.RMSprop, device="cuda", dtype=torch.float64, **kw)
        assert s1 == s2
        for a, b in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            assert o1.state[a]["step"].item() == o2.state[b]["step"].item()
