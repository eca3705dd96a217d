"""The CUDA kernel's source run under host emulation (no GPU needed).

fused_rmsprop._C_emulation compiles cuda/rmsprop_kernel.h and
cuda/multi_tensor_apply.h, the files nvcc compiles, as C++ and runs every
block and thread of each launch in turn. These tests drive it through the
chunking, launch splitting, vector fast path and masked path, and compare it
with the CPU kernel (bit for bit) and with the float64 reference.
"""

import itertools

import pytest
import torch

import fused_rmsprop
from fused_rmsprop.testing import assert_close_scaled, reference_rmsprop_update

emulation = pytest.importorskip("fused_rmsprop._C_emulation")
emu = torch.ops.fused_rmsprop_emulation

SMALL_CHUNK, CHUNK = 512, 65536
# NOTE: [kernel argument limit] in csrc/cuda/multi_tensor_apply.h: the
# blocks and tensors (by depth) one launch holds, by kernel argument bytes.
SMALL_ARGS, LARGE_ARGS = 4096, 32764
MAX_BLOCKS = {SMALL_ARGS: 320, LARGE_ARGS: 2240}
MAX_TENSORS = {SMALL_ARGS: {3: 48, 4: 36, 5: 30}, LARGE_ARGS: {3: 336, 4: 252, 5: 210}}
LAYOUTS = pytest.mark.parametrize("arg_bytes", [SMALL_ARGS, LARGE_ARGS], ids=["4KB", "32KB"])
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def make_lists(shapes, dtype=torch.float32, momentum=True, centered=True, offset=0,
               state_dtype=None, seed=0):
    """Lists of params, grads and state; with offset=1 every tensor is a view
    starting one element into its storage (so not 16-byte aligned)."""
    gen = torch.Generator().manual_seed(seed)
    state_dtype = state_dtype or dtype

    def tensor(shape, kind, dt):
        n = int(torch.Size(shape).numel())
        flat = torch.randn(n + offset, generator=gen, dtype=torch.float64)
        if kind == "square":
            flat = flat.abs() + 0.1
        return flat.to(dt)[offset:].view(shape)

    lists = [[tensor(s, "param", dtype) for s in shapes],
             [tensor(s, "grad", dtype) for s in shapes],
             [tensor(s, "square", state_dtype) for s in shapes],
             [tensor(s, "buf", state_dtype) for s in shapes] if momentum else [],
             [0.1 * tensor(s, "avg", state_dtype) for s in shapes] if centered else [],
             [torch.zeros(()) for _ in shapes]]
    return lists


def clone(lists):
    return [[t.clone() for t in lst] for lst in lists]


def hyper(momentum=True, **kw):
    h = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1,
             momentum=0.9 if momentum else 0.0, maximize=False)
    h.update(kw)
    return h


def assert_emulation_equals_cpu_kernel(lists, h, chunk_size=SMALL_CHUNK, arg_bytes=LARGE_ARGS):
    emulated, cpu = clone(lists), clone(lists)
    emu.rmsprop_(*emulated, **h, chunk_size=chunk_size, kernel_arg_bytes=arg_bytes)
    fused_rmsprop.rmsprop_(*cpu, **h)
    for name, a, b in zip(("param", "grad", "square_avg", "momentum_buffer", "grad_avg", "step"),
                          emulated, cpu):
        for i, (x, y) in enumerate(zip(a, b)):
            assert torch.equal(x, y), f"{name}[{i}] differs (max {(x.double() - y.double()).abs().max()})"
    return emulated


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("momentum,centered", list(itertools.product([False, True], [False, True])))
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "offset1"])
def test_edge_sizes_every_dtype_and_depth(dtype, momentum, centered, offset):
    # 0, 1, odd, not a multiple of the vector width, straddling one and several chunks.
    shapes = [(0,), (1,), (3,), (7, 5), (SMALL_CHUNK + 1,), (3 * SMALL_CHUNK - 2,), (0,)]
    lists = make_lists(shapes, dtype, momentum, centered, offset)
    assert_emulation_equals_cpu_kernel(lists, hyper(momentum))


@pytest.mark.parametrize("maximize,eps_in_sqrt,lr_in_momentum,decoupled", list(
    itertools.product([False, True], repeat=4)))
def test_every_option_combination(maximize, eps_in_sqrt, lr_in_momentum, decoupled):
    for momentum, centered in itertools.product([False, True], repeat=2):
        lists = make_lists([(5,), (1031,)], torch.float32, momentum, centered)
        h = hyper(momentum, maximize=maximize, eps_in_sqrt=eps_in_sqrt,
                  lr_in_momentum=lr_in_momentum, decoupled_weight_decay=decoupled)
        assert_emulation_equals_cpu_kernel(lists, h)


@LAYOUTS
@pytest.mark.parametrize("depth", [3, 4, 5])
def test_more_tensors_than_one_launch_holds(depth, arg_bytes):
    momentum, centered = depth >= 4, depth == 5
    n = 2 * MAX_TENSORS[arg_bytes][depth] + 5
    shapes = [(i % 9 + 1,) for i in range(n)]
    lists = make_lists(shapes, torch.float32, momentum, centered)
    assert_emulation_equals_cpu_kernel(lists, hyper(momentum), arg_bytes=arg_bytes)
    assert emu.last_launches() == 3


@LAYOUTS
def test_tensor_straddles_a_launch_boundary(arg_bytes):
    # A full launch of blocks: the big tensor continues in the next launch,
    # carried over in slot 0, and the small ones after it follow.
    big = MAX_BLOCKS[arg_bytes] * SMALL_CHUNK + 3 * SMALL_CHUNK // 2
    lists = make_lists([(100,), (big,), (7,)], torch.float32, True, True)
    assert_emulation_equals_cpu_kernel(lists, hyper(), arg_bytes=arg_bytes)
    assert emu.last_launches() == 2


def test_tensor_spanning_three_launches_with_the_real_chunk_size():
    lists = make_lists([(2 * MAX_BLOCKS[SMALL_ARGS] * SMALL_CHUNK + 1,)], torch.bfloat16, False, False)
    assert_emulation_equals_cpu_kernel(lists, hyper(False), arg_bytes=SMALL_ARGS)
    assert emu.last_launches() == 3
    real = make_lists([(CHUNK + 5,), (3,), (2 * CHUNK,)], torch.float32, True, False, offset=1)
    assert_emulation_equals_cpu_kernel(real, hyper(), chunk_size=CHUNK)
    assert emu.last_launches() == 1


def test_launch_layout_is_checked():
    with pytest.raises(RuntimeError, match="kernel_arg_bytes must be 4096 or 32764, got 8192"):
        emu.rmsprop_(*make_lists([(3,)]), **hyper(), kernel_arg_bytes=8192)


def _plan(shapes, depth, arg_bytes=LARGE_ARGS):
    tensors = [torch.empty(s, device="meta") for s in shapes]  # sizes only, no memory
    return emu.launch_plan(tensors, depth, arg_bytes)


def test_launch_plan_covers_every_chunk_once():
    # The plan comes from the very multi_tensor_apply the kernel runs: it
    # must hold one block per chunk, and full launches but the last.
    shapes = [(5,), (3 * CHUNK + 1,), (0,), (CHUNK,)] * 100
    chunks = sum(-(-int(torch.Size(s).numel()) // CHUNK) for s in shapes)
    for arg_bytes in (SMALL_ARGS, LARGE_ARGS):
        for depth in (3, 4, 5):
            plan = _plan(shapes, depth, arg_bytes)
            assert sum(plan) == chunks
            assert all(b <= MAX_BLOCKS[arg_bytes] for b in plan)
            # a launch closes when its blocks or its tensor slots are full
            tensors_per_launch = MAX_TENSORS[arg_bytes][depth]
            assert len(plan) >= max(-(-chunks // MAX_BLOCKS[arg_bytes]),
                                    -(-300 // tensors_per_launch))
    with pytest.raises(RuntimeError, match="depth must be 3, 4 or 5"):
        _plan([(3,)], 6)


def test_launches_per_step_of_real_models():
    # What the 32 KB layout buys (NOTE: [kernel argument limit]): GPT-2 small
    # (148 tensors, 124M elements) in 1 launch instead of 7 (plain) or 8
    # (momentum + centered); 1e9 elements in one tensor in 7 launches
    # instead of 48. The plan counts launches from sizes, without memory.
    import sys, os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))
    import cases

    gpt2 = cases.gpt2_small_shapes()
    assert [len(_plan(gpt2, d, SMALL_ARGS)) for d in (3, 5)] == [7, 7]
    assert [len(_plan(gpt2, d, LARGE_ARGS)) for d in (3, 5)] == [1, 1]
    billion = [(10**9,)]
    assert len(_plan(billion, 3, SMALL_ARGS)) == 48
    assert len(_plan(billion, 3, LARGE_ARGS)) == 7
    # an H100 holds 132 x 4 = 528 resident 512-thread blocks: a full 4 KB
    # launch is 61 % of one wave, a full 32 KB launch 4.2 waves
    assert max(_plan(billion, 3, SMALL_ARGS)) == 320
    assert max(_plan(billion, 3, LARGE_ARGS)) == 2240


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_float32_state_for_half_params(dtype):
    lists = make_lists([(5,), (SMALL_CHUNK + 3,)], dtype, True, True, state_dtype=torch.float32)
    assert_emulation_equals_cpu_kernel(lists, hyper())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_emulation_matches_the_reference(dtype):
    lists = make_lists([(3,), (SMALL_CHUNK * 2 + 7,)], dtype, True, True, offset=1)
    h = hyper(eps_in_sqrt=True)
    expected = []
    for p, g, v, b, a, _ in zip(*lists):
        state = {"square_avg": v.double().clone(), "momentum_buffer": b.double().clone(),
                 "grad_avg": a.double().clone()}
        p64 = p.double().clone()
        reference_rmsprop_update(p64, g.double(), state, centered=True, **h)
        expected.append((p64, state))
    out = assert_emulation_equals_cpu_kernel(lists, h)
    tol = 4 * torch.finfo(dtype).eps + 128 * torch.finfo(torch.float32).eps
    for i, (p64, state) in enumerate(expected):
        assert_close_scaled(out[0][i], p64, tol, tol, f"param {i}", also=lists[0][i])
        assert_close_scaled(out[2][i], state["square_avg"], tol, tol, "square_avg")


def test_emulated_op_checks_its_arguments_first():
    lists = make_lists([(3,), (5,)])
    lists[2][1] = torch.zeros(4)
    before = clone(lists)
    with pytest.raises(RuntimeError, match=r"square_avgs\[1\] has shape"):
        emu.rmsprop_(*lists, **hyper())
    assert all(torch.equal(x, y) for a, b in zip(lists, before) for x, y in zip(a, b))
    with pytest.raises(RuntimeError, match="chunk_size"):
        emu.rmsprop_(*make_lists([(3,)]), **hyper(), chunk_size=100)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_conversions_agree_with_c10_on_extreme_values(dtype):
    # The CPU kernel converts half types its own way (branch-free bfloat16,
    # F16C float16); the emulated kernel uses c10's conversions. Subnormal,
    # huge and mixed-magnitude values must round to the same bits.
    info = torch.finfo(dtype)
    values = torch.tensor([info.tiny / 8, info.tiny, 1e-3, 1.0, 3.0, info.max / 4, -info.max / 2,
                           -info.tiny / 4, 0.0, -0.0, 65504 / 2, 1 / 3], dtype=torch.float64)
    scale = torch.logspace(-6, 4, 97, dtype=torch.float64)
    base = torch.cat([values, (torch.randn(97, dtype=torch.float64) * scale)])
    lists = [[base.to(dtype)], [base.flip(0).to(dtype)], [base.abs().to(dtype) + 0.5],
             [base.roll(3).to(dtype)], [], [torch.zeros(())]]
    h = dict(lr=0.5, alpha=0.5, eps=1e-3, weight_decay=0.0, momentum=0.5, maximize=False)
    for lr in (0.5, 1e-3):
        assert_emulation_equals_cpu_kernel(clone(lists), dict(h, lr=lr))


@pytest.mark.parametrize("momentum,centered", [(False, False), (True, True)])
def test_every_bfloat16_bit_pattern_matches_c10_conversions(momentum, centered):
    # NOTE: [bfloat16 NaN] in csrc/cpu/convert.h: the CPU kernel rounds to
    # bfloat16 without c10's NaN select. Every bfloat16 value (NaNs with every
    # payload, infinities, subnormals) as parameter, as grad and as state must
    # give c10's bits (the emulated kernel converts with c10), except that a
    # NaN may be a different NaN.
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    lists = [[every.clone()], [every[torch.randperm(every.numel(), generator=gen)]],
             [every.abs()[torch.randperm(every.numel(), generator=gen)]],
             [every.flip(0)] if momentum else [], [every.roll(7)] if centered else [],
             [torch.zeros(())]]
    h = hyper(momentum)
    emulated, cpu = clone(lists), clone(lists)
    emu.rmsprop_(*emulated, **h, chunk_size=SMALL_CHUNK)
    fused_rmsprop.rmsprop_(*cpu, **h)
    for name, a, b in zip(("param", "square_avg", "momentum_buffer", "grad_avg"),
                          [emulated[0], emulated[2], emulated[3], emulated[4]],
                          [cpu[0], cpu[2], cpu[3], cpu[4]]):
        for x, y in zip(a, b):
            nan = x.isnan()
            assert torch.equal(nan, y.isnan()), f"{name}: NaN in one kernel only"
            assert 0 < nan.sum() < x.numel()
            assert torch.equal(x[~nan].view(torch.int16), y[~nan].view(torch.int16)), name


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=["0-dim", "[1]", "[1,1]"])
@pytest.mark.parametrize("found", [0.0, 1.0, -1.0, 2.0, float("nan")])
def test_device_step_counters_follow_any_one_element_found_inf(shape, found):
    # The emulation advances its counters as the CUDA op advances counters on
    # the GPU (NOTE: [step counters]): one kernel adds 1 unless found_inf is
    # non-zero (NaN included), read on the device, with no host read; the
    # update is skipped by the same rule. A found_inf of shape [1] passes the
    # checks, so it must work there too; it used to raise after the update had
    # been written.
    lists = make_lists([(3,), (SMALL_CHUNK + 1,)], torch.float32, True, True)
    lists[5] = [torch.full((), 4.0), torch.full((), 4.0, dtype=torch.float64)]
    before = clone(lists)
    found_inf = torch.full(shape, found)
    emu.rmsprop_(*lists, **hyper(), found_inf=found_inf, grad_scale=torch.full(shape, 2.0))
    assert [s.item() for s in lists[5]] == ([5.0, 5.0] if found == 0 else [4.0, 4.0])
    changed = not torch.equal(lists[0][1], before[0][1])
    assert changed == (found == 0)
    if found == 0:
        expected = clone(before)
        expected[1] = [g / 2 for g in expected[1]]  # what grad_scale=2 unscales to
        fused_rmsprop.rmsprop_(*expected, **hyper())
        for a, b in zip(lists[0] + lists[2], expected[0] + expected[2]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("found", [0.0, 1.0])
def test_device_step_counters_cross_the_counter_kernels_launch_limit(found):
    # 300 counters, float32 and float64 mixed: two launches of the counter
    # kernel (kCountersPerLaunch = 256), each reading found_inf.
    n = 300
    lists = make_lists([(2,)] * n, torch.float32, True, False)
    lists[5] = [torch.full((), 7.0, dtype=torch.float64 if i % 3 == 0 else torch.float32)
                for i in range(n)]
    emu.rmsprop_(*lists, **hyper(), found_inf=torch.tensor(found))
    assert [s.item() for s in lists[5]] == [8.0 if found == 0 else 7.0] * n
    assert [s.dtype for s in lists[5][:3]] == [torch.float64, torch.float32, torch.float32]


def test_a_call_that_raises_writes_neither_state_nor_counters():
    lists = make_lists([(3,), (5,)])
    lists[5] = [torch.zeros(()), torch.zeros(())]
    before = clone(lists)
    for bad in (dict(found_inf=torch.zeros(2)), dict(grad_scale=torch.ones(1, dtype=torch.float64))):
        with pytest.raises(RuntimeError, match="must be a one-element float32 tensor"):
            emu.rmsprop_(*lists, **hyper(), **bad)
        assert all(torch.equal(x, y) for a, b in zip(lists, before) for x, y in zip(a, b))


@pytest.mark.parametrize("factor_dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_grad_factor_gives_the_cpu_kernels_bits(dtype, factor_dtype):
    # The clipping coefficient multiplies every unscaled gradient, read from
    # a device scalar in the params' opmath type (NOTE: [fused clipping]).
    lists = make_lists([(5,), (SMALL_CHUNK + 3,)], dtype, True, True)
    factor = torch.tensor(0.3712, dtype=factor_dtype)
    scale = torch.tensor(8.0)
    emulated, cpu = clone(lists), clone(lists)
    emu.rmsprop_(*emulated, **hyper(), grad_scale=scale, grad_factor=factor, chunk_size=SMALL_CHUNK)
    fused_rmsprop.rmsprop_(*cpu, **hyper(), grad_scale=scale, grad_factor=factor)
    for a, b in zip(emulated, cpu):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    # and it is applied: the same step with the gradients pre-multiplied
    # (exactly, by a power of two) gives the same result
    halved, pre = clone(lists), clone(lists)
    fused_rmsprop.rmsprop_(*halved, **hyper(), grad_factor=torch.tensor(0.5, dtype=factor_dtype))
    pre[1] = [g * 0.5 for g in pre[1]]
    fused_rmsprop.rmsprop_(*pre, **hyper())
    assert all(torch.equal(x, y) for x, y in zip(halved[0], pre[0]))


def test_grad_factor_is_checked():
    for bad in (torch.ones(2), torch.ones((), dtype=torch.float16), torch.ones((), dtype=torch.int64)):
        with pytest.raises(RuntimeError, match="grad_factor must be a one-element float32 or float64"):
            emu.rmsprop_(*make_lists([(3,)]), **hyper(), grad_factor=bad)
