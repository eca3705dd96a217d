"""The CPU kernel gives the same bits on every x86-64 CPU.

The element loop is compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and
baseline SSE2, and each call runs the best copy the CPU supports (NOTE:
[run-time ISA choice] in csrc/cpu/isa.h). Here every copy this machine can
run is forced in turn on the same inputs, and the results must be identical
to the bit, NaN payloads included (but for the sign of a NaN where two NaNs
meet in one operation: see the 8-bit state test). (On a CPU without AVX-512
the v4 copy cannot run, so it is compared wherever CI runs on one.)
"""

import itertools

import pytest
import torch

from fused_rmsprop._ops import rmsprop_

ISAS = ["x86-64-v4", "x86-64-v3", "baseline"]
_isa = torch.ops.fused_rmsprop._cpu_isa


def _runnable():
    best = _isa("auto")
    return ISAS[ISAS.index(best):] if best in ISAS else [best]


@pytest.fixture(autouse=True)
def _back_to_auto():
    yield
    _isa("auto")


# Sizes around every vector width (2 to 16 lanes), block (4 cache lines) and
# prefetch distance, and the float16 path's 512-element blocks.
SIZES = [0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 127, 129, 255, 257, 511, 513, 1025, 4099]


def _inputs(dtype, state_dtype, momentum, centered, seed):
    gen = torch.Generator().manual_seed(seed)

    def wide(n, lo, hi):
        # magnitudes spread over many binades, both signs, exact zeros
        mag = torch.pow(2.0, torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=gen))
        sign = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
        keep = torch.rand(n, generator=gen) > 0.05
        return mag * sign * keep

    lo, hi = (-30.0, 10.0) if dtype in (torch.float16, torch.bfloat16) else (-60.0, 30.0)
    params, grads, sqs, bufs, avgs = [], [], [], [], []
    for n in SIZES:
        g = wide(n, lo, hi)
        if n > 20:  # non-finite gradients pass through unchanged in every copy
            g[3], g[11], g[19] = float("nan"), float("inf"), -float("inf")
        params.append(wide(n, lo, hi).to(dtype))
        grads.append(g.to(dtype))
        sqs.append(wide(n, lo, hi).abs().to(state_dtype))
        if momentum:
            bufs.append(wide(n, lo, hi).to(state_dtype))
        if centered:
            avgs.append((wide(n, lo, hi) * 1e-3).to(state_dtype))
    return [params, grads, sqs, bufs, avgs, []]


def _bits(t):
    ints = {8: torch.int64, 4: torch.int32, 2: torch.int16}
    return t.view(ints[t.element_size()]) if t.dtype.is_floating_point else t


def _every_copy_gives_the_same_bits(lists, hyper, steps, scales=None):
    """Runs `steps` steps of rmsprop_ on copies of `lists` (and of the 8-bit
    state's `scales` keyword lists) with every ISA copy this CPU can run, and
    asserts they give the same bits; returns the last copy's results (lists,
    then the scales lists)."""
    isas = _runnable()
    if len(isas) < 2:
        pytest.skip(f"this CPU runs only the {isas[0]} copy of the loop")
    scales = scales or {}
    results = {}
    for isa in isas:
        assert _isa(isa) == isa
        run = [[t.clone() for t in lst] for lst in lists]
        run_scales = {k: [t.clone() for t in v] for k, v in scales.items()}
        for _ in range(steps):  # state carried between steps, as in training
            rmsprop_(*run, **hyper, **run_scales)
        results[isa] = [*run, *run_scales.values()]
    first, want = isas[-1], results[isas[-1]]
    for isa in isas[:-1]:
        for which, (got_list, want_list) in enumerate(zip(results[isa], want)):
            for i, (got, ref) in enumerate(zip(got_list, want_list)):
                assert torch.equal(_bits(got), _bits(ref)), (
                    f"{isa} and {first} differ: list {which}, tensor {i} ({got.numel()} elements)")
    return want


DTYPES = [(torch.float64, torch.float64), (torch.float32, torch.float32),
          (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
          (torch.float16, torch.float16), (torch.float16, torch.float32)]


def _hyper(momentum, options):
    """The op's hyperparameters: defaults, then the case's `options`."""
    return {**dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, maximize=False,
                   momentum=0.9 if momentum else 0.0), **options}


OPTIONS = [
    dict(),
    dict(weight_decay=0.1, maximize=True),
    dict(eps_in_sqrt=True, lr_in_momentum=True),
    dict(decoupled_weight_decay=True, weight_decay=0.01),
]


@pytest.mark.parametrize("dtype,state_dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("momentum,centered", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "wd_max", "tf", "decoupled"])
def test_every_isa_copy_gives_the_same_bits(dtype, state_dtype, momentum, centered, options):
    original = _inputs(dtype, state_dtype, momentum, centered, seed=len(str(options)))
    want = _every_copy_gives_the_same_bits(original, _hyper(momentum, options), steps=3)
    # the kernel did run: parameters moved
    assert not torch.equal(want[0][-1], original[0][-1])


def test_the_switch_reports_forces_and_refuses():
    best = _isa("")
    assert best in ISAS
    assert _isa("auto") == best
    assert _isa("baseline") == "baseline"
    assert _isa("") == "baseline"
    with pytest.raises(RuntimeError, match="unknown ISA 'avx9'"):
        _isa("avx9")
    for isa in ISAS[:ISAS.index(best)]:
        with pytest.raises(RuntimeError, match=f"cannot run '{isa}'"):
            _isa(isa)
    assert _isa("auto") == best


def _quantized_inputs(dtype, momentum, centered, seed, nonfinite):
    """8-bit state (NOTE: [8-bit state codes]) over whole and partial blocks,
    with the values that reach the codes' edges: all-zero blocks (scale 0),
    magnitudes far below a block's largest (code 0), both signs, and with
    `nonfinite` inf and NaN gradients (inf and NaN states and scales)."""
    from fused_rmsprop._quantized import BLOCK, quantize_state

    gen = torch.Generator().manual_seed(seed)

    def wide(n, lo=-40.0, hi=20.0):
        mag = torch.pow(2.0, torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=gen))
        sign = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
        return mag * sign * (torch.rand(n, generator=gen) > 0.05)

    sizes = [1, 17, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 33, 16 * BLOCK]
    params, grads, codes, scales = [], [], {k: [] for k in _STATES}, {k: [] for k in _STATES}
    for n in sizes:
        g = wide(n)
        if n >= 5 * BLOCK:
            g[4 * BLOCK:5 * BLOCK] = 0.0  # a block whose new state is 0 where the old one was
            if nonfinite:
                g[BLOCK + 3], g[2 * BLOCK + 5], g[3 * BLOCK + 7] = (float("nan"), float("inf"),
                                                                   -float("inf"))
        params.append(wide(n).to(dtype))
        grads.append(g.to(dtype))
        for key, on in (("square_avg", True), ("momentum_buffer", momentum),
                        ("grad_avg", centered)):
            if on:
                x = wide(n).abs() if key == "square_avg" else wide(n)
                if n >= 5 * BLOCK:
                    x[4 * BLOCK:5 * BLOCK] = 0.0
                c, s = quantize_state(x.float(), key)
                codes[key].append(c)
                scales[key].append(s)
    lists = [params, grads, codes["square_avg"], codes["momentum_buffer"], codes["grad_avg"],
             [torch.zeros(()) for _ in sizes]]
    kw = {f"{key}_scales": scales[key] for key in _STATES if scales[key]}
    return lists, kw


_STATES = ("square_avg", "momentum_buffer", "grad_avg")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("momentum,centered", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "wd_max", "tf", "decoupled"])
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nonfinite"])
def test_every_isa_copy_gives_the_same_bits_with_8bit_state(dtype, momentum, centered, options,
                                                            nonfinite):
    # The AVX-512 and AVX2 copies encode and decode whole blocks in vector registers
    # (csrc/cpu/code_vectors.h), the baseline copy element by element.
    # Non-finite gradients run one step: in later steps a block with an
    # infinite scale decodes its code 0 as 0 x inf = -NaN, which meets the
    # +NaN of another state in one operation, and x86 keeps the NaN of the
    # operand the compiler put first, which differs between copies (the sign
    # of a NaN in params and signed codes; every copy stores a NaN there).
    lists, scales = _quantized_inputs(dtype, momentum, centered, len(str(options)), nonfinite)
    want = _every_copy_gives_the_same_bits(lists, _hyper(momentum, options),
                                           1 if nonfinite else 3, scales)
    # the steps did run: codes of the last tensor changed; non-finite scales where expected
    assert not torch.equal(want[2][-1], lists[2][-1])
    assert all(torch.isfinite(s).all() for s in want[6]) != nonfinite
