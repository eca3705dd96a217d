"""Step time of FusedRMSprop against torch.optim.RMSprop, with the memory roofline.

    make bench                                    # the default below, CPU
    .venv/bin/python bench/step_time.py --quick   # smaller sizes, fewer repeats
    .venv/bin/python bench/step_time.py --sizes 1e6 1e7 --dtypes float32

An optimizer step is memory bound: it must read param, grad and square_avg
and write param and square_avg (plus momentum_buffer and grad_avg when on).
`GB/s` counts those minimum bytes; `roof %` compares them with the bandwidth
of an in-place addcmul_ measured in the same run.
"""

import argparse
import statistics
import sys
import time

import torch

import fused_rmsprop
from fused_rmsprop import FusedRMSprop

CONFIGS = {
    "plain": dict(),
    "mom+ctr+wd": dict(momentum=0.9, centered=True, weight_decay=0.01),
}


def bytes_per_element(dtype, config):
    """Minimum traffic: read p, g, v (+b, +gbar); write p, v (+b, +gbar)."""
    size = torch.empty((), dtype=dtype).element_size()
    state = 1 + ("momentum" in config) + ("centered" in config)
    return size * (1 + 1 + state + 1 + state)


def median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bandwidth_probe(numel, repeats):
    """GB/s of x.addcmul_(y, z): 3 reads + 1 write per element."""
    x, y, z = (torch.rand(numel) for _ in range(3))
    t = median_time(lambda: x.addcmul_(y, z, value=1e-9), repeats)
    return 16 * numel / t / 1e9


def step_time(opt_class, numel, dtype, config, repeats, **extra):
    param = torch.randn(numel, dtype=dtype, requires_grad=True)
    param.grad = torch.randn(numel, dtype=dtype)
    opt = opt_class([param], **CONFIGS[config], **extra)
    t = median_time(opt.step, repeats)
    del opt, param
    return t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+",
                        default=[1e4, 1e5, 1e6, 1e7, 6.4e7])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--quick", action="store_true", help="sizes up to 1e6, 5 repeats")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes]
    if args.quick:
        sizes, args.repeats = [s for s in sizes if s <= 1_000_000] or [1_000_000], 5

    print(f"fused_rmsprop {fused_rmsprop.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU")
    bw = bandwidth_probe(max(sizes), args.repeats)
    print(f"in-place addcmul_ bandwidth probe on {max(sizes):.0e} fp32: {bw:.1f} GB/s\n")
    header = (f"{'numel':>10} {'dtype':>9} {'config':>11} {'fused ms':>9} {'torch ms':>9} "
              f"{'foreach ms':>10} {'x torch':>8} {'x foreach':>9} {'GB/s':>6} {'roof %':>6}")
    print(header)
    print("-" * len(header))
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for config in args.configs:
            for numel in sizes:
                reps = max(3, args.repeats if numel <= 10_000_000 else args.repeats // 3)
                fused = step_time(FusedRMSprop, numel, dtype, config, reps)
                loop = step_time(torch.optim.RMSprop, numel, dtype, config, reps, foreach=False)
                foreach = step_time(torch.optim.RMSprop, numel, dtype, config, reps, foreach=True)
                gbps = bytes_per_element(dtype, config) * numel / fused / 1e9
                print(f"{numel:>10.0e} {dtype_name:>9} {config:>11} {fused * 1e3:>9.3f} "
                      f"{loop * 1e3:>9.3f} {foreach * 1e3:>10.3f} {loop / fused:>8.1f} "
                      f"{foreach / fused:>9.1f} {gbps:>6.1f} {100 * gbps / bw:>6.0f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
