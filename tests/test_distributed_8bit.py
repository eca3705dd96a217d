"""FusedRMSprop(state_bits=8) under FSDP2, on CPU with gloo: training, and
DCP checkpoints on the same ranks and across world sizes.

NOTE: [8-bit shards] cuts the blocks in each rank's shard, so FSDP2 on W
ranks computes what one process computes when each parameter is split into
the same W row chunks (torch.chunk along dim 0, as FSDP2 shards): the tests
check that, in float64 (1e-10, the summation order of the gradients aside).
Between world sizes the blocks differ: a checkpoint moved from 2 ranks to 1
(and back) is encoded into other blocks, within the codes' error bound
(fused_rmsprop.testing.quantized.error_bound), and training continues within
the bound such state allows (`_assert_continues`).

Each rank ends with destroy_process_group() and os._exit (NOTE: [gloo
teardown] in examples/_distributed.py)."""

import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fused_rmsprop import FusedRMSprop
from fused_rmsprop._quantized import BLOCK
from fused_rmsprop.testing.quantized import error_bound
from test_distributed import _finish
from test_distributed import _sharded_model as sharded

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")

BATCH, STEPS = 16, 4
# min_8bit_size 256: the weights of 8x64 and 64x33 (and each rank's shard of
# them) have 8-bit state, the 33x2 weight and the biases full precision, on 1
# rank and on 2 (where 33 rows make uneven shards with a partial last block).
KW = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01, state_bits=8,
          min_8bit_size=256)
OPTIONS = {
    "momentum+centered+wd": KW,
    "clip": dict(KW, max_grad_norm=0.1),  # the global norm over the mesh; every step clips
    "switches": dict(KW, eps_in_sqrt=True, lr_in_momentum=True, decoupled_weight_decay=True,
                     initial_square_avg=1.0, maximize=True, lr=torch.tensor(0.01)),
    "amp": KW,  # GradScaler; rank 0 finds an inf at step 2 and every rank skips it
    "compile": KW,  # torch.compile(opt.step)
}
SKIPPED_STEP = 2


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 33), torch.nn.Tanh(),
                               torch.nn.Linear(33, 2)).double()


def _batches(steps=STEPS):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 8, generator=gen, dtype=torch.float64),
             torch.randn(BATCH, 2, generator=gen, dtype=torch.float64))
            for _ in range(steps)]


def _loss(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def _sharded_model():
    return sharded(_model())


def _train(model, opt, batches, rank, world, scaler=None, step=None):
    n = BATCH // world
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss = _loss(model, x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n])
        if scaler is None:
            loss.backward()
            (step or opt.step)()
            continue
        scaler.scale(loss).backward()
        if i == SKIPPED_STEP and rank == 0:  # one element of one rank's shard
            next(model.parameters()).grad._local_tensor[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()


def _full_params(model):
    return [p.full_tensor().detach().clone() for p in model.parameters()]


def _local_state(opt):
    """Each param's state on this rank: local shards and this rank's scales."""
    return [{k: getattr(v, "_local_tensor", v).clone() for k, v in s.items()}
            for s in opt.state.values()]


def _worker(rank, world, init_file, task, out_dir, arg):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    result = TASKS[task](rank, world, out_dir, arg)
    if rank == 0 and result is not None:
        torch.save(result, os.path.join(out_dir, f"{task}.pt"))
    _finish()


def _run(task, world, out_dir, arg=None):
    mp.spawn(_worker, args=(world, os.path.join(out_dir, f"init-{task}-{world}"), task, out_dir,
                            arg), nprocs=world, join=True)
    path = os.path.join(out_dir, f"{task}.pt")
    return torch.load(path) if os.path.exists(path) else None


# -- training ---------------------------------------------------------------

def _use_emulated_cuda_kernel():
    """The step's op calls go to the CUDA kernel under host emulation (its
    small chunks: a shard spans several)."""
    import fused_rmsprop._C_emulation  # noqa: F401 - registers the op
    from fused_rmsprop import _calls

    emulated = torch.ops.fused_rmsprop_emulation.rmsprop_
    _calls.rmsprop_ = lambda *lists, **kw: emulated(*lists, **kw, chunk_size=512,
                                                     kernel_arg_bytes=4096)


def _task_train(rank, world, out_dir, arg):
    from torch.distributed.tensor import DTensor

    options, kernel = arg
    if kernel == "emulation":
        _use_emulated_cuda_kernel()
    model = _sharded_model()
    opt = FusedRMSprop(model.parameters(), **OPTIONS[options])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if options == "amp" else None
    step = torch.compile(opt.step) if options == "compile" else None
    _train(model, opt, _batches(), rank, world, scaler, step)
    if kernel == "emulation":
        assert torch.ops.fused_rmsprop_emulation.last_launches() > 0
    # the state each rank keeps: 8-bit codes sharded like the param, its own scales
    bytes_per_element = {}
    for k, (p, s) in enumerate(opt.state.items()):
        assert float(s["step"]) == STEPS - (scaler is not None), s["step"]
        if "square_avg_codes" in s:
            codes, scales = s["square_avg_codes"], s["square_avg_scales"]
            assert isinstance(codes, DTensor) and codes.placements == p.placements
            assert not isinstance(scales, DTensor)
            n = codes._local_tensor.numel()
            assert scales.numel() == (n + BLOCK - 1) // BLOCK
            bytes_per_element[k] = (n + scales.nbytes) / n
        else:
            assert isinstance(s["square_avg"], DTensor)
    everyone = [None] * world
    dist.all_gather_object(everyone, bytes_per_element)
    return {"params": _full_params(model), "bytes_per_element": everyone}


def _shard_reference(world, options):
    """One process, each parameter split into the W row chunks FSDP2 gives
    its W ranks, each chunk a parameter of its own (its own blocks)."""
    kw = OPTIONS[options]
    model = _model()
    params = list(model.parameters())
    chunks = [[c.clone().requires_grad_() for c in torch.chunk(p.detach(), world)]
              for p in params]
    opt = FusedRMSprop([c for cs in chunks for c in cs], **kw)
    for i, (x, y) in enumerate(_batches()):
        model.zero_grad()
        _loss(model, x, y).backward()
        if options == "amp" and i == SKIPPED_STEP:
            continue
        for p, cs in zip(params, chunks):
            for c, g in zip(cs, torch.chunk(p.grad, world)):
                c.grad = g.clone()
        opt.step()
        with torch.no_grad():
            for p, cs in zip(params, chunks):
                p.copy_(torch.cat(cs))
    return [p.detach() for p in params]


@pytest.mark.parametrize("options,kernel", [(options, "cpu") for options in OPTIONS] + [
    ("momentum+centered+wd", "emulation"), ("amp", "emulation")])
def test_fsdp2_with_8bit_state_computes_what_one_process_does_on_the_same_shards(options,
                                                                                   kernel):
    # kernel "emulation": the CUDA kernel on the ranks' shards, emulated on the host
    if kernel == "emulation":
        pytest.importorskip("fused_rmsprop._C_emulation")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {world: _run("train", world, tmp, (options, kernel)) for world in (1, 2)}
    for world, run in runs.items():
        for got, want in zip(run["params"], _shard_reference(world, options)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # 2 ranks against 1 rank (the single-process 8-bit run, other blocks)
    start = [p.detach() for p in _model().parameters()]
    _assert_continues(runs[2]["params"], runs[1]["params"], start)
    # bytes of 8-bit state per element on each rank, scales included (the
    # goal: 1.1; a shard's last block may be partial)
    for rank_bytes in runs[2]["bytes_per_element"]:
        assert rank_bytes and all(b <= 1.1 for b in rank_bytes.values()), rank_bytes


def _assert_continues(got, want, start):
    """Runs whose 8-bit state differs within the codes' bound: each state
    element within 1/16 of its value (a code step, `error_bound`), so each
    step within about 1/16 + 1/32 (momentum buffer; square root of
    square_avg) of the other's. The parameters' distance from the point
    where they split stays within 1/5 of how far they moved."""
    for g, w, s in zip(got, want, start):
        moved = torch.linalg.vector_norm(w - s)
        assert moved > 0
        assert torch.linalg.vector_norm(g - w) <= 0.2 * moved, (
            float(torch.linalg.vector_norm(g - w)), float(moved))


# -- checkpoints --------------------------------------------------------------

def _options(full):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full)


def _save(model, opt, where):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, opt)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=where)


def _load(model, opt, where, how):
    """From a DCP checkpoint (`how` "dcp") or a full state dict on disk ("full")."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if how == "full":
        saved = torch.load(where + ".pt")
        set_state_dict(model, opt, model_state_dict=saved["model"],
                       optim_state_dict=saved["optim"], options=_options(True))
        return
    model_state, optim_state = get_state_dict(model, opt)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=where)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _save_both(model, opt, where, rank):
    """A DCP checkpoint at `where` and a full state dict at `where`.pt."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    _save(model, opt, where)
    model_state, optim_state = get_state_dict(model, opt, options=_options(True))
    if rank == 0:
        torch.save({"model": model_state, "optim": optim_state}, where + ".pt")
    dist.barrier()
    return torch.load(where + ".pt")["optim"]  # (the state dict's step tensors are live)


def _task_resume(rank, world, out_dir, how):
    """Train 3 steps, save, train 3 more; a new model and optimizer load the
    checkpoint and train the same 3 steps: every byte the same."""
    batches = _batches(6)
    where = os.path.join(out_dir, "resume")
    model = _sharded_model()
    opt = FusedRMSprop(model.parameters(), **KW)
    _train(model, opt, batches[:3], rank, world)
    at_save = _local_state(opt)
    _save_both(model, opt, where, rank)
    _train(model, opt, batches[3:], rank, world)
    model2 = _sharded_model()
    opt2 = FusedRMSprop(model2.parameters(), **KW)
    _load(model2, opt2, where, how)
    _assert_same_state(_local_state(opt2), at_save)
    _train(model2, opt2, batches[3:], rank, world)
    _assert_same_state(_local_state(opt2), _local_state(opt))
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p._local_tensor, p2._local_tensor)
    return {"done": True}


def _assert_same_state(got, want):
    for g, w in zip(got, want):
        assert set(g) == set(w), (sorted(g), sorted(w))
        for key in w:
            assert torch.equal(g[key], w[key]) and g[key].dtype == w[key].dtype, key


@pytest.mark.parametrize("how", ["dcp", "full"])
def test_fsdp2_with_8bit_state_resumes_bit_exactly_on_the_same_ranks(how):
    with tempfile.TemporaryDirectory() as tmp:
        assert _run("resume", 2, tmp, how)["done"]


def _task_save(rank, world, out_dir, _):
    """3 steps, a checkpoint (DCP and full), 3 more steps."""
    batches = _batches(6)
    model = _sharded_model()
    opt = FusedRMSprop(model.parameters(), **KW)
    _train(model, opt, batches[:3], rank, world)
    at_save = _full_params(model)
    saved = _save_both(model, opt, os.path.join(out_dir, f"ckpt-{world}"), rank)
    _train(model, opt, batches[3:], rank, world)
    return {"at_save": at_save, "state": saved["state"], "stay": _full_params(model)}


def _task_load(rank, world, out_dir, arg):
    """Load the checkpoint saved on `saved_world` ranks and train the last 3
    steps (FusedRMSprop with 8-bit state, or torch.optim.RMSprop)."""
    saved_world, how, optimizer = arg
    model = _sharded_model()
    if optimizer == "torch":
        opt = torch.optim.RMSprop(model.parameters(), **{
            k: v for k, v in KW.items() if k not in ("state_bits", "min_8bit_size")})
    else:
        opt = FusedRMSprop(model.parameters(), **KW)
    _load(model, opt, os.path.join(out_dir, f"ckpt-{saved_world}"), how)
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    # (copied: the state dict's step tensors are live)
    loaded = copy.deepcopy(get_optimizer_state_dict(model, opt, options=_options(True)))
    _train(model, opt, _batches(6)[3:], rank, world)
    return {"state": loaded["state"], "moved": _full_params(model)}


@pytest.mark.parametrize("optimizer", ["fused", "torch"])
@pytest.mark.parametrize("how", ["dcp", "full"])
@pytest.mark.parametrize("worlds", [(2, 1), (1, 2)], ids=["2-to-1", "1-to-2"])
def test_an_8bit_checkpoint_moves_between_world_sizes_and_to_torch(worlds, how, optimizer):
    saved_world, world = worlds
    with tempfile.TemporaryDirectory() as tmp:
        saved = _run("save", saved_world, tmp)
        loaded = _run("load", world, tmp, (saved_world, how, optimizer))
    # the state as loaded: encoded into this world size's blocks, within the
    # codes' bound of the float32 state saved (torch: the saved state itself)
    for name, want in saved["state"].items():
        got = loaded["state"][name]
        assert set(got) == set(want), (sorted(got), sorted(want))
        for key, value in want.items():
            if optimizer == "torch" or key == "step" or value.numel() < KW["min_8bit_size"]:
                assert torch.equal(got[key], value.to(got[key].dtype)), (name, key)
                continue
            relative, absolute = error_bound(key != "square_avg")
            bound = relative * value.abs() + absolute * value.abs().max()
            assert ((got[key].float() - value).abs() <= bound).all(), (name, key)
            if saved_world != world and name == "2.weight":
                # 33 rows of 64: 2 ranks hold 1088 and 1024 elements, so the
                # blocks of 1 rank are not theirs (those of 0.weight are)
                assert not torch.equal(got[key].float(), value), (name, key)
    _assert_continues(loaded["moved"], saved["stay"], saved["at_save"])


# -- stochastic rounding of bfloat16 params -----------------------------------

SEED = 1234


def _bf16_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Linear(64, 33)).bfloat16()


def _bf16_grads():
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(p.shape, generator=gen).bfloat16() for p in _bf16_model().parameters()]


def _task_rounding(rank, world, out_dir, _):
    from torch.distributed.tensor import distribute_tensor

    model = sharded(_bf16_model())
    opt = FusedRMSprop(model.parameters(), **ROUNDING_KW, stochastic_rounding=True,
                       rounding_seed=SEED)
    for p, g in zip(model.parameters(), _bf16_grads()):
        p.grad = distribute_tensor(g, p.device_mesh, p.placements)
    opt.step()
    return {"params": _full_params(model)}


ROUNDING_KW = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01, state_bits=8,
                   min_8bit_size=256)


def test_fsdp2_shards_round_bfloat16_params_with_bits_of_their_own():
    # Each rank's shard draws the generator's bits for its rounding id: the
    # param's index plus the shard's offset in the whole tensor << 32
    # (shard_rounding_id). The float32 result the bits round is that of the
    # same step without rounding, on the whole tensor in one process (the
    # first step's update does not depend on the blocks).
    from fused_rmsprop.testing.rounding import random_bits, round_stochastically

    world = 2
    with tempfile.TemporaryDirectory() as tmp:
        got = _run("rounding", world, tmp)["params"]
    start = [p.detach().float() for p in _bf16_model().parameters()]
    exact = [p.clone().requires_grad_() for p in start]
    for p, g in zip(exact, _bf16_grads()):
        p.grad = g.float()
    FusedRMSprop(exact, **ROUNDING_KW).step()
    differs = 0
    for index, (out, want, begin) in enumerate(zip(got, exact, start)):
        offset = 0
        for out_shard, want_shard in zip(torch.chunk(out, world), torch.chunk(want.detach(), world)):
            bits = random_bits(want_shard.numel(), seed=SEED, id=index + (offset << 32), step=0,
                               slot="param")
            expected = round_stochastically(want_shard.contiguous(), bits)
            assert torch.equal(out_shard.view(torch.int16), expected.view(torch.int16)), (
                index, offset)
            offset += want_shard.numel()
        # (and not what rounding to nearest gives)
        differs += int((out != want.detach().bfloat16()).sum())
    assert differs > 0


TASKS = {"train": _task_train, "resume": _task_resume, "save": _task_save, "load": _task_load,
         "rounding": _task_rounding}
