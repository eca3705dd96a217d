"""Self-test: `python -m fused_rmsprop.check` runs the reference checks on
every available device (the CPU, and each CUDA GPU) and exits non-zero on any
mismatch. Run it after installing, on the machine that will train.

Per dtype and device: FusedRMSprop against torch.optim.RMSprop, against the
float64 reference, and step by step against it, for 16 option sets (48
checks); 8-bit state step by step for 2 option sets; and for bfloat16 the
bits of stochastic rounding for 8 option sets. A check that raises anything
(a mismatch, or e.g. a CUDA fault or a missing kernel) is listed under its
row with its exception type, and the other checks still run: one run shows
everything that fails."""

import itertools
import sys

import torch

from . import FusedRMSprop
from .testing import assert_matches_reference, assert_matches_torch, assert_steps_match_reference
from .testing.quantized import assert_quantized_steps_match_reference
from .testing.rounding import assert_stochastic_rounding_matches_reference

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
OPTIONS = [dict(momentum=m, centered=c, weight_decay=wd, maximize=mx)
           for m, c, wd, mx in itertools.product([0.0, 0.9], [False, True], [0.0, 0.1], [False, True])]
# bfloat16 also checks stochastic rounding's bits (fused_rmsprop.testing.rounding)
ROUNDING = [dict(momentum=m, centered=c, state_dtype=s)
            for m, c, s in itertools.product([0.0, 0.9], [False, True],
                                             [torch.bfloat16, torch.float32])]

# 8-bit state (state_bits=8): each step against the float64 reference within the codes' bounds
QUANTIZED = [dict(), dict(momentum=0.9, centered=True, weight_decay=0.1, maximize=True)]


def devices():
    yield "cpu"
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            yield f"cuda:{i}"


def check_device(device, dtype):
    failures = []
    for hyper in OPTIONS:
        checks = [
            ("torch", lambda: assert_matches_torch(FusedRMSprop, dtype=dtype, device=device, **hyper)),
            ("reference", lambda: assert_matches_reference(
                FusedRMSprop, dtype=dtype, device=device, eps_in_sqrt=True, **hyper)),
            ("per-step", lambda: assert_steps_match_reference(
                FusedRMSprop, dtype=dtype, device=device, **hyper)),
        ]
        for name, check in checks:
            try:
                check()
            except Exception as error:  # noqa: BLE001 - reported, see the docstring
                failures.append(f"{name} {hyper}: {describe(error)}")
    for options in QUANTIZED:
        try:
            assert_quantized_steps_match_reference(dtype=dtype, device=device, **options)
        except Exception as error:  # noqa: BLE001 - reported, see the docstring
            failures.append(f"8-bit state {options}: {describe(error)}")
    for options in ROUNDING if dtype == torch.bfloat16 else []:
        try:
            assert_stochastic_rounding_matches_reference(device, **options)
        except Exception as error:  # noqa: BLE001 - reported, see the docstring
            failures.append(f"stochastic rounding {options}: {describe(error)}")
    return failures


def check_count(dtype):
    return 3 * len(OPTIONS) + len(QUANTIZED) + (len(ROUNDING) if dtype == torch.bfloat16 else 0)


def describe(error):
    """One line: the exception's type (unless a plain mismatch) and first line."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else "(no message)"
    return first if type(error) is AssertionError else f"{type(error).__name__}: {first}"


def main():
    isa = torch.ops.fused_rmsprop._cpu_isa()  # the copy of the CPU loop this CPU runs
    print(f"fused_rmsprop check, torch {torch.__version__}, CPU loop {isa}")
    print(f"{'device':<10} {'dtype':<10} {'checks':>6}  result")
    failed = False
    for device in devices():
        for dtype in DTYPES:
            failures = check_device(device, dtype)
            status = "ok" if not failures else f"FAILED ({len(failures)})"
            print(f"{device:<10} {str(dtype).replace('torch.', ''):<10} {check_count(dtype):>6}  {status}",
                  flush=True)
            for f in failures:
                print(f"    {f}")
            failed |= bool(failures)
    if not torch.cuda.is_available():
        print("no CUDA device visible: only the CPU kernel was checked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
