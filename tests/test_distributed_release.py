"""Gradient release (NOTE: [gradient release]) under DDP and FSDP2, on CPU
with gloo: each rank updates its parameters during backward, after DDP's
allreduce or FSDP2's reduce-scatter, and the result equals one process
running a normal step (float64, 1e-10, the gradients' summation order aside).

Each rank ends with destroy_process_group() and os._exit (NOTE: [gloo
teardown] in examples/_distributed.py)."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import test_distributed as plain
import test_distributed_8bit as eight
from fused_rmsprop import FusedRMSprop

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")

# A bucket smaller than the models: several updates per backward.
BUCKET_BYTES = 2048


def _released(model):
    """After backward with gradient release: no gradient is held."""
    return all(p.grad is None for p in model.parameters())


def _train(model, wrapped, opt, batches, rank, world, accumulate=False, no_sync=None,
           held=True):
    """Steps of the tests' loop; with `accumulate`, two micro-batches per step
    (half the loss each, so their sum is the full batch's gradient), the
    first inside `no_sync` (a context), which keeps the gradients in .grad
    (`held`, DDP) or in FSDP2's unsharded parameters."""
    n = len(batches[0][0]) // world
    for x, y in batches:
        opt.zero_grad()
        x, y = x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
        if accumulate:
            h = n // 2
            with no_sync():
                (0.5 * torch.nn.functional.mse_loss(wrapped(x[:h]), y[:h])).backward()
            assert _released(model) != held
            loss = 0.5 * torch.nn.functional.mse_loss(wrapped(x[h:]), y[h:])
        else:
            loss = torch.nn.functional.mse_loss(wrapped(x), y)
        loss.backward()
        assert _released(model)
        opt.step()


def _task_plain(rank, world, engine):
    """test_distributed's model and KW under DDP or FSDP2, with gradient
    release; returns the full parameters."""
    from torch.distributed.tensor import DTensor

    model = plain._model()
    accumulate = engine.endswith("+accumulate")
    if engine.startswith("ddp"):
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, gradient_as_bucket_view="+view" in engine, bucket_cap_mb=BUCKET_BYTES / 2**20)
        opt = FusedRMSprop(wrapped.parameters(), **plain.KW)
        opt.release_gradients(wrapped)
        no_sync = wrapped.no_sync
    else:
        model = wrapped = plain._sharded_model()
        opt = FusedRMSprop(model.parameters(), **plain.KW)
        opt.release_gradients(bucket_bytes=BUCKET_BYTES)

        class no_sync:  # FSDP2's way: no reduce-scatter, unsharded grads accumulate
            def __enter__(self):
                model.set_requires_gradient_sync(False)

            def __exit__(self, *_):
                model.set_requires_gradient_sync(True)
    _train(model, wrapped, opt, plain._batches(), rank, world, accumulate, no_sync,
           held=engine.startswith("ddp"))
    assert {float(s["step"]) for s in opt.state.values()} == {float(plain.STEPS)}
    return {"params": [p.full_tensor() if isinstance(p, DTensor) else p.detach()
                       for p in model.parameters()]}


def _task_8bit(rank, world, kernel):
    """test_distributed_8bit's FSDP2 model with 8-bit state and release."""
    if kernel == "emulation":
        eight._use_emulated_cuda_kernel()
    model = eight._sharded_model()
    opt = FusedRMSprop(model.parameters(), **eight.KW)
    opt.release_gradients(bucket_bytes=BUCKET_BYTES)
    _train(model, model, opt, eight._batches(), rank, world)
    assert any("square_avg_codes" in s for s in opt.state.values())
    if kernel == "emulation":
        assert torch.ops.fused_rmsprop_emulation.last_launches() > 0
    return {"params": eight._full_params(model)}


def _task_refused(rank, world, _):
    """Plain parameters on 2 ranks without the DDP module: refused (their
    gradients in backward are each rank's own); DDP with
    find_unused_parameters: refused."""
    messages = {}
    model = plain._model()
    for name, ddp in (("plain", None), ("unused", torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=True))):
        opt = FusedRMSprop(model.parameters(), **plain.KW)
        try:
            opt.release_gradients(ddp)
            messages[name] = "no error"
        except ValueError as error:
            messages[name] = str(error)
    # a param group DDP does not reduce, added later: refused, nothing added
    ddp = torch.nn.parallel.DistributedDataParallel(plain._model())
    opt = FusedRMSprop(ddp.parameters(), **plain.KW)
    opt.release_gradients(ddp)
    try:
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))]})
        messages["added"] = "no error"
    except ValueError as error:
        messages["added"] = str(error)
    assert len(opt.param_groups) == 1
    return messages


TASKS = {"plain": _task_plain, "8bit": _task_8bit, "refused": _task_refused}


def _worker(rank, world, init_file, task, arg, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    result = TASKS[task](rank, world, arg)
    if rank == 0:
        torch.save(result, os.path.join(out_dir, "result.pt"))
    plain._finish()


def _run(task, world, arg=None):
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), task, arg, tmp),
                 nprocs=world, join=True)
        return torch.load(os.path.join(tmp, "result.pt"))


@pytest.mark.parametrize("engine", ["ddp", "ddp+view", "fsdp2", "ddp+accumulate",
                                    "fsdp2+accumulate"])
def test_gradient_release_under_ddp_and_fsdp2_equals_one_process(engine):
    # "+view": DDP's gradient_as_bucket_view=True; "+accumulate": two
    # micro-batches per step, the first under DDP's no_sync / FSDP2's
    # set_requires_gradient_sync(False)
    result = _run("plain", 2, engine)
    for got, want in zip(result["params"], plain._reference_params()):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", ["cpu", "emulation"])
def test_gradient_release_under_fsdp2_with_8bit_state_equals_one_process(kernel):
    # 8-bit blocks are cut per shard: the reference is one process with each
    # param split into the ranks' row chunks (test_distributed_8bit)
    if kernel == "emulation":
        pytest.importorskip("fused_rmsprop._C_emulation")
    result = _run("8bit", 2, kernel)
    for got, want in zip(result["params"], eight._shard_reference(2, "momentum+centered+wd")):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradient_release_of_plain_parameters_on_two_ranks_needs_the_ddp_module():
    messages = _run("refused", 2)
    assert "2 ranks" in messages["plain"] and "release_gradients(ddp_model)" in messages["plain"]
    assert "find_unused_parameters=True" in messages["unused"]
    assert "1 parameters of the optimizer are not managed by this DDP" in messages["added"]
