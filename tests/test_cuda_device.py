"""Tests that need a CUDA GPU; they skip where none is visible (as in CI here).

What a GPU run must show: parity with torch over the grid, bits equal to the
CPU kernel (the CUDA kernel is built with --fmad=false, as the CPU one with
-ffp-contract=off), no host synchronisation in a steady step with or without
GradScaler, the current stream honoured with pending producer work, views
with storage offsets, lists that need several launches, CUDA graphs whose
replays AMP skips, and a tensor of more than 2**31 elements (when it fits).
"""

import itertools

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.check import main as self_check
from fused_rmsprop.testing import assert_matches_torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
GRID = [dict(momentum=m, centered=c, weight_decay=wd, maximize=mx, alpha=a)
        for m, c, wd, mx, a in itertools.product([0.0, 0.9], [False, True], [0.0, 0.1],
                                                 [False, True], [0.99, 0.9])]
SWITCHES = [dict(eps_in_sqrt=True, initial_square_avg=1.0),
            dict(lr_in_momentum=True, decoupled_weight_decay=True, momentum=0.9, weight_decay=0.1)]


def test_self_check_passes_on_every_visible_device(capsys):
    assert self_check() == 0
    assert "cpu" in capsys.readouterr().out


def _twins(shapes, dtype, offset=0, seed=0):
    """The same parameters on the GPU and on the CPU (offset > 0: views that
    start `offset` elements into their storage, so not 16-byte aligned)."""
    gen = torch.Generator().manual_seed(seed)
    cpu, gpu = [], []
    for s in shapes:
        n = int(torch.Size(s).numel())
        base = torch.randn(n + offset, generator=gen, dtype=torch.float64).to(dtype)
        p_cpu = base[offset:].view(s).requires_grad_()
        p_gpu = base.cuda()[offset:].view(s).requires_grad_()
        cpu.append(p_cpu)
        gpu.append(p_gpu)
    return cpu, gpu


def _set_grads(cpu, gpu, gen):
    for a, b in zip(cpu, gpu):
        g = torch.randn(a.shape, generator=gen, dtype=torch.float64).to(a.dtype)
        a.grad, b.grad = g, g.cuda()


def _assert_same_bits(opt_cpu, opt_gpu, cpu, gpu):
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        assert torch.equal(a.detach(), b.detach().cpu()), f"param {i}"
        sa, sb = opt_cpu.state[a], opt_gpu.state[b]
        assert set(sa) == set(sb)
        for key in sa:
            assert torch.equal(sa[key], sb[key].cpu()), f"{key} of param {i}"


def _run_twins(shapes, dtype, steps=4, offset=0, **kw):
    cpu, gpu = _twins(shapes, dtype, offset)
    opt_cpu, opt_gpu = FusedRMSprop(cpu, **kw), FusedRMSprop(gpu, **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        _set_grads(cpu, gpu, gen)
        opt_cpu.step()
        opt_gpu.step()
    _assert_same_bits(opt_cpu, opt_gpu, cpu, gpu)
    return opt_gpu, gpu


@cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hyper", GRID, ids=str)
def test_cuda_matches_torch(hyper, dtype):
    assert_matches_torch(FusedRMSprop, dtype=dtype, device="cuda", **hyper)


@cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hyper", GRID[::3] + SWITCHES, ids=str)
def test_cuda_kernel_gives_the_cpu_kernels_bits(hyper, dtype):
    # sizes around the vector width, the chunk (65536) and odd shapes
    shapes = [(1,), (3,), (4,), (7, 5), (65536,), (65536 + 3,), (2, 65536 + 1)]
    _run_twins(shapes, dtype, **hyper)


@cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", [1, 2, 3])
def test_offset_views_of_every_dtype(dtype, offset):
    # misaligned for the 128-bit path: the masked path must give the same bits
    _run_twins([(5,), (1000,), (65536 + 7,)], dtype, offset=offset, momentum=0.9, centered=True)


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_float32_state_for_half_params_gives_the_cpu_bits(dtype):
    _run_twins([(3,), (65536 + 5,)], dtype, momentum=0.9, centered=True,
               state_dtype=torch.float32)


@cuda
def test_lists_that_need_several_launches():
    # More tensors than a launch holds (336 / 252 / 210 with 32 KB arguments,
    # 48 / 36 / 30 with 4 KB), and a tensor of more chunks than a launch's
    # 2240 blocks, carried over between launches.
    shapes = [(i % 37 + 1,) for i in range(700)] + [(2241 * 65536 + 5,), (9,)]
    for kw in (dict(), dict(momentum=0.9, centered=True)):
        _run_twins(shapes, torch.float32, steps=2, **kw)


@cuda
def test_complex_and_channels_last_params_give_the_cpu_bits():
    cpu = [torch.randn(33, dtype=torch.complex64, requires_grad=True),
           torch.randn(8, 3, 3, 3).to(memory_format=torch.channels_last).requires_grad_()]
    gpu = [p.detach().cuda().requires_grad_() for p in cpu]
    opt_cpu, opt_gpu = FusedRMSprop(cpu, momentum=0.9), FusedRMSprop(gpu, momentum=0.9)
    for _ in range(3):
        for a, b in zip(cpu, gpu):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.cuda()
        opt_cpu.step()
        opt_gpu.step()
    _assert_same_bits(opt_cpu, opt_gpu, cpu, gpu)


@cuda
def test_the_step_runs_on_the_current_stream_after_pending_producer_work():
    # The producer of the gradients is still queued on `side` (behind a
    # sleep) when step() is called there. A kernel on any other stream would
    # read the old gradients and give other bits.
    cpu, gpu = _twins([(1000,), (65536 + 3,), (0,)], torch.float32)
    opt_cpu, opt_gpu = FusedRMSprop(cpu, momentum=0.9), FusedRMSprop(gpu, momentum=0.9)
    gen = torch.Generator().manual_seed(3)
    _set_grads(cpu, gpu, gen)
    opt_cpu.step()
    opt_gpu.step()  # state exists: the next step is a steady one
    torch.cuda.synchronize()
    new = [torch.randn(p.shape, generator=gen) for p in cpu]
    pinned = [g.pin_memory() for g in new]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # about 0.1 s of GPU time
        for b, g in zip(gpu, pinned):
            b.grad.copy_(g, non_blocking=True)
        opt_gpu.step()
    for a, g in zip(cpu, new):
        a.grad = g
    opt_cpu.step()
    side.synchronize()
    _assert_same_bits(opt_cpu, opt_gpu, cpu, gpu)


@cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="one GPU")
def test_second_device():
    assert_matches_torch(FusedRMSprop, dtype=torch.float32, device="cuda:1", centered=True)


def _sync_free(fn):
    """Runs fn with torch's sync debug mode set to error: any host
    synchronisation (item(), a blocking copy to the host, ...) raises."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_sync_debug_mode_sees_a_sync():
    # What makes the no-sync tests able to fail.
    x = torch.zeros((), device="cuda")
    with pytest.raises(RuntimeError, match="synchroniz"):
        _sync_free(lambda: x.item())


@cuda
@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_no_host_sync_in_a_steady_step_with_or_without_grad_scaler(capturable, tensor_lr):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 8)).cuda()
    lr = torch.tensor(0.01, device="cuda") if tensor_lr else 0.01
    opt = FusedRMSprop(model.parameters(), lr=lr, capturable=capturable, momentum=0.9,
                       centered=True)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10, growth_interval=2)
    data = torch.randn(6, 32, 64, device="cuda")

    def plain(x):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    def scaled(x, poison=False):
        opt.zero_grad()
        loss = model(x).square().mean()
        if poison:
            loss = loss * float("inf")  # the scaler must skip this step, on the device
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    plain(data[0])  # creates state (slow path)
    scaled(data[1])  # first scaler step: creates its own tensors
    steps = [opt.state[p]["step"].clone() for p in model.parameters()]
    _sync_free(lambda: (plain(data[2]), scaled(data[3]), scaled(data[4], poison=True),
                        scaled(data[5])))
    for p, before in zip(model.parameters(), steps):
        assert opt.state[p]["step"].device == p.device
        assert opt.state[p]["step"].item() == before.item() + 3  # the poisoned step skipped


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
def test_captured_amp_step_replays_that_skip_change_nothing():
    # A captured step reading GradScaler's tensors (as GradScaler sets them):
    # replays with found_inf = 1 must leave params, state and step untouched,
    # replays with 0 must match the CPU kernel's bits.
    cpu, gpu = _twins([(1000,), (65536 + 1,)], torch.float32)
    kw = dict(capturable=True, momentum=0.9, centered=True)
    opt_cpu, opt_gpu = FusedRMSprop(cpu, **kw), FusedRMSprop(gpu, **kw)
    gen = torch.Generator().manual_seed(5)
    _set_grads(cpu, gpu, gen)
    opt_cpu.step()
    opt_gpu.step()
    scale, found = torch.full((), 4.0, device="cuda"), torch.zeros((), device="cuda")
    opt_gpu.grad_scale, opt_gpu.found_inf = scale, found
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt_gpu.step()
    for skip in (False, True, False, True, True, False):
        for a, b in zip(cpu, gpu):
            g = torch.randn(a.shape, generator=gen)
            a.grad = g  # what the GPU step unscales 4 * g to (exactly: a power of 2)
            b.grad.copy_(4 * g)  # in place: the graph reads the captured grads
        found.fill_(1.0 if skip else 0.0)
        graph.replay()
        if not skip:
            opt_cpu.step()
    torch.cuda.synchronize()
    _assert_same_bits(opt_cpu, opt_gpu, cpu, gpu)
    assert all(opt_gpu.state[b]["step"].item() == 4 for b in gpu)  # 1 + 3 taken


@cuda
def test_a_tensor_over_2_31_elements():
    # int64 indexing: a bfloat16 tensor of 2**31 + 7 elements (about 13 GB for
    # param, grad and square_avg); skipped where the GPU has not that much free.
    n = 2**31 + 7
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * 2 * n + 2**30:
        pytest.skip(f"needs {3 * 2 * n / 2**30:.0f} GiB free on the GPU")
    p = torch.zeros(n, dtype=torch.bfloat16, device="cuda")
    p[-5:] = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0], dtype=torch.bfloat16)
    p.requires_grad_()
    p.grad = torch.ones_like(p)
    opt = FusedRMSprop([p], lr=0.01)
    opt.step()
    torch.cuda.synchronize()
    # v = 0.01 * 1, p -= 0.01 * 1 / (sqrt(0.01) + 1e-8): every element moves by -0.1,
    # the first ones and those past 2**31 alike (a 32-bit index would wrap)
    expected = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0]) - 0.1
    torch.testing.assert_close(p[-5:].detach().float().cpu(),
                               expected.to(torch.bfloat16).float(), rtol=0, atol=0)
    head = p[:1000].detach().float().cpu()
    assert torch.equal(head, torch.full((1000,), -0.1).to(torch.bfloat16).float())
    assert torch.equal(p[2**31 - 3: 2**31 + 2].detach().float().cpu(),
                       torch.full((5,), -0.1).to(torch.bfloat16).float())


@cuda
def test_grad_scaler_on_cuda_matches_torch():
    from test_amp import _train

    for kw in (dict(), dict(capturable=True, momentum=0.9)):
        # float64, as test_amp.py: two correct runs agree to 1e-10 on any device
        m1, o1, s1 = _train(FusedRMSprop, device="cuda", dtype=torch.float64, **kw)
        m2, o2, s2 = _train(torch.optim.RMSprop, device="cuda", dtype=torch.float64, **kw)
        assert s1 == s2
        for a, b in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            assert o1.state[a]["step"].item() == o2.state[b]["step"].item()


@cuda
def test_float64_params_read_a_cuda_tensor_lr_in_float64():
    # lr = 0.1 + tiny is not a float32 number: rounded to float32 it would
    # move every update by ~1.5e-8 relative.
    lr = 0.1 + 2.0**-40
    p0 = torch.randn(1000, dtype=torch.float64, device="cuda")
    grad = torch.randn_like(p0)

    def torch_step(lr_value):
        q = p0.clone().requires_grad_()
        q.grad = grad.clone()
        torch.optim.RMSprop([q], lr=lr_value).step()
        return q.detach()

    p = p0.clone().requires_grad_()
    p.grad = grad.clone()
    FusedRMSprop([p], lr=torch.tensor(lr, dtype=torch.float64, device="cuda")).step()
    q = torch_step(lr)
    # Both sides round the update u = lr * g / (sqrt(v) + eps) in a different
    # order: a few float64 ulps of |u| (about 1 on this first step), which is
    # not small relative to p where p + u nearly cancels. So the tolerance is
    # absolute, in units of the largest update, and rtol covers p's rounding.
    eps = torch.finfo(torch.float64).eps
    atol = 8 * eps * (q - p0).abs().max().item()
    torch.testing.assert_close(p.detach(), q, rtol=4 * eps, atol=atol)
    # The check can fail: an lr rounded to float32 is far outside it.
    lr32 = torch.tensor(lr, dtype=torch.float32).item()
    assert (torch_step(lr32) - q).abs().max().item() > 1000 * atol


@cuda
@pytest.mark.parametrize("bucket_bytes", [0, 4096, 2**25])
def test_gradient_release_on_cuda_gives_the_bits_of_step_after_backward(bucket_bytes):
    # the updates run inside backward, on autograd's device thread and the
    # stream current there (NOTE: [gradient release]); freed grads are
    # recorded on it
    runs = []
    for release in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(),
                                    torch.nn.Linear(64, 8)).cuda()
        opt = FusedRMSprop(model.parameters(), momentum=0.9, centered=True, state_bits=8,
                           min_8bit_size=256)
        if release:
            opt.release_gradients(bucket_bytes=bucket_bytes)
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            x = torch.randn(16, 32, generator=gen).cuda()
            opt.zero_grad()
            model(x).square().mean().backward()
            if release:
                assert all(p.grad is None for p in model.parameters())
            opt.step()
        torch.cuda.synchronize()
        runs.append([p.detach().cpu() for p in model.parameters()])
    for p, q in zip(*runs):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
