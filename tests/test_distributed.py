"""FusedRMSprop inside torch's distributed engines, on CPU with gloo.

Each test spawns 1 or 2 ranks, trains the same model on the same global batch
as a single process running torch.optim.RMSprop, and compares parameters.
"""

import os
import tempfile
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fused_rmsprop import FusedRMSprop

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")

KW = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)
STEPS, GLOBAL_BATCH = 4, 16


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 33), torch.nn.Tanh(), torch.nn.Linear(33, 2))


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 8, generator=gen), torch.randn(GLOBAL_BATCH, 2, generator=gen))
            for _ in range(STEPS)]


def _reference_params():
    model = _model()
    opt = torch.optim.RMSprop(model.parameters(), **KW)
    for x, y in _batches():
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def _local_batch(x, rank, world):
    n = GLOBAL_BATCH // world
    return x[rank * n:(rank + 1) * n]


def _worker(rank, world, init_file, engine, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    try:
        model = _model()
        if engine == "ddp":
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
            opt = FusedRMSprop(wrapped.parameters(), **KW)
        elif engine == "zero":
            from torch.distributed.optim import ZeroRedundancyOptimizer

            wrapped = torch.nn.parallel.DistributedDataParallel(model)
            opt = ZeroRedundancyOptimizer(wrapped.parameters(), optimizer_class=FusedRMSprop, **KW)
        else:
            from torch.distributed.fsdp import fully_shard

            for layer in model:
                if isinstance(layer, torch.nn.Linear):
                    fully_shard(layer)
            wrapped = fully_shard(model)
            opt = FusedRMSprop(wrapped.parameters(), **KW)
        for x, y in _batches():
            opt.zero_grad()
            out = wrapped(_local_batch(x, rank, world))
            torch.nn.functional.mse_loss(out, _local_batch(y, rank, world)).backward()
            opt.step()
        if engine == "fsdp2":
            from torch.distributed.tensor import DTensor

            params = [p.full_tensor() if isinstance(p, DTensor) else p for p in model.parameters()]
            state = opt.state_dict()  # sharded state: each rank holds its shards
            steps = {float(s["step"]) for s in state["state"].values()}
            assert steps == {float(STEPS)}, steps
            local = [s["square_avg"] for s in state["state"].values()]
            assert all(isinstance(t, DTensor) for t in local)
        else:
            params = list(model.parameters())
        if engine == "zero":
            opt.consolidate_state_dict(to=0)
        if rank == 0:
            payload = {"params": [p.detach().clone() for p in params]}
            if engine == "zero":
                payload["state_dict"] = opt.state_dict()
            torch.save(payload, os.path.join(out_dir, "result.pt"))
        # Tear down together. Once in about 150 two-rank runs, rank 1 of the ddp
        # test died with "terminate called without an active exception" (SIGABRT);
        # our guess, not confirmed, is gloo teardown while rank 0 was still busy.
        dist.barrier()
        open(os.path.join(out_dir, f"done{rank}"), "w").close()
    finally:
        dist.destroy_process_group()


def _run(engine, world):
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), engine, tmp),
                     nprocs=world, join=True)
        except mp.ProcessExitedException as error:
            # Only a crash after every rank finished its work and passed the final
            # barrier (in destroy_process_group, inside gloo) is tolerated; the
            # results are still checked by the caller.
            finished = all(os.path.exists(os.path.join(tmp, f"done{r}")) for r in range(world))
            if not finished:
                raise
            warnings.warn(f"a rank crashed in process-group teardown after its work: {error}")
        return torch.load(os.path.join(tmp, "result.pt"))


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("engine", ["ddp", "zero", "fsdp2"])
def test_distributed_training_matches_single_process_torch(engine, world):
    result = _run(engine, world)
    for got, want in zip(result["params"], _reference_params()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if engine == "zero":
        consolidated = result["state_dict"]
        assert len(consolidated["state"]) == len(list(_model().parameters()))
        fresh = FusedRMSprop(_model().parameters(), **KW)
        fresh.load_state_dict(consolidated)  # a consolidated ZeRO checkpoint loads as usual
        assert all(float(s["step"]) == STEPS for s in fresh.state.values())
