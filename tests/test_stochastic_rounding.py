"""Stochastic rounding of bfloat16 stores: the kernels' bits against the
documented generator, CPU kernel against the emulated CUDA kernel, unbiasedness,
independence of the thread count, and argument checks.

NOTE: [rounding generator] in csrc/stochastic_rounding.h defines the bits;
fused_rmsprop/testing/rounding.py writes the same definition in Python.
"""

import itertools
import math

import pytest
import torch

from fused_rmsprop._ops import rmsprop_
from fused_rmsprop.testing.rounding import random_bits, round_stochastically

emulation = pytest.importorskip("fused_rmsprop._C_emulation")
emu = torch.ops.fused_rmsprop_emulation

SEED = 1234567
SLOTS = ("param", None, "square_avg", "momentum_buffer", "grad_avg")  # by list
FEATURES = pytest.mark.parametrize("momentum,centered", list(itertools.product([0, 1], [0, 1])))
STATE_DTYPES = pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float32])


def make_lists(sizes, momentum=True, centered=True, state_dtype=torch.bfloat16, steps=None,
               offset=0, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def tensor(n, dtype, square=False):
        t = torch.randn(n + offset, generator=gen, dtype=torch.float64)
        return (t.abs() + 0.1 if square else t).to(dtype)[offset:]

    steps = steps or [3 * i + 1 for i in range(len(sizes))]
    return [[tensor(n, torch.bfloat16) for n in sizes],
            [tensor(n, torch.bfloat16) for n in sizes],
            [tensor(n, state_dtype, square=True) for n in sizes],
            [tensor(n, state_dtype) for n in sizes] if momentum else [],
            [0.1 * tensor(n, state_dtype) for n in sizes] if centered else [],
            [torch.tensor(float(s)) for s in steps]]


def clone(lists):
    return [[t.clone() for t in lst] for lst in lists]


def hyper(momentum=True, **kw):
    return dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1,
                momentum=0.9 if momentum else 0.0, maximize=False, **kw)


def bits(t):
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t.view(-1).view(torch.uint8)


def assert_same_bits(a_lists, b_lists):
    for a_list, b_list in zip(a_lists, b_lists):
        for a, b in zip(a_list, b_list):
            assert torch.equal(bits(a), bits(b))


@FEATURES
@STATE_DTYPES
def test_cpu_kernel_stores_the_documented_rounding(momentum, centered, state_dtype):
    # The same step in float32 gives the values before rounding (the kernel
    # computes bfloat16 params in float32); the bfloat16 step must store
    # exactly those values rounded with the generator's bits.
    sizes, ids = [1, 37, 4099, 70000], [5, 0, 11, 2]
    lists = make_lists(sizes, momentum, centered, state_dtype, offset=1)
    steps = [int(s) for s in lists[5]]
    rounded, exact = clone(lists), [[t.float() for t in lst] for lst in lists[:5]]
    exact.append([s.clone() for s in lists[5]])
    rmsprop_(*rounded, **hyper(momentum), rounding_ids=ids, rounding_seed=SEED)
    rmsprop_(*exact, **hyper(momentum))
    for k, slot in enumerate(SLOTS):
        if slot is None or not rounded[k]:
            continue
        for t, (out, want) in enumerate(zip(rounded[k], exact[k])):
            if out.dtype == torch.float32:
                assert torch.equal(out, want)  # float32 state is stored exactly
                continue
            r = random_bits(want.numel(), seed=SEED, id=ids[t], step=steps[t], slot=slot)
            assert torch.equal(bits(out), bits(round_stochastically(want, r))), (slot, t)
    assert [int(s) for s in rounded[5]] == [s + 1 for s in steps]


@FEATURES
@STATE_DTYPES
@pytest.mark.parametrize("arg_bytes", [4096, 32764], ids=["4KB", "32KB"])
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "offset"])
def test_emulated_cuda_kernel_equals_cpu_kernel(momentum, centered, state_dtype, arg_bytes,
                                                offset):
    # Chunks of 512 elements and 40 tensors: launches split inside tensors
    # and carry a tensor's stream into the next launch (30 or fewer tensors
    # per launch at these depths with 4 KB of arguments).
    sizes = [1, 3, 511, 512, 513, 1500] + [64 * i + 5 for i in range(34)]
    lists = make_lists(sizes, momentum, centered, state_dtype, offset=offset)
    ids = [7 * i + 3 for i in range(len(sizes))]
    emulated, cpu = clone(lists), clone(lists)
    h = hyper(momentum, rounding_ids=ids, rounding_seed=-SEED)
    emu.rmsprop_(*emulated, **h, chunk_size=512, kernel_arg_bytes=arg_bytes)
    if arg_bytes == 4096:
        assert emu.last_launches() > 1
    rmsprop_(*cpu, **h)
    assert_same_bits(emulated, cpu)


def test_emulated_kernel_reads_float64_step_counters():
    lists = make_lists([1000, 77])
    lists[5] = [torch.tensor(41.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)]
    emulated, cpu = clone(lists), clone(lists)
    h = hyper(rounding_ids=[1, 2], rounding_seed=3)
    emu.rmsprop_(*emulated, **h, chunk_size=512)
    rmsprop_(*cpu, **h)
    assert_same_bits(emulated, cpu)


def test_bits_do_not_depend_on_the_thread_count():
    sizes = [300_000, 5] + [1000] * 50
    lists = make_lists(sizes)
    h = hyper(rounding_ids=list(range(len(sizes))), rounding_seed=9)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out = clone(lists)
            rmsprop_(*out, **h)
            results.append(out)
    finally:
        torch.set_num_threads(threads)
    assert_same_bits(results[0], results[1])
    assert_same_bits(results[0], results[2])


def rounding_problem(n, value, lr):
    """bfloat16 params at `value` whose exact update is p - lr * sign(value):
    alpha = 0 and eps = 0 make v = g^2 and g / sqrt(v) = sign(g)."""
    p = torch.full((n,), value, dtype=torch.bfloat16)
    p[1::2] *= -1
    g = p.sign().to(torch.bfloat16)
    return [[p], [g], [torch.zeros(n, dtype=torch.bfloat16)], [], [], [torch.tensor(0.0)]]


def test_a_rounding_is_unbiased_over_elements():
    # 1 - 3 * 2^-12 lies 3/16 of a bfloat16 ulp (2^-8) below 1: round to
    # nearest gives 1 (the update is lost), stochastic rounding gives
    # 1 - 2^-8 with probability 3/16, so its mean is the exact value.
    n, lr = 1 << 18, 3 * 2.0 ** -12
    for kwargs in ({}, {"rounding_ids": [0], "rounding_seed": 11}):
        lists = rounding_problem(n, 1.0, lr)
        rmsprop_(*lists, lr=lr, alpha=0.0, eps=0.0, weight_decay=0.0, momentum=0.0,
                 maximize=False, **kwargs)
        magnitude = lists[0][0].double().abs()
        if not kwargs:
            assert torch.all(magnitude == 1.0)
            continue
        assert set(magnitude.unique().tolist()) == {1.0, 1.0 - 2.0 ** -8}
        # the mean of n Bernoulli(3/16) draws of size 2^-8, within 6 sigma
        sigma = 2.0 ** -8 * math.sqrt(3 / 16 * 13 / 16 / n)
        assert abs(magnitude.mean().item() - (1.0 - lr)) < 6 * sigma
        # each sign rounds the same way in expectation
        for half in (magnitude[0::2], magnitude[1::2]):
            assert abs(half.mean().item() - (1.0 - lr)) < 6 * sigma * math.sqrt(2)


def test_a_rounding_is_unbiased_over_steps_for_every_element():
    # The same element rounded at 2000 successive steps (the step counter is
    # the generator's position): each element rounds down about 3/16 of the
    # time. Binomial(2000, 3/16): mean 375, sd 17.5; 6 sd for 256 elements.
    n, steps, lr = 256, 2000, 3 * 2.0 ** -12
    downs = torch.zeros(n)
    step = torch.tensor(0.0)
    for _ in range(steps):
        lists = rounding_problem(n, 1.0, lr)
        lists[5] = [step]
        rmsprop_(*lists, lr=lr, alpha=0.0, eps=0.0, weight_decay=0.0, momentum=0.0,
                 maximize=False, rounding_ids=[3], rounding_seed=5)
        downs += (lists[0][0].abs() < 1.0).float()
    assert step.item() == steps
    mean, sd = steps * 3 / 16, math.sqrt(steps * 3 / 16 * 13 / 16)
    assert torch.all((downs - mean).abs() < 6 * sd), downs
    assert abs(downs.mean().item() - mean) < 6 * sd / math.sqrt(n)


def test_bfloat16_square_avg_keeps_growing_with_alpha_near_one():
    # v = 0.999 * 1 + 0.001 * 1.5 = 1.0005 is 0.064 of a bfloat16 ulp (2^-7)
    # above 1: round to nearest keeps v at 1 forever; stochastic rounding
    # keeps its mean.
    n = 1 << 18
    for stochastic in (False, True):
        lists = [[torch.ones(n, dtype=torch.bfloat16)],
                 [torch.full((n,), 1.5 ** 0.5, dtype=torch.bfloat16)],
                 [torch.ones(n, dtype=torch.bfloat16)], [], [], [torch.tensor(0.0)]]
        g2 = lists[1][0].double()[0].item() ** 2
        exact = 0.999 + 0.001 * g2
        kwargs = {"rounding_ids": [0], "rounding_seed": 1} if stochastic else {}
        rmsprop_(*lists, lr=0.0, alpha=0.999, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 maximize=False, **kwargs)
        v = lists[2][0].double()
        if not stochastic:
            assert torch.all(v == 1.0)
            continue
        q = (exact - 1.0) / 2.0 ** -7
        sigma = 2.0 ** -7 * math.sqrt(q * (1 - q) / n)
        assert abs(v.mean().item() - exact) < 6 * sigma


def test_generator_bits_are_uniform_and_uncorrelated():
    # 2^18 draws per slot: chi-square of the top 8 bits over 256 bins (255
    # degrees of freedom: mean 255, sd 22.6) within 6 sd, and no correlation
    # (|r| < 6 / sqrt(n)) between slots, neighbouring steps, ids or seeds.
    n = 1 << 18
    draws = {slot: random_bits(n, seed=SEED, id=4, step=10, slot=slot).double()
             for slot in ("param", "square_avg", "momentum_buffer", "grad_avg")}
    draws["next step"] = random_bits(n, seed=SEED, id=4, step=11, slot="param").double()
    draws["next id"] = random_bits(n, seed=SEED, id=5, step=10, slot="param").double()
    draws["next seed"] = random_bits(n, seed=SEED + 1, id=4, step=10, slot="param").double()
    draws["next segment"] = random_bits(n, seed=SEED, id=4, step=10, slot="param",
                                        start=1 << 32).double()
    for name, x in draws.items():
        counts = torch.bincount((x.long() >> 8), minlength=256).double()
        chi2 = ((counts - n / 256) ** 2 / (n / 256)).sum().item()
        assert abs(chi2 - 255) < 6 * math.sqrt(2 * 255), (name, chi2)
    base = draws["param"]
    for name, x in draws.items():
        if name != "param":
            r = torch.corrcoef(torch.stack([base, x]))[0, 1].item()
            assert abs(r) < 6 / math.sqrt(n), (name, r)


def test_nan_is_stored_as_a_quiet_nan_and_infinity_stays():
    x = torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), 1.5])
    x = torch.cat([x, torch.tensor([0x7FFFFFFF, -1], dtype=torch.int32).view(torch.float32)])
    out = round_stochastically(x, torch.full((x.numel(),), 0xFFFF))
    assert out.view(torch.int16)[:2].tolist() == [0x7FC0, 0x7FC0]
    assert out[2:4].tolist() == [float("inf"), -float("inf")]
    assert out.view(torch.int16)[5:].tolist() == [0x7FC0, 0x7FC0]
    # the kernel does the same: a NaN gradient makes NaN params and state
    lists = make_lists([64], momentum=False, centered=False)
    lists[1][0][::3] = float("nan")
    rmsprop_(*lists, **hyper(False), rounding_ids=[0], rounding_seed=1)
    for t in (lists[0][0], lists[2][0]):
        assert torch.equal(t[::3].view(torch.int16), torch.full((22,), 0x7FC0, dtype=torch.int16))


@pytest.mark.parametrize("change,message", [
    (lambda l, h: l.__setitem__(0, [t.float() for t in l[0]]) or
     l.__setitem__(1, [t.float() for t in l[1]]) or
     l.__setitem__(2, [t.float() for t in l[2]]), "stochastic rounding .* is for bfloat16"),
    (lambda l, h: h.__setitem__("rounding_ids", [0]), "rounding_ids has 1 ids but params has 2"),
    (lambda l, h: l.__setitem__(5, []), "needs state_steps"),
    (lambda l, h: l[5].__setitem__(1, torch.tensor(1.0, dtype=torch.float64)),
     r"state_steps\[1\] must be on cpu with dtype Float"),
])
def test_bad_rounding_arguments_are_refused_before_any_write(change, message):
    lists = make_lists([10, 20], momentum=False, centered=False)
    h = hyper(False, rounding_ids=[0, 1], rounding_seed=1)
    change(lists, h)
    before = clone(lists)
    for op in (rmsprop_, emu.rmsprop_):
        with pytest.raises(RuntimeError, match=message):
            op(*lists, **h)
        assert_same_bits(lists, before)


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float32])
def test_the_packaged_check_passes_and_catches_a_wrong_generator(monkeypatch, state_dtype):
    import fused_rmsprop.testing.rounding as rounding

    rounding.assert_stochastic_rounding_matches_reference("cpu", state_dtype=state_dtype)
    monkeypatch.setattr(rounding, "random_bits", lambda n, **kw: torch.zeros(n, dtype=torch.int64))
    with pytest.raises(AssertionError, match="stochastic rounding on cpu: param of tensor"):
        rounding.assert_stochastic_rounding_matches_reference("cpu", state_dtype=state_dtype)
