"""Sharded training (FSDP2, fully_shard) with FusedRMSprop.

    .venv/bin/torchrun --nproc_per_node 2 examples/train_fsdp2.py        # CPU, gloo
    torchrun --nproc_per_node 8 examples/train_fsdp2.py                  # GPUs, nccl

The parameters are DTensors, and each rank keeps only its shards and their
optimizer state. FusedRMSprop updates the local shards in its fused kernel,
because the update is elementwise. It also saves and reloads the sharded optimizer
state with torch.distributed.checkpoint.
"""

import argparse
import os
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import fully_shard

from _distributed import finish
from fused_rmsprop import FusedRMSprop


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    if use_cuda:
        model = model.cuda()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    # was: torch.optim.RMSprop(model.parameters(), lr=1e-3, centered=True)
    opt = FusedRMSprop(model.parameters(), lr=1e-3, centered=True)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(1000 + rank)
    target = torch.randn(16, 1, generator=torch.Generator().manual_seed(7))
    for _ in range(args.steps):
        x = torch.randn(32, 16, generator=gen)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x.to(device)), (x @ target).to(device))
        loss.backward()
        opt.step()

    # Save the sharded optimizer state and load it back.
    with tempfile.TemporaryDirectory() as tmp:
        path = [tmp]
        dist.broadcast_object_list(path, src=0)  # every rank writes to rank 0's folder
        dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=path[0])
        state = {"optim": get_optimizer_state_dict(model, opt)}
        dcp.load(state, checkpoint_id=path[0])
        set_optimizer_state_dict(model, opt, optim_state_dict=state["optim"])
        dist.barrier()
    if rank == 0:
        print(f"ranks: {dist.get_world_size()}, steps: {args.steps}, last loss: {loss.item():.4f}, "
              "sharded optimizer state saved and reloaded")
    finish()  # destroy_process_group(), then exit without a gloo teardown crash


if __name__ == "__main__":
    main()
