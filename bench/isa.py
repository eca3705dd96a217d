"""The CPU loop's ISA copies against each other: x86-64-v4 (AVX-512), v3 (AVX2), baseline.

    .venv/bin/python bench/isa.py                 # 64M elements, fp32/bf16/fp16, plain and mom+ctr+wd
    .venv/bin/python bench/isa.py --size 1e6 --repeats 5
    .venv/bin/python bench/isa.py --in-cache      # compute cost per element, one thread

Each repeat runs one step with every copy this CPU can run, in turn, on the
same tensors (torch.ops.fused_rmsprop._cpu_isa forces the copy), so each
ratio compares the copies under the same machine conditions (harness.paired).

--in-cache measures the compute that memory has to hide: nanoseconds per
element on one thread, as the slope of the op call's time between 256 and 32K
elements (every case's data in a 2 MB L2; the per-call overhead cancels), for
the full-precision step, 8-bit state and stochastic rounding (bfloat16
params and state, against rounding to nearest), with each copy. A DRAM-bound
step hides compute that takes less time than its bytes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
import harness  # noqa: E402

from fused_rmsprop import FusedRMSprop  # noqa: E402

ISAS = ["x86-64-v4", "x86-64-v3", "baseline"]
_isa = torch.ops.fused_rmsprop._cpu_isa


def runnable():
    best = _isa("auto")
    return ISAS[ISAS.index(best):]


def compare(size, dtype, config, repeats):
    """{isa: [seconds per repeat]} for one case, copies interleaved."""
    params = harness.make_params([(int(size),)], dtype, "cpu")
    step = FusedRMSprop(params, **cases.CONFIGS[config]).step
    isas = runnable()
    times = {isa: [] for isa in isas}
    try:
        for isa in isas:  # warm up every copy
            _isa(isa)
            step()
        for _ in range(repeats):
            for isa in isas:
                _isa(isa)
                start = time.perf_counter()
                step()
                times[isa].append(time.perf_counter() - start)
    finally:
        _isa("auto")
    return times


# The in-cache cases: (name, param dtype, FusedRMSprop options beyond the config's).
IN_CACHE_FORMS = [
    ("float32", torch.float32, {}),
    ("8-bit", torch.float32, {"state_bits": 8, "min_8bit_size": 0}),  # both sizes 8-bit
    ("bf16 nearest", torch.bfloat16, {}),
    ("bf16 SR", torch.bfloat16, {"stochastic_rounding": True, "rounding_seed": 0}),
]
IN_CACHE_SIZES = (2**8, 2**15)


def op_calls(n, dtype, options):
    """FusedRMSprop's op calls for one tensor of n elements, with state: two,
    one with each of two gradients, to run alternately (a constant gradient
    makes the centered variance decay towards 0 over the thousands of steps
    timed here; real gradients vary)."""
    from fused_rmsprop._prepare import prepare_calls

    params = harness.make_params([(n,)], dtype, "cpu")
    opt = FusedRMSprop(params, **options)
    opt.step()
    first = prepare_calls(opt).calls
    params[0].grad = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(dtype)
    return first + prepare_calls(opt).calls


def _alternately(calls):
    return lambda: [call.run() for call in calls]


def in_cache(repeats=15, steps=50, isas=None, configs=None):
    """{(form, config, isa): ns per element} on one thread (see the docstring):
    the op calls alone (not step()'s Python, which cancels in the slope
    anyway but adds its noise), the fastest of `repeats` runs of `steps`
    calls per size and copy, copies and sizes interleaved."""
    isas = isas or runnable()
    configs = configs or list(cases.CONFIGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = {}
    try:
        for config in configs:
            for form, dtype, extra in IN_CACHE_FORMS:
                options = {**cases.CONFIGS[config], **extra}
                runs = {n: _alternately(op_calls(n, dtype, options)) for n in IN_CACHE_SIZES}
                best = {(isa, n): float("inf") for isa in isas for n in IN_CACHE_SIZES}
                for _ in range(repeats):
                    for isa in isas:
                        _isa(isa)
                        for n, run in runs.items():
                            run()  # warm: the tensors into cache, this copy's code
                            start = time.perf_counter()
                            for _ in range(steps):
                                run()
                            # two op calls per run
                            best[isa, n] = min(best[isa, n],
                                               (time.perf_counter() - start) / (2 * steps))
                small, large = IN_CACHE_SIZES
                for isa in isas:
                    slope = (best[isa, large] - best[isa, small]) / (large - small)
                    result[form, config, isa] = slope * 1e9
    finally:
        _isa("auto")
        torch.set_num_threads(threads)
    return result


def print_in_cache(result, isas, configs):
    print("ns per element, one thread, slope between "
          f"{IN_CACHE_SIZES[0]} and {IN_CACHE_SIZES[1]} elements (in cache)")
    forms = [f for f, _, _ in IN_CACHE_FORMS]
    print(f"| copy | options | {' | '.join(forms)} | 8-bit / float32 | SR / nearest |")
    print("|---" * (4 + len(forms)) + "|")
    for isa in isas:
        for config in configs:
            ns = [result[f, config, isa] for f in forms]
            quant = result["8-bit", config, isa] / result["float32", config, isa]
            sr = result["bf16 SR", config, isa] / result["bf16 nearest", config, isa]
            print(f"| {isa} | {config} | {' | '.join(f'{x:.3f}' for x in ns)} | "
                  f"{quant:.2f}x | {sr:.2f}x |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=cases.HEADLINE_SIZE)
    p.add_argument("--repeats", type=int, default=None,
                   help="default 9 (in cache: 15)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"])
    p.add_argument("--configs", nargs="+", default=list(cases.CONFIGS), choices=list(cases.CONFIGS))
    p.add_argument("--in-cache", action="store_true",
                   help="ns per element in cache, one thread, per copy (see above)")
    args = p.parse_args(argv)
    isas = runnable()
    if args.in_cache:
        print(f"torch {torch.__version__}, best ISA {isas[0]}")
        result = in_cache(args.repeats or 15, configs=args.configs)
        print_in_cache(result, isas, args.configs)
        return result
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best ISA {isas[0]}, "
          f"{cases.size_name(args.size)} elements")
    print(f"| dtype | options | {' | '.join(f'{i} ms' for i in isas)} | "
          f"{' | '.join(f'{i} / {isas[0]}' for i in isas[1:])} |")
    print("|---" * (2 + 2 * len(isas) - 1) + "|")
    rows = []
    for dtype in args.dtypes:
        for config in args.configs:
            times = compare(args.size, getattr(torch, dtype), config, args.repeats or 9)
            ms = [statistics.median(times[i]) * 1e3 for i in isas]
            ratios = [harness.paired(times[i], times[isas[0]]) for i in isas[1:]]
            rows.append((dtype, config, ms, ratios))
            print(f"| {dtype} | {config} | {' | '.join(f'{m:.2f}' for m in ms)} | "
                  f"{' | '.join(f'{r:.2f}x' for r in ratios)} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
