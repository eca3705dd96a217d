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
    return 16 * numel / t / 1e9


def make_params(shapes, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=gen).to(device=device, dtype=dtype).requires_grad_()
        p.grad = torch.randn(s, generator=gen).to(device=device, dtype=dtype)
        params.append(p)
    return params


def _build(kind, params, options, device):
    """(step function, compile seconds or None) of one optimizer kind."""
    if kind == "fused":
        return FusedRMSprop(params, **options).step, None
    if kind in ("for-loop", "foreach"):
        return torch.optim.RMSprop(params, foreach=(kind == "foreach"), **options).step, None
    if kind == "compile":
        step = torch.compile(torch.optim.RMSprop(params, foreach=False, **options).step)
        start = time.perf_counter()
        step()
        _sync(device)
        return step, time.perf_counter() - start
    raise ValueError(kind)


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
        x, y, z = (torch.rand(probe_numel, device=device) for _ in range(3))
        steps["probe"] = lambda: x.addcmul_(y, z, value=1e-9)
    compile_s = None
    for kind in kinds:
        steps[kind], built_s = _build(kind, params, options, device)
        compile_s = built_s if built_s is not None else compile_s
    for fn in steps.values():
        fn()
        fn()
    _sync(device)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    del steps
    gc.collect()
    if "compile" in kinds:
        torch._dynamo.reset()
    return times, compile_s


def paired(numerators, denominators):
    """Median over repeats of numerator_i / denominator_i.

    On a machine whose bandwidth drifts between repeats (this 2-core VM moved
    by 30 % within a minute), the ratio of two times taken in the same repeat
    is far steadier than the ratio of their medians."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))
