"""A short CUDA workload for compute-sanitizer (`make sanitize`, needs a GPU).

Every dtype, float32 state for half params, momentum and centered state,
sizes around the vector width and the chunk, views whose storage offset
breaks the 128-bit path, GradScaler tensors, a Tensor lr, complex and
channels_last params through the optimizer, and a list that needs several
launches. Every tensor sits in its own buffer followed by a guard region
that must still hold its fill value afterwards, so an out-of-bounds write is
caught even without the sanitizer. Run it with PYTORCH_NO_CUDA_MEMORY_CACHING=1
so each buffer is its own allocation and memcheck sees any access past it.
Exit status 0: no guard was touched. `--device cpu` runs the same workload on
the CPU kernel (the test suite does, so the script is known to run before a
GPU is at hand)."""

import itertools
import sys

import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop._ops import rmsprop_

SIZES = (1, 3, 4, 5, 63, 1024 + 3, 65536 - 1, 65536 + 5)
GUARD, FILL = 32, 3.0
DEVICE = "cuda"


class Guarded:
    """Views into buffers that each end with a guard of GUARD elements."""

    def __init__(self):
        self.buffers = []

    def __call__(self, n, dtype, offset, positive=False):
        buf = torch.full((offset + n + GUARD,), FILL, dtype=dtype, device=DEVICE)
        view = buf[offset: offset + n]
        values = torch.randn(n, device=DEVICE)
        view.copy_(values.abs() + 0.1 if positive else values)
        self.buffers.append(buf)
        return view

    def touched(self):
        return sum(int(not torch.all(b[-GUARD:] == FILL)) for b in self.buffers)


def op_calls(guarded):
    calls = 0
    half = (torch.bfloat16, torch.float16)
    for dtype, offset, (momentum, centered) in itertools.product(
            (torch.float64, torch.float32) + half, (0, 1, 3), ((0.0, False), (0.9, True))):
        for state_dtype in (dtype, torch.float32) if dtype in half else (dtype,):
            lists = ([], [], [], [], [], [])
            for n in SIZES:
                lists[0].append(guarded(n, dtype, offset))
                lists[1].append(guarded(n, dtype, (offset + 1) % 4))
                lists[2].append(guarded(n, state_dtype, offset, positive=True))
                if momentum:
                    lists[3].append(guarded(n, state_dtype, offset))
                if centered:
                    lists[4].append(guarded(n, state_dtype, offset))
                lists[5].append(torch.zeros((), device=DEVICE))
            rmsprop_(*lists, lr=0.0, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=momentum,
                     maximize=False, grad_scale=torch.full((), 8.0, device=DEVICE),
                     found_inf=torch.zeros((), device=DEVICE),
                     lr_tensor=torch.full((), 1e-3, device=DEVICE))
            calls += 1
    return calls


def optimizer_steps():
    params = [torch.randn(i % 7 + 1, device=DEVICE, requires_grad=True) for i in range(400)]
    params += [torch.randn(70001, device=DEVICE, requires_grad=True),
               torch.randn(8, 3, 3, 3, device=DEVICE).to(memory_format=torch.channels_last)
               .requires_grad_(),
               torch.randn(33, dtype=torch.complex64, device=DEVICE, requires_grad=True)]
    steps = 0
    for kw in (dict(), dict(momentum=0.9, centered=True, capturable=True)):
        opt = FusedRMSprop(params, **kw)
        for _ in range(2):
            for p in params:
                p.grad = torch.randn_like(p)
            opt.step()
            steps += 1
    return steps


def main(argv=None):
    global DEVICE
    argv = sys.argv[1:] if argv is None else argv
    DEVICE = argv[1] if argv[:1] == ["--device"] and len(argv) == 2 else "cuda"
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("sanitizer_step: no CUDA device visible")
        return 2
    guarded = Guarded()
    calls = op_calls(guarded)
    steps = optimizer_steps()
    if DEVICE != "cpu":
        torch.cuda.synchronize()
    touched = guarded.touched()
    print(f"sanitizer_step: {calls} op calls, {steps} optimizer steps, "
          f"{len(guarded.buffers)} guarded buffers, {touched} guards overwritten")
    return 1 if touched else 0


if __name__ == "__main__":
    sys.exit(main())
