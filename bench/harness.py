"""Timing: median step times, the bandwidth probes, and the baselines.

CPU: wall time around each call. CUDA: CUDA events around each call on the
current stream (GPU time, including any idle gaps while the host launches a
step's kernels), with the L2 cache flushed before each timed call (a real
training step does not find its optimizer state in L2), and a synchronise
after it."""

from __future__ import annotations

import gc
import statistics
import time

import torch

from fused_rmsprop import FusedRMSprop


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, repeats, device="cpu", warmup=2):
    """Median wall time of fn() over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def is_cuda(device):
    return torch.device(device).type == "cuda"


# The probes the roofline is measured with, by device type:
# (name, bytes moved per element, numel, fn(numel, device) -> callable).
# CPU: an in-place x.addcmul_(y, z) (3 reads + 1 write per element, as an
# optimizer step). CUDA: a device-to-device copy of 1 GiB (1 read + 1 write),
# the usual measure of a GPU's attainable memory bandwidth.
def _addcmul_probe(numel, device):
    x, y, z = (torch.rand(numel, device=device) for _ in range(3))
    return lambda: x.addcmul_(y, z, value=1e-9)


def _copy_probe(numel, device):
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


PROBES = {"cpu": ("in-place addcmul_", 16, 64 * 2**20, _addcmul_probe),
          "cuda": ("device-to-device copy", 8, 2**28, _copy_probe)}


def probe_for(device):
    return PROBES[torch.device(device).type]


def bandwidth_probe(device, numel=None, repeats=9):
    """GB/s of the device's probe (PROBES): the memory roofline an
    elementwise optimizer step can hope for."""
    _, nbytes, default_numel, make = probe_for(device)
    numel = numel or default_numel
    fn = make(numel, device)
    if is_cuda(device):
        t = statistics.median(_cuda_times(fn, repeats, device))
    else:
        t = median_time(fn, repeats, device)
    return nbytes * numel / t / 1e9


_L2_FLUSH = {}


def _flush_l2(device):
    """Overwrites 256 MiB (more than any GPU's L2 cache) on the device."""
    buf = _L2_FLUSH.get(str(device))
    if buf is None:
        buf = _L2_FLUSH[str(device)] = torch.empty(2**26, device=device)
    buf.zero_()


def _cuda_time(fn, device):
    """Seconds of GPU time of one fn() on the current stream, L2 flushed first."""
    _flush_l2(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def _cuda_times(fn, repeats, device, warmup=2):
    for _ in range(warmup):
        fn()
    return [_cuda_time(fn, device) for _ in range(repeats)]


def free_bytes(device):
    """Free memory for a case on `device` (None: not a concern on the CPU)."""
    if not is_cuda(device):
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return free


def make_params(shapes, dtype, device, seed=0):
    # drawn on the device itself (a 1e9-element case on a GPU would spend
    # seconds drawing on the CPU)
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=gen, device=device).to(dtype).requires_grad_()
        p.grad = torch.randn(s, generator=gen, device=device).to(dtype)
        params.append(p)
    return params


def _build(kind, params, options, device):
    """(step function, compile seconds or None) of one optimizer kind."""
    if kind == "fused":
        return FusedRMSprop(params, **options).step, None
    if kind == "fused8":  # 8-bit state (NOTE: [8-bit state codes])
        return FusedRMSprop(params, state_bits=8, **options).step, None
    if kind == "fused+sr":  # stochastic rounding (NOTE: [stochastic rounding])
        return FusedRMSprop(params, stochastic_rounding=True, rounding_seed=0, **options).step, None
    if kind in ("for-loop", "foreach"):
        return torch.optim.RMSprop(params, foreach=(kind == "foreach"), **options).step, None
    if kind == "compile":
        step = torch.compile(torch.optim.RMSprop(params, foreach=False, **options).step)
        start = time.perf_counter()
        step()
        _sync(device)
        return step, time.perf_counter() - start
    if kind in CLIP_KINDS:
        return _build_clipped(kind, params, options, device)
    if kind == "norm":  # the fused norm pass alone
        from fused_rmsprop._ops import grad_norm

        grads = [p.grad for p in params]
        return lambda: grad_norm(grads, 2.0), None
    if kind == "read-probe":  # read-only bandwidth: a sum over as many bytes as the grads
        grads = [p.grad for p in params]
        return lambda: [g.sum() for g in grads], None
    raise ValueError(kind)


# What a clipped training step costs (NOTE: [fused clipping]): FusedRMSprop
# with max_grad_norm, against torch.nn.utils.clip_grad_norm_(foreach=True)
# followed by the torch.compile'd torch step; "+amp": under a GradScaler,
# where torch needs scaler.unscale_ before clipping and ours does not.
CLIP_KINDS = ("fused+clip", "compile+clip", "fused+clip+amp", "compile+clip+amp")
MAX_NORM = 1.0


def _build_clipped(kind, params, options, device):
    amp = kind.endswith("+amp")
    scaler = None
    if amp:
        scaler = torch.amp.GradScaler(torch.device(device).type, init_scale=1.0,
                                      growth_interval=10**9)
        scaler.scale(torch.ones((), device=device))  # creates its scale tensor
    compile_s = None
    if kind.startswith("fused"):
        opt = FusedRMSprop(params, max_grad_norm=MAX_NORM, **options)
        step = opt.step
    else:
        opt = torch.optim.RMSprop(params, foreach=False, **options)
        step = torch.compile(opt.step)
        start = time.perf_counter()
        step()
        _sync(device)
        compile_s = time.perf_counter() - start

    def clip():
        torch.nn.utils.clip_grad_norm_(params, MAX_NORM, foreach=True)

    if not amp:
        if kind.startswith("fused"):
            return step, compile_s
        return lambda: (clip(), step()), compile_s

    def scaled_step():
        if kind.startswith("compile"):
            scaler.unscale_(opt)
            clip()
        scaler.step(opt)
        scaler.update()

    if kind.startswith("compile"):
        opt.step = step  # GradScaler calls opt.step: the compiled one
    return scaled_step, compile_s


def backward_and_step(params, release):
    """(step function, the seconds its updates took in each call): a backward
    that writes every parameter's gradient (d/dp of sum(p * 1), a tensor of
    ones written as a real backward writes it), then step(); with `release`,
    FusedRMSprop's gradient release updates inside that backward. The updates
    (step()'s one, or the buckets') are timed on their own too."""
    opt = FusedRMSprop(params)
    if release:
        opt.release_gradients()
    update, update_s, spent = opt._update, [], [0.0]

    def timed_update(select=None):
        start = time.perf_counter()
        update(select)
        spent[0] += time.perf_counter() - start

    opt._update = timed_update

    def step():
        spent[0] = 0.0
        for p in params:
            p.grad = None
        torch.stack([(p * 1.0).sum() for p in params]).sum().backward()
        opt.step()
        update_s.append(spent[0])

    return step, update_s


def interleaved(steps, repeats, device, warmup=2):
    """{name: [seconds per repeat]} of each step function, after `warmup`
    calls each, run in turn in each repeat (on a GPU timed with CUDA events
    after an L2 flush)."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            if is_cuda(device):
                times[name].append(_cuda_time(fn, device))
                continue
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def time_case(params, options, kinds, repeats, device, probe_numel):
    """Step times (s) of each optimizer kind, and of the bandwidth probe,
    measured interleaved: each repeat runs one step of every kind in turn, so
    a slow phase of a noisy machine hits all of them alike. Returns
    ({kind: [seconds per repeat], "probe": [...]}, compile seconds or None);
    the i-th entries of all lists come from the same repeat (see paired).

    With probe_numel = 0 there is no probe: small cases run from cache, and
    a probe between their steps would evict the interpreter's own working set
    (a 1e3-element step then takes 0.6 ms instead of 0.15 ms here)."""
    steps = {}
    if probe_numel:
        steps["probe"] = probe_for(device)[3](probe_numel, device)
    compile_s = None
    for kind in kinds:
        steps[kind], built_s = _build(kind, params, options, device)
        compile_s = built_s if built_s is not None else compile_s
    times = interleaved(steps, repeats, device)
    del steps
    gc.collect()
    if "compile" in kinds:
        torch._dynamo.reset()
    if is_cuda(device):
        torch.cuda.empty_cache()
    return times, compile_s


def paired(numerators, denominators):
    """Median over repeats of numerator_i / denominator_i.

    On a machine whose bandwidth drifts between repeats (this 2-core VM moved
    by 30 % within a minute), the ratio of two times taken in the same repeat
    is far steadier than the ratio of their medians."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))
