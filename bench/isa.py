"""The CPU loop's ISA copies against each other: x86-64-v4 (AVX-512), v3 (AVX2), baseline.

    .venv/bin/python bench/isa.py                 # 64M elements, fp32/bf16/fp16, plain and mom+ctr+wd
    .venv/bin/python bench/isa.py --size 1e6 --repeats 5

Each repeat runs one step with every copy this CPU can run, in turn, on the
same tensors (torch.ops.fused_rmsprop._cpu_isa forces the copy), so each
ratio compares the copies under the same machine conditions (harness.paired).
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=cases.HEADLINE_SIZE)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"])
    p.add_argument("--configs", nargs="+", default=list(cases.CONFIGS), choices=list(cases.CONFIGS))
    args = p.parse_args(argv)
    isas = runnable()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best ISA {isas[0]}, "
          f"{cases.size_name(args.size)} elements")
    print(f"| dtype | options | {' | '.join(f'{i} ms' for i in isas)} | "
          f"{' | '.join(f'{i} / {isas[0]}' for i in isas[1:])} |")
    print("|---" * (2 + 2 * len(isas) - 1) + "|")
    rows = []
    for dtype in args.dtypes:
        for config in args.configs:
            times = compare(args.size, getattr(torch, dtype), config, args.repeats)
            ms = [statistics.median(times[i]) * 1e3 for i in isas]
            ratios = [harness.paired(times[i], times[isas[0]]) for i in isas[1:]]
            rows.append((dtype, config, ms, ratios))
            print(f"| {dtype} | {config} | {' | '.join(f'{m:.2f}' for m in ms)} | "
                  f"{' | '.join(f'{r:.2f}x' for r in ratios)} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
