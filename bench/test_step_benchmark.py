"""pytest-benchmark versions of the benchmark cases (not part of make test):

    .venv/bin/python -m pytest bench/test_step_benchmark.py --benchmark-columns=median,ops

Each case times one optimizer step; compare FusedRMSprop with torch's
for-loop and foreach implementations in the same session.
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
import harness  # noqa: E402

from fused_rmsprop import FusedRMSprop  # noqa: E402

CASES = {
    "1e6": [(1_000_000,)],
    "1e7": [(10_000_000,)],
    "200x50K": cases.many_small_shapes(),
    "resnet50": cases.resnet50_shapes(),
}
OPTIMIZERS = {
    "fused": lambda p, kw: FusedRMSprop(p, **kw),
    "torch-for-loop": lambda p, kw: torch.optim.RMSprop(p, foreach=False, **kw),
    "torch-foreach": lambda p, kw: torch.optim.RMSprop(p, foreach=True, **kw),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("config", list(cases.CONFIGS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(CASES))
def test_step(benchmark, case, dtype, config, optimizer):
    params = harness.make_params(CASES[case], getattr(torch, dtype), "cpu")
    opt = OPTIMIZERS[optimizer](params, cases.CONFIGS[config])
    opt.step()
    benchmark.extra_info["numel"] = cases.numel(CASES[case])
    benchmark.extra_info["bytes"] = benchmark.extra_info["numel"] * cases.bytes_per_element(
        getattr(torch, dtype), config)
    benchmark(opt.step)
