"""What a checkpoint costs in memory and on disk, with 8-bit state and without.

    .venv/bin/python bench/checkpoint_memory.py                  # 16M float32 elements
    .venv/bin/python bench/checkpoint_memory.py --elements 1e6

For torch.optim.RMSprop and FusedRMSprop with full-precision and with 8-bit
state (momentum and centered: three state tensors), each phase runs in a
fresh process on the CPU and reports, in bytes per parameter element:

  state   the state a first step creates (the process's peak resident memory,
          ru_maxrss, after the step less before it)
  save    the growth of that peak during state_dict() and torch.save
  load    the growth of the peak during torch.load and load_state_dict, in a
          process whose optimizer has taken a step (its state exists)
  file    the checkpoint file's size

A state_dict holds torch.optim.RMSprop's float32 state whatever the storage
(NOTE: [8-bit checkpoints] in fused_rmsprop/_checkpoint.py), so with 8-bit
state a save makes float32 copies of it and a load reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

import torch

OPTIMIZERS = ("torch", "fused", "fused-8bit")
KW = dict(lr=1e-3, momentum=0.9, centered=True)


def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _optimizer(kind, elements, via, init_file):
    """(model, optimizer): 4 parameters, FSDP2 on one gloo rank for DCP
    (`init_file`: its rendezvous, a file that does not exist yet)."""
    from fused_rmsprop import FusedRMSprop

    model = torch.nn.ParameterList([torch.randn(elements // 4) for _ in range(4)])
    if via == "dcp":
        import torch.distributed as dist
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0,
                                world_size=1)
        fully_shard(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    if kind == "torch":
        return model, torch.optim.RMSprop(model.parameters(), **KW)
    return model, FusedRMSprop(model.parameters(), **KW,
                               state_bits=8 if kind == "fused-8bit" else None)


def _save(model, opt, path, via):
    if via == "torch.save":
        torch.save(opt.state_dict(), path)
        return os.path.getsize(path)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=path)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def _load(model, opt, path, via):
    if via == "torch.save":
        opt.load_state_dict(torch.load(path))
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict,
                                                         set_optimizer_state_dict)

    state = {"optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=path)
    set_optimizer_state_dict(model, opt, optim_state_dict=state["optim"])


def _phase(kind, phase, elements, path, via):
    model, opt = _optimizer(kind, elements, via, f"{path}.{phase}.init")
    before = _peak()
    opt.step()
    out = {"state": _peak() - before}
    before = _peak()
    if phase == "save":
        out["file"] = _save(model, opt, path, via)
        out["save"] = _peak() - before
    else:
        _load(model, opt, path, via)
        out["load"] = _peak() - before
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=float, default=16e6)
    parser.add_argument("--via", choices=("torch.save", "dcp"), nargs="+",
                        default=["torch.save", "dcp"],
                        help="torch.save of state_dict(), or dcp.save of "
                        "get_optimizer_state_dict under FSDP2 on one gloo rank")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    elements = int(args.elements)
    if args.phase:
        torch.set_num_threads(1)
        out = _phase(args.optimizer, args.phase, elements, args.file, args.via[0])
        print(json.dumps(out))
        os._exit(0)  # (a gloo process group: NOTE: [gloo teardown] in examples/_distributed.py)
    print(f"{elements} float32 elements (4 tensors), momentum + centered; bytes per element")
    print(f"{'checkpoint':<11} {'optimizer':<11} {'state':>6} {'save':>6} {'load':>6} "
          f"{'file':>6}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for via in args.via:
            for kind in OPTIMIZERS:
                path = os.path.join(tmp, f"{kind}-{via}")
                row = {}
                for phase in ("save", "load"):
                    done = subprocess.run(
                        [sys.executable, __file__, "--elements", str(elements), "--phase",
                         phase, "--optimizer", kind, "--file", path, "--via", via],
                        check=True, capture_output=True, text=True)
                    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                rows[via, kind] = r = {k: v / elements for k, v in row.items()}
                print(f"{via:<11} {kind:<11} {r['state']:6.2f} {r['save']:6.2f} "
                      f"{r['load']:6.2f} {r['file']:6.2f}")
    return rows


if __name__ == "__main__":
    main()
