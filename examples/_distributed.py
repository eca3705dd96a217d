"""Ending a torch.distributed run without a crash at interpreter exit.

NOTE: [gloo teardown] A 2-rank gloo run could die after its work was done with
"terminate called without an active exception" (SIGABRT; 14 of 40 runs of
train_ddp.py with torch 2.14.1 while two other processes kept both cores busy;
an earlier measurement saw it with torch.optim.RMSprop as well). A
std::terminate handler preloaded into the ranks showed where: a gloo worker
thread (ProcessGroupGloo::runLoop) destroying a finished allreduce work. The
work keeps a copy of the thread-local state of the thread that launched it;
DDP and FSDP launch their collectives inside loss.backward(), whose
thread-local state holds a Python object (the contextvars.Context that
torch.autograd stashes for the backward pass). Dropping that object takes the
GIL; when the main thread has meanwhile reached interpreter shutdown, Python
ends the worker thread with pthread_exit, whose unwinding hits a noexcept
frame: std::terminate. destroy_process_group() does not prevent it: the
process group outlives it (DDP and FSDP keep references to it), so its
worker threads are never joined, and no collective can wait for a worker to
have released its last work.

So a run ends by destroying the process group and leaving with os._exit after
flushing its output: the interpreter never shuts down while gloo threads may
still touch Python objects. Only the success path does this; an exception
still propagates normally.
"""

import os
import sys

import torch.distributed as dist


def finish(exit_code=0):
    """Destroys the default process group and ends the process (see above)."""
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
