"""FusedRMSprop inside torch's distributed engines, on CPU with gloo.

Each test spawns 1 or 2 ranks, trains the same model on the same global batch
as a single process running torch.optim.RMSprop, and compares parameters. The
models are float64: two correct runs then agree to 1e-10, whatever the CPU and
the order in which the ranks' gradients are summed.

Each rank ends with destroy_process_group() and os._exit (NOTE: [gloo
teardown] in examples/_distributed.py): a rank that crashes at exit fails
the test.
"""

import os
import sys
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fused_rmsprop import FusedRMSprop

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")

KW = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)
STEPS, GLOBAL_BATCH = 4, 16
# "+clip" engines clip by the total gradient norm (FusedRMSprop's max_grad_norm
# against torch.nn.utils.clip_grad_norm_ in one process); the gradients' norm
# is 0.2-0.5 at these steps, so every step is clipped.
CLIP = 0.1


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 33), torch.nn.Tanh(),
                               torch.nn.Linear(33, 2)).double()


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 8, generator=gen, dtype=torch.float64),
             torch.randn(GLOBAL_BATCH, 2, generator=gen, dtype=torch.float64))
            for _ in range(STEPS)]


def _reference_params(clip=None):
    model = _model()
    opt = torch.optim.RMSprop(model.parameters(), **KW)
    norms = []
    for x, y in _batches():
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if clip:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        opt.step()
    assert all(n > clip for n in norms), norms  # every step is clipped
    return [p.detach() for p in model.parameters()]


def _local_batch(x, rank, world):
    n = GLOBAL_BATCH // world
    return x[rank * n:(rank + 1) * n]


def _sharded_model(model=None):
    """`model` (default: _model()) with each Linear and the whole sharded by FSDP2."""
    from torch.distributed.fsdp import fully_shard

    model = _model() if model is None else model
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    return fully_shard(model)


def _train(rank, world, engine, opt_class=FusedRMSprop):
    engine, clipping, _ = engine.partition("+clip")
    kw = dict(KW, max_grad_norm=CLIP) if clipping else KW
    model = _model()
    if engine == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        opt = FusedRMSprop(wrapped.parameters(), **kw)
    elif engine == "zero":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        opt = ZeroRedundancyOptimizer(wrapped.parameters(), optimizer_class=FusedRMSprop, **kw)
    else:
        model = wrapped = _sharded_model()
        opt = opt_class(wrapped.parameters(), **(kw if opt_class is FusedRMSprop else KW))
    for x, y in _batches():
        opt.zero_grad()
        out = wrapped(_local_batch(x, rank, world))
        torch.nn.functional.mse_loss(out, _local_batch(y, rank, world)).backward()
        opt.step()
    return model, opt


def _worker(rank, world, init_file, engine, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    if engine == "checkpoints":
        _check_checkpoints_between_classes(out_dir)
        _finish()
    if engine == "zero+clip":
        # each rank holds a shard of the parameters: no global norm, a clear error
        try:
            _train(rank, world, engine)
            message = "no error"
        except ValueError as error:
            message = str(error)
        # without max_grad_norm it builds, and its clip_grad_norm_ is refused
        from torch.distributed.optim import ZeroRedundancyOptimizer

        zero = ZeroRedundancyOptimizer(_model().parameters(), optimizer_class=FusedRMSprop, **KW)
        try:
            zero.optim.clip_grad_norm_(1.0)
            message_clip = "no error"
        except RuntimeError as error:
            message_clip = str(error)
        if rank == 0:
            torch.save({"message": message, "message_clip": message_clip},
                       os.path.join(out_dir, "result.pt"))
        _finish()
    model, opt = _train(rank, world, engine)
    if engine.startswith("fsdp2"):
        from torch.distributed.tensor import DTensor

        params = [p.full_tensor() if isinstance(p, DTensor) else p for p in model.parameters()]
        state = opt.state_dict()  # sharded state: each rank holds its shards
        steps = {float(s["step"]) for s in state["state"].values()}
        assert steps == {float(STEPS)}, steps
        local = [s["square_avg"] for s in state["state"].values()]
        assert all(isinstance(t, DTensor) for t in local)
    else:
        params = list(model.parameters())
    if engine.startswith("fsdp2") and "+clip" in engine:
        assert isinstance(opt.last_grad_norm, torch.Tensor) and opt.last_grad_norm > CLIP
    if engine == "zero":
        opt.consolidate_state_dict(to=0)
    if rank == 0:
        payload = {"params": [p.detach().clone() for p in params]}
        if engine == "zero":
            payload["state_dict"] = opt.state_dict()
        torch.save(payload, os.path.join(out_dir, "result.pt"))
    _finish()


def _finish():
    """destroy_process_group, then leave without interpreter shutdown: NOTE:
    [gloo teardown] in examples/_distributed.py."""
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check_checkpoints_between_classes(out_dir):
    """FSDP2 on every rank: a checkpoint of either class loads into the
    other, with dcp.save/dcp.load and with full state dicts."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                         get_optimizer_state_dict,
                                                         set_optimizer_state_dict)

    rank, world = dist.get_rank(), dist.get_world_size()
    full = StateDictOptions(full_state_dict=True)
    for i, (saver, loader) in enumerate([(torch.optim.RMSprop, FusedRMSprop),
                                         (FusedRMSprop, torch.optim.RMSprop)]):
        model, opt = _train(rank, world, "fsdp2", saver)
        where = os.path.join(out_dir, f"checkpoint{i}")
        dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=where)
        saved_full = get_optimizer_state_dict(model, opt, options=full)
        for how in ("dcp", "full"):
            model2 = _sharded_model()
            opt2 = loader(model2.parameters(), **KW)
            if how == "dcp":
                state = {"optim": get_optimizer_state_dict(model2, opt2)}
                dcp.load(state, checkpoint_id=where)
                set_optimizer_state_dict(model2, opt2, optim_state_dict=state["optim"])
            else:
                set_optimizer_state_dict(model2, opt2, optim_state_dict=saved_full, options=full)
            for p, p2 in zip(model.parameters(), model2.parameters()):
                s, s2 = opt.state[p], opt2.state[p2]
                assert set(s) == set(s2), (how, saver.__name__, sorted(s), sorted(s2))
                for key in s:
                    a, b = s[key], s2[key]
                    a, b = (getattr(t, "_local_tensor", t) for t in (a, b))
                    assert torch.equal(a.cpu().double(), b.cpu().double()), (how, key)


def _run(engine, world):
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), engine, tmp),
                 nprocs=world, join=True)
        if engine == "checkpoints":
            return None
        return torch.load(os.path.join(tmp, "result.pt"))


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("engine", ["ddp", "zero", "fsdp2"])
def test_distributed_training_matches_single_process_torch(engine, world):
    result = _run(engine, world)
    for got, want in zip(result["params"], _reference_params()):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    if engine == "zero":
        consolidated = result["state_dict"]
        assert len(consolidated["state"]) == len(list(_model().parameters()))
        fresh = FusedRMSprop(_model().parameters(), **KW)
        fresh.load_state_dict(consolidated)  # a consolidated ZeRO checkpoint loads as usual
        assert all(float(s["step"]) == STEPS for s in fresh.state.values())


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("engine", ["ddp", "fsdp2"])
def test_clipping_by_the_global_norm_matches_clip_grad_norm_and_torch(engine, world):
    # FSDP2: each rank's norm of its shards is combined over the mesh into the
    # global one, as torch's clip_grad_norm_ does for DTensors; DDP: every
    # rank already holds the full (averaged) gradients.
    result = _run(engine + "+clip", world)
    for got, want in zip(result["params"], _reference_params(clip=CLIP)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_clipping_inside_zero_redundancy_optimizer_is_refused():
    result = _run("zero+clip", 2)
    message = result["message"]
    assert "ZeroRedundancyOptimizer" in message and "global gradient norm" in message
    assert "inside ZeroRedundancyOptimizer cannot see the global" in result["message_clip"]


def test_checkpoints_move_between_torch_and_fused_with_dcp_on_two_ranks():
    _run("checkpoints", 2)
