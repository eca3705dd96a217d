"""FusedRMSprop(state_bits=8): the state it keeps, every option with 8-bit
state, and the errors (the state_dict paths: test_quantized_checkpoints.py)."""

import copy
import itertools

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop._quantized import BLOCK, dequantize_state
from fused_rmsprop.testing.quantized import assert_quantized_steps_match_reference

OPTIONS = [dict(), dict(momentum=0.9), dict(centered=True, weight_decay=0.1),
           dict(momentum=0.9, centered=True, weight_decay=0.01, maximize=True)]
SWITCHES = dict(eps_in_sqrt=True, initial_square_avg=1.0, lr_in_momentum=True,
                decoupled_weight_decay=True, momentum=0.9, weight_decay=0.1)


def _params(shapes=((64, 100), (100,), (3000,)), dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]


def _grads(params, step, scale=1.0):
    gen = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * scale).to(p.dtype)


def _run(opt, params, steps=3, start=0):
    for i in range(start, start + steps):
        _grads(params, i)
        opt.step()


@pytest.mark.parametrize("kw", OPTIONS + [SWITCHES], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16,
                                   torch.float16, torch.complex64], ids=str)
def test_each_step_matches_the_float64_reference_within_the_code_bounds(dtype, kw):
    assert_quantized_steps_match_reference(dtype=dtype, **kw)


def test_state_is_codes_and_scales_above_min_8bit_size():
    params = _params()
    opt = FusedRMSprop(params, state_bits=8, momentum=0.9, centered=True)
    _run(opt, params, 1)
    big, small, mid = (opt.state[p] for p in params)
    assert set(big) == {"step", "square_avg_codes", "square_avg_scales", "momentum_buffer_codes",
                        "momentum_buffer_scales", "grad_avg_codes", "grad_avg_scales"}
    assert big["square_avg_codes"].dtype == torch.uint8
    assert big["square_avg_codes"].shape == params[0].shape
    assert big["square_avg_scales"].shape == (6400 // BLOCK,)
    assert set(small) == set(mid) == {"step", "square_avg", "momentum_buffer", "grad_avg"}
    # min_8bit_size=0: every parameter
    opt = FusedRMSprop(params, state_bits=8, min_8bit_size=0)
    _run(opt, params, 1)
    assert all("square_avg_codes" in opt.state[p] for p in params)


def test_state_memory_is_at_most_1_1_bytes_per_state_element():
    p = torch.zeros(1_000_003, requires_grad=True)
    opt = FusedRMSprop([p], state_bits=8, momentum=0.9, centered=True)
    _run(opt, [p], 1)
    state = [v for k, v in opt.state[p].items() if k != "step"]
    per_element = sum(t.numel() * t.element_size() for t in state) / (3 * p.numel())
    assert per_element <= 1.1
    assert per_element == pytest.approx(1 + 4 / BLOCK, rel=1e-4)


def test_initial_square_avg_is_exact_in_8_bits():
    p = torch.zeros(1000, requires_grad=True)
    opt = FusedRMSprop([p], state_bits=8, min_8bit_size=0, initial_square_avg=0.3)
    p.grad = torch.zeros(1000)
    opt.step()  # g = 0: v = alpha * 0.3 exactly representable as scale * 1.0
    v = dequantize_state(opt.state[p]["square_avg_codes"], opt.state[p]["square_avg_scales"],
                         "square_avg")
    # float32(0.3) * float32(0.99), the kernel's product, in every element
    assert torch.equal(v, (torch.tensor(0.3) * torch.tensor(0.99)).expand(1000))


@pytest.mark.parametrize("kw", OPTIONS[1:], ids=str)
def test_grad_scaler_skips_and_unscales_with_8bit_state(kw):
    # power-of-two scales: unscaling is exact, so the scaled run equals the
    # unscaled one that skips the same steps, bit for bit
    runs = []
    for scaled in (True, False):
        params = _params()
        opt = FusedRMSprop(params, state_bits=8, **kw)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1000)
        for i in range(5):
            opt.zero_grad()
            loss = sum((p.float() ** 2).sum() * (i + 1) for p in params)
            if i == 2:
                loss = loss * float("inf")
            if scaled:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if i != 2:
                    opt.step()
        runs.append((params, opt))
    (pa, oa), (pb, ob) = runs
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
        for key in oa.state[a]:
            assert torch.equal(oa.state[a][key], ob.state[b][key]), key


def test_clipping_with_8bit_state_equals_clipping_the_grads_first():
    results = []
    for fused in (True, False):
        params = _params()
        opt = FusedRMSprop(params, state_bits=8, momentum=0.9,
                           max_grad_norm=1.0 if fused else None)
        for i in range(3):
            _grads(params, i, scale=10.0)
            if not fused:
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", ["capturable", "tensor lr", "view", "compile"])
def test_variants_give_the_same_bits(variant):
    def make(alt):
        values = torch.randn(8, 16, 8, 16, generator=torch.Generator().manual_seed(0))
        if alt and variant == "view":  # a strided view, updated through a dense stand-in
            p = torch.nn.Parameter(values[..., ::2])
            assert not p.is_contiguous()
        else:
            p = torch.nn.Parameter(values[..., ::2].contiguous())
        kw = dict(state_bits=8, min_8bit_size=0, momentum=0.9, centered=True, lr=0.01)
        if alt and variant == "capturable":
            kw["capturable"] = True
        if alt and variant == "tensor lr":
            kw["lr"] = torch.tensor(0.01)
        opt = FusedRMSprop([p], **kw)
        step = torch.compile(opt.step) if alt and variant == "compile" else opt.step
        for i in range(3):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
            step()
        return p.detach().contiguous()
    assert torch.equal(make(False), make(True))


def test_channels_last_state_is_laid_out_like_the_param_and_matches_the_reference():
    p = torch.randn(8, 16, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    opt = FusedRMSprop([p], state_bits=8, momentum=0.9)
    p.grad = torch.randn(8, 16, 8, 8).to(memory_format=torch.channels_last)
    opt.step()
    assert opt.state[p]["square_avg_codes"].stride() == p.stride()
    assert_quantized_steps_match_reference(shapes=((8, 16, 8, 8), (300,)),
                                           memory_format=torch.channels_last, momentum=0.9)


def test_bfloat16_params_with_stochastic_rounding_and_8bit_state():
    def run(seed, sr=True):
        params = _params(dtype=torch.bfloat16)
        opt = FusedRMSprop(params, lr=1e-3, state_bits=8, stochastic_rounding=sr,
                           rounding_seed=seed, momentum=0.9)
        _run(opt, params, 3)
        return params
    a, b, c, nearest = run(1), run(1), run(2), run(1, sr=False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # reproducible
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # the seed matters
    assert not all(torch.equal(x, y) for x, y in zip(a, nearest))


def test_bad_options_are_refused():
    p = [torch.zeros(10, requires_grad=True)]
    for bits in (4, 16, True, "8"):
        with pytest.raises(ValueError, match="Invalid state_bits"):
            FusedRMSprop(p, state_bits=bits)
    for size in (-1, 1.5, None):
        with pytest.raises(ValueError, match="Invalid min_8bit_size"):
            FusedRMSprop(p, state_bits=8, min_8bit_size=size)


def test_bad_8bit_state_gets_a_clear_error_and_nothing_changes():
    params = _params()
    opt = FusedRMSprop(params, state_bits=8)
    _run(opt, params, 1)
    opt.state[params[0]]["square_avg_scales"] = torch.zeros(3)
    before = [p.detach().clone() for p in params]
    _grads(params, 5)
    with pytest.raises(RuntimeError, match="square_avg_scales' of parameter 0 .* expected shape "
                                           r"\(50,\), dtype torch.float32"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, before))


def test_dtensor_parameters_keep_sharded_codes_and_step_as_plain_ones(tmp_path):
    # One rank: the shard is the whole tensor, so the step equals the plain
    # one bit for bit (2 ranks: tests/test_distributed_8bit.py).
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        plain = _params()
        sharded = [torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, [Shard(0)]))
                   for p in plain]
        kw = dict(state_bits=8, min_8bit_size=101, momentum=0.9, centered=True)
        opts = FusedRMSprop(plain, **kw), FusedRMSprop(sharded, **kw)
        for step in range(3):
            _grads(plain, step)
            for p, q in zip(plain, sharded):
                q.grad = distribute_tensor(p.grad, mesh, [Shard(0)])
            for opt in opts:
                opt.step()
        for p, q in zip(plain, sharded):
            assert torch.equal(p, q.full_tensor())
            for key, value in opts[0].state[p].items():
                got = opts[1].state[q][key]
                # sharded like the param, but the scales (this rank's blocks) and step
                assert isinstance(got, DTensor) != (key == "step" or key.endswith("_scales")), key
                assert torch.equal(value, got.full_tensor() if isinstance(got, DTensor) else got)
        assert "square_avg_codes" in opts[1].state[sharded[0]]
        assert "square_avg" in opts[1].state[sharded[1]]  # 100 elements: full precision
        # complex DTensors with 8-bit state: a clear error, nothing written
        z = torch.nn.Parameter(distribute_tensor(torch.randn(64, 100, dtype=torch.complex64),
                                                 mesh, [Shard(0)]))
        z.grad = torch.zeros_like(z)
        opt = FusedRMSprop([z], state_bits=8)
        with pytest.raises(ValueError, match="not supported for complex DTensor parameters"):
            opt.step()
        assert not opt.state
    finally:
        dist.destroy_process_group()


def test_mixed_groups_and_sizes_in_one_step():
    params = _params(shapes=((64, 100), (100,), (5000,), (4096,)))
    groups = [dict(params=params[:2], state_bits=8), dict(params=params[2:], centered=True)]
    opt = FusedRMSprop(groups, momentum=0.9)
    for i in range(2):
        _grads(params, i)
        opt.step()
    kinds = [("square_avg_codes" in opt.state[p]) for p in params]
    assert kinds == [True, False, False, False]
    assert all(torch.isfinite(p).all() for p in params)


def test_every_option_combination_runs_with_8bit_state():
    names = ["momentum", "centered", "maximize", "eps_in_sqrt", "lr_in_momentum",
             "decoupled_weight_decay"]
    for values in itertools.product([False, True], repeat=len(names)):
        kw = dict(zip(names, values))
        kw["momentum"] = 0.9 if kw["momentum"] else 0.0
        params = _params(shapes=((300,),))
        opt = FusedRMSprop(params, state_bits=8, min_8bit_size=0, weight_decay=0.01, **kw)
        _run(opt, params, 2)
        assert torch.isfinite(params[0]).all(), kw


def test_complex_8bit_state_converts_to_full_precision_and_back():
    p = torch.randn(5000, dtype=torch.complex64, requires_grad=True)
    opt = FusedRMSprop([p], state_bits=8, momentum=0.9)
    _run(opt, [p], 2)
    codes, scales = (opt.state[p][k] for k in ("square_avg_codes", "square_avg_scales"))
    assert codes.shape == (5000, 2)  # the real view's codes
    want = torch.view_as_complex(dequantize_state(codes, scales, "square_avg"))
    q = p.detach().clone().requires_grad_()
    full = FusedRMSprop([q], momentum=0.9)
    full.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert torch.equal(full.state[q]["square_avg"], want)
    back = FusedRMSprop([p.detach().clone().requires_grad_()], momentum=0.9, state_bits=8)
    back.load_state_dict(copy.deepcopy(full.state_dict()))
    assert torch.equal(back.state[back.param_groups[0]["params"][0]]["square_avg_codes"], codes)
    opt.param_groups[0]["state_bits"] = None  # a live switch converts at the next step
    _run(opt, [p], 1)
    assert opt.state[p]["square_avg"].dtype == torch.complex64
