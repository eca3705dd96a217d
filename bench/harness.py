"""Timing: median step times, the bandwidth probe, and the baselines."""

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


def bandwidth_probe(device, numel=64 * 2**20, repeats=9):
    """GB/s of an in-place x.addcmul_(y, z) (3 reads + 1 write per element):
    the memory roofline an elementwise optimizer step can hope for."""
    x, y, z = (torch.rand(numel, device=device) for _ in range(3))
    t = median_time(lambda: x.addcmul_(y, z, value=1e-9), repeats, device)
    del x, y, z
    return 16 * numel / t / 1e9


def make_params(shapes, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=gen).to(device=device, dtype=dtype).requires_grad_()
        p.grad = torch.randn(s, generator=gen).to(device=device, dtype=dtype)
        params.append(p)
    return params


def time_optimizer(kind, params, options, repeats, device):
    """Median step time (s) of one optimizer kind, and for 'compile' also the
    compile time (s) of its first call. The optimizer's state is freed after."""
    compile_s = None
    if kind == "fused":
        opt = FusedRMSprop(params, **options)
        step = opt.step
    elif kind in ("for-loop", "foreach"):
        opt = torch.optim.RMSprop(params, foreach=(kind == "foreach"), **options)
        step = opt.step
    elif kind == "compile":
        opt = torch.optim.RMSprop(params, foreach=False, **options)
        step = torch.compile(opt.step)
        start = time.perf_counter()
        step()
        _sync(device)
        compile_s = time.perf_counter() - start
    else:
        raise ValueError(kind)
    t = median_time(step, repeats, device)
    del opt, step
    gc.collect()
    if kind == "compile":
        torch._dynamo.reset()
    return t, compile_s
