"""Clipping under mixed precision, inside the step: the digits MLP trained with
autocast and a GradScaler, clipped by the total gradient norm.

    python examples/clipping_amp.py [--epochs N] [--max-norm X]

Two runs from the same weights and data order:

* torch's recipe: scaler.scale(loss).backward(); scaler.unscale_(opt);
  torch.nn.utils.clip_grad_norm_(params, max_norm); scaler.step(opt) with
  torch.optim.RMSprop;
* FusedRMSprop(..., max_grad_norm=max_norm): scaler.scale(loss).backward();
  scaler.step(opt). The step reads the norm of the scaled gradients, divides
  by the scale, and multiplies each gradient by the clip coefficient inside
  its kernel. p.grad is never written.

The runs start equal and drift apart by rounding: the fused norm is summed in
float64, torch's in float32, and bfloat16 autocast turns last-bit differences
in the weights into different forward passes. They reach the same quality
(tests/test_clipping.py shows equality in float64).

Lightning refuses its own gradient clipping (gradient_clip_val) under mixed
precision for optimizers that unscale inside their step, as torch's fused
optimizers and FusedRMSprop do. With FusedRMSprop, leave gradient_clip_val
unset and return FusedRMSprop(..., max_grad_norm=...) from
configure_optimizers: the clipping then happens in the step.
"""

import argparse
import time

import torch
from digits import data  # the same split of scikit-learn's digits

from fused_rmsprop import FusedRMSprop

ARGS = dict(lr=3e-3, momentum=0.9, centered=True, weight_decay=1e-4)


def run(fused, epochs, max_norm, x, y):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    if fused:
        opt = FusedRMSprop(model.parameters(), max_grad_norm=max_norm, **ARGS)
    else:
        opt = torch.optim.RMSprop(model.parameters(), **ARGS)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    gen = torch.Generator().manual_seed(1)
    losses, norms, clip_time = [], [], 0.0
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x[idx]).float(), y[idx])
            scaler.scale(loss).backward()
            start = time.perf_counter()
            if fused:
                scaler.step(opt)
                norms.append(float(opt.last_grad_norm))
            else:
                scaler.unscale_(opt)
                norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
                scaler.step(opt)
            scaler.update()
            clip_time += time.perf_counter() - start
            losses.append(loss.item())
    return losses, norms, clip_time, model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-norm", type=float, default=0.5)
    args = parser.parse_args(argv)
    (x, y), (x_test, y_test) = data()
    norms = {}
    for fused in (False, True):
        name = "FusedRMSprop(max_grad_norm)" if fused else "unscale_+clip_grad_norm_+RMSprop"
        losses, norms[fused], seconds, model = run(fused, args.epochs, args.max_norm, x, y)
        clipped = sum(n > args.max_norm for n in norms[fused])
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        per_epoch = len(losses) // args.epochs
        print(f"{name:<34} last-epoch loss {sum(losses[-per_epoch:]) / per_epoch:.4f}, "
              f"test accuracy {accuracy:.3f}, {clipped} of {len(losses)} steps clipped, "
              f"clip + step {1e3 * seconds:.1f} ms")
    # (where rounding differences never grow past 1e-6, they agree on every step)
    steps = len(norms[True])
    first = next((i for i, (a, b) in enumerate(zip(norms[False], norms[True]))
                  if abs(a - b) > 1e-6 * b), steps)
    print(f"the gradient norms of the two runs agree to 1e-6 for the first {first} of "
          f"{steps} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
