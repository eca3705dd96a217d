"""Data-parallel training with FusedRMSprop: one line differs from torch.optim.RMSprop.

    .venv/bin/torchrun --nproc_per_node 2 examples/train_ddp.py          # CPU, gloo
    torchrun --nproc_per_node 8 examples/train_ddp.py                    # GPUs, nccl

It trains a small MLP on a synthetic regression task, then prints the loss on
rank 0 and a checksum of the parameters, which is the same on every rank.
"""

import argparse
import os

import torch
import torch.distributed as dist

from _distributed import finish
from fused_rmsprop import FusedRMSprop


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    torch.manual_seed(0)  # the same initial weights on every rank
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    model = torch.nn.parallel.DistributedDataParallel(model.to(device))
    # was: torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.9)
    opt = FusedRMSprop(model.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
    target = torch.randn(16, 1, generator=torch.Generator().manual_seed(7))
    for step in range(args.steps):
        x = torch.randn(32, 16, generator=gen)
        y = x @ target
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x.to(device)), y.to(device))
        loss.backward()
        opt.step()
    checksum = sum(p.detach().double().sum() for p in model.parameters()).item()
    if rank == 0:
        print(f"ranks: {world}, steps: {args.steps}, last loss: {loss.item():.4f}, "
              f"parameter checksum: {checksum:.6f}")
    finish()  # destroy_process_group(), then exit without a gloo teardown crash


if __name__ == "__main__":
    main()
