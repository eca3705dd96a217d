"""8-bit state at the op level: the codes (NOTE: [8-bit state codes]), the
kernels' bytes against fused_rmsprop._quantized, one step against the float64
reference within the codes' error bounds, the CPU kernel against the CUDA
kernel under emulation (bit for bit), and the op's argument checks."""

import itertools

import pytest
import torch

import fused_rmsprop
from fused_rmsprop._quantized import (BLOCK, decode, dequantize_state, encode, quantize,
                                      quantize_state)
from fused_rmsprop.testing import reference_rmsprop_update
from fused_rmsprop.testing.quantized import error_bound

emulation = pytest.importorskip("fused_rmsprop._C_emulation")
emu = torch.ops.fused_rmsprop_emulation

KERNELS = ["cpu", "emulation"]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
FEATURES = [(False, False), (True, False), (False, True), (True, True)]
SIGNED = {"square_avg": False, "momentum_buffer": True, "grad_avg": True}


def run(kernel, *args, chunk_size=512, arg_bytes=32764, **kw):
    if kernel == "cpu":
        fused_rmsprop.rmsprop_(*args, **kw)
    else:
        emu.rmsprop_(*args, **kw, chunk_size=chunk_size, kernel_arg_bytes=arg_bytes)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_every_code_decodes_and_encodes_back_to_itself(signed):
    codes = torch.arange(256, dtype=torch.uint8)
    if not signed:
        assert torch.equal(encode(decode(codes, False), False), codes)
        values = decode(codes, False)
        assert values[0] == 0 and values[255] == 1 and (values.diff() > 0).all()
        return
    values = decode(codes, True)
    back = encode(values, True)
    # +0 and -0 (codes 0 and 128) are the one pair of codes with equal values
    assert torch.equal(back[1:128], codes[1:128]) and torch.equal(back[129:], codes[129:])
    assert values[127] == 1 and values[255] == -1 and (values[:128].diff() > 0).all()
    assert torch.equal(values[128:], -values[:128])


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_quantization_error_bound_per_block(signed):
    # blocks whose values span 12 decades, each with its own scale
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64 * BLOCK, generator=gen) * torch.logspace(-6, 6, 64 * BLOCK)
    x = x if signed else x.abs()
    codes, scales = quantize(x, signed)
    back = dequantize_state(codes, scales, "momentum_buffer" if signed else "square_avg")
    rel, absolute = error_bound(signed)
    per_element_scale = scales.repeat_interleave(BLOCK)
    assert torch.equal(scales, x.view(-1, BLOCK).abs().amax(dim=1))
    err = (back.double() - x.double()).abs()
    bound = rel * x.double().abs() + absolute * per_element_scale.double()
    assert (err <= bound).all(), (err / bound).max()
    # each block's largest element is stored exactly
    largest = x.view(-1, BLOCK).abs().argmax(dim=1) + torch.arange(64) * BLOCK
    assert torch.equal(back[largest], x[largest])
    # a block of zeros: scale 0, codes 0
    zc, zs = quantize(torch.zeros(BLOCK + 3), signed)
    assert not zc.any() and not zs.any()


def _lists(shapes, dtype, momentum, centered, offset=0, seed=0):
    """params, grads, codes and step counters, with scales kwargs; offset=1
    starts every tensor one element into its storage (no vector path)."""
    gen = torch.Generator().manual_seed(seed)

    def values(shape, square=False):
        n = torch.Size(shape).numel()
        x = torch.randn(n, generator=gen, dtype=torch.float64) * torch.logspace(-3, 1, n)
        return (x * x if square else x).float().view(shape)

    def shifted(t):
        base = torch.zeros(t.numel() + offset, dtype=t.dtype)
        base[offset:] = t.reshape(-1)
        return base[offset:].view(t.shape)

    params = [shifted(values(s).to(dtype)) for s in shapes]
    grads = [shifted(values(s).to(dtype)) for s in shapes]
    kw, states = {}, []
    for key, on in (("square_avg", True), ("momentum_buffer", momentum), ("grad_avg", centered)):
        pairs = [quantize_state(values(s, key == "square_avg") * (0.1 if key == "grad_avg" else 1),
                                key) for s in shapes] if on else []
        states.append([shifted(c) for c, _ in pairs])
        if on:
            kw[f"{key}_scales"] = [s for _, s in pairs]
    return [params, grads, *states, [torch.zeros(()) for _ in shapes]], kw


def _clone(lists, kw):
    return [[t.clone() for t in lst] for lst in lists], {k: [t.clone() for t in v]
                                                         for k, v in kw.items()}


def _hyper(momentum, **kw):
    h = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=0.9 if momentum else 0.0,
             maximize=False)
    h.update(kw)
    return h


def _bits(t):
    return t.reshape(-1).view(torch.uint8) if t.dtype != torch.uint8 else t.reshape(-1)


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "offset"])
@pytest.mark.parametrize("momentum,centered", FEATURES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_emulated_cuda_kernel_equals_cpu_kernel_bit_for_bit(dtype, momentum, centered, offset):
    # tensors of whole and partial blocks and chunks (chunk 512 = 4 blocks)
    shapes = [(1000,), (BLOCK,), (3, 700), (1,), (2 * 512 + 5,)]
    lists, kw = _lists(shapes, dtype, momentum, centered, offset)
    h = _hyper(momentum, maximize=True, eps_in_sqrt=True)
    (a, ka), (b, kb) = _clone(lists, kw), _clone(lists, kw)
    run("cpu", *a, **h, **ka)
    run("emulation", *b, **h, **kb)
    for la, lb in zip(a, b):
        for x, y in zip(la, lb):
            assert torch.equal(_bits(x), _bits(y))
    for key in ka:
        for x, y in zip(ka[key], kb[key]):
            assert torch.equal(_bits(x), _bits(y)), key


@pytest.mark.parametrize("arg_bytes", [4096, 32764], ids=["4KB", "32KB"])
def test_emulated_launches_split_and_carry_over_as_the_cpu_kernel(arg_bytes):
    # 4 KB: more tensors than one launch holds at depth 8 (20); 32 KB: more
    # chunks than one launch holds (2240); a tensor carried over either way
    shapes = [(700 + 37 * i,) for i in range(23)] + [(5000,)]
    if arg_bytes == 32764:
        shapes = [(1000,), (2300 * 512 + 5,), (300,)]
    lists, kw = _lists(shapes, torch.float32, True, True)
    h = _hyper(True)
    (a, ka), (b, kb) = _clone(lists, kw), _clone(lists, kw)
    run("cpu", *a, **h, **ka)
    run("emulation", *b, **h, **kb, arg_bytes=arg_bytes)
    assert emu.last_launches() > 1
    for x, y in zip(itertools.chain(*a, *ka.values()), itertools.chain(*b, *kb.values())):
        assert torch.equal(_bits(x), _bits(y))


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_store_the_codes_fused_rmsprop_quantized_writes(kernel):
    # Steps whose new state is known exactly, so the kernel's codes and scales
    # can be compared with the Python codes bit for bit:
    # alpha = 0: square_avg = g * g and, from grad_avg 0, grad_avg = g;
    # alpha = 1, eps = 0, square_avg 1: momentum_buffer = 0 * mu + g / 1 = g.
    n = 3 * BLOCK + 17
    gen = torch.Generator().manual_seed(1)
    g = (torch.randn(n, generator=gen, dtype=torch.float64) * torch.logspace(-5, 5, n)).float()
    p = torch.zeros(n)
    zeros = [torch.zeros(n, dtype=torch.uint8), torch.zeros((n + BLOCK - 1) // BLOCK)]
    v, vs, a, as_ = zeros[0].clone(), zeros[1].clone(), zeros[0].clone(), zeros[1].clone()
    run(kernel, [p], [g], [v], [], [a], [], lr=0.0, alpha=0.0, eps=1e-8, weight_decay=0.0,
        momentum=0.0, maximize=False, square_avg_scales=[vs], grad_avg_scales=[as_])
    for key, codes, scales, x in (("square_avg", v, vs, g * g), ("grad_avg", a, as_, g)):
        want_codes, want_scales = quantize_state(x, key)
        assert torch.equal(codes, want_codes) and torch.equal(scales, want_scales), key
    v1 = torch.full((n,), 255, dtype=torch.uint8)
    v1s = torch.ones((n + BLOCK - 1) // BLOCK)
    b, bs = zeros[0].clone(), zeros[1].clone()
    run(kernel, [p], [g], [v1], [b], [], [], lr=0.0, alpha=1.0, eps=0.0, weight_decay=0.0,
        momentum=0.9, maximize=False, square_avg_scales=[v1s], momentum_buffer_scales=[bs])
    want_codes, want_scales = quantize_state(g, "momentum_buffer")
    assert torch.equal(b, want_codes) and torch.equal(bs, want_scales)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("momentum,centered", FEATURES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_one_step_matches_the_float64_reference_within_the_code_bounds(
        kernel, dtype, momentum, centered):
    shapes = [(1000,), (2, 300)]
    lists, kw = _lists(shapes, dtype, momentum, centered, seed=3)
    h = _hyper(momentum)
    before, kb = _clone(lists, kw)
    run(kernel, *lists, **h, **kw)
    eps_dtype = torch.finfo(dtype).eps
    for i in range(len(shapes)):
        state, p = {}, before[0][i].double().clone()
        for j, key in ((2, "square_avg"), (3, "momentum_buffer"), (4, "grad_avg")):
            if before[j]:
                state[key] = dequantize_state(before[j][i], kb[f"{key}_scales"][i], key).double()
        reference_rmsprop_update(p, before[1][i].double(), state, lr=h["lr"], alpha=h["alpha"],
                                 eps=h["eps"], weight_decay=h["weight_decay"],
                                 momentum=h["momentum"], centered=centered)
        # params: the update computed in the opmath type, rounded once to dtype
        step = (p - before[0][i].double()).abs()
        torch.testing.assert_close(lists[0][i].double(), p, rtol=2 * eps_dtype,
                                   atol=float(step.max()) * 1e-5)
        for j, key in ((2, "square_avg"), (3, "momentum_buffer"), (4, "grad_avg")):
            if key not in state:
                continue
            got = dequantize_state(lists[j][i], kw[f"{key}_scales"][i], key).double()
            scale = kw[f"{key}_scales"][i].double().repeat_interleave(BLOCK)[:got.numel()]
            scale = scale.view(got.shape)
            # the scale is the new state's largest |x| (float32 arithmetic)
            want_scale = state[key].abs().reshape(-1)
            want_scale = torch.nn.functional.pad(want_scale, (0, -got.numel() % BLOCK))
            torch.testing.assert_close(kw[f"{key}_scales"][i].double(),
                                       want_scale.view(-1, BLOCK).amax(dim=1), rtol=1e-5, atol=0)
            rel, absolute = error_bound(SIGNED[key])
            bound = rel * state[key].abs() + absolute * scale + 1e-5 * scale
            assert ((got - state[key]).abs() <= bound).all(), key


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_skipped_amp_step_leaves_codes_and_scales_alone(kernel):
    lists, kw = _lists([(1000,)], torch.float32, True, True)
    before, kb = _clone(lists, kw)
    run(kernel, *lists, **_hyper(True), **kw, found_inf=torch.ones(()),
        grad_scale=torch.full((), 4.0))
    for x, y in zip(itertools.chain(*lists, *kw.values()), itertools.chain(*before, *kb.values())):
        assert torch.equal(x, y)


BAD = {
    "square_avg_scales": (lambda kw: kw["square_avg_scales"][0].resize_(3),
                          "square_avg_scales\\[0\\] must be a contiguous 1-D float32 tensor of 8"),
    "missing momentum scales": (lambda kw: kw.pop("momentum_buffer_scales"),
                                "momentum_buffer_scales has 0 tensors; expected 1"),
    "float64 scales": (lambda kw: kw.__setitem__("grad_avg_scales",
                                                 [kw["grad_avg_scales"][0].double()]),
                       "grad_avg_scales\\[0\\] must be a contiguous 1-D float32"),
}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_scales_are_refused_before_anything_is_written(kernel, case):
    lists, kw = _lists([(1000,)], torch.float32, True, True)
    breaks, message = BAD[case]
    breaks(kw)
    before, _ = _clone(lists, {})
    with pytest.raises(RuntimeError, match=message):
        run(kernel, *lists, **_hyper(True), **kw)
    for x, y in zip(itertools.chain(*lists), itertools.chain(*before)):
        assert torch.equal(x, y)


def test_codes_without_scales_and_scales_without_codes_are_refused():
    lists, kw = _lists([(1000,)], torch.float32, False, False)
    with pytest.raises(RuntimeError, match="uint8 codes of 8-bit state need square_avg_scales"):
        fused_rmsprop.rmsprop_(*lists, **_hyper(False))
    full = [[torch.zeros(1000)], [torch.zeros(1000)], [torch.zeros(1000)], [], [], []]
    with pytest.raises(RuntimeError, match="the state must be uint8 codes"):
        fused_rmsprop.rmsprop_(*full, **_hyper(False), **kw)


def test_op_is_traceable_with_8bit_state():
    lists, kw = _lists([(300,), (BLOCK,)], torch.float32, True, True)
    args = (*lists,)
    kwargs = dict(_hyper(True), **kw)
    torch.library.opcheck(torch.ops.fused_rmsprop.rmsprop_.default, args, kwargs)
