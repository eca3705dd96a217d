"""Pure-bfloat16 training: round-to-nearest stalls, stochastic rounding tracks float32.

    python examples/bf16_rounding.py [--out DIR] [--seeds N] [--lr LR] [--epochs E]

The seed's airfoil regression (airfoil.py: standardized data, minibatches of 10,
alpha 0.9, eps 1e-6 inside the sqrt) with a small learning rate, 3e-4 for 20 epochs,
trained three ways from the same start and data order:
  1. float32 parameters and state;
  2. bfloat16 parameters and state, stored with round-to-nearest;
  3. bfloat16 parameters and state, stored with stochastic rounding.
An RMSprop step moves a weight by about lr = 3e-4; half a bfloat16 ulp of a weight
in [0.25, 0.5) is 4.9e-4, so round-to-nearest drops those steps and the weights stop
where their ulp outgrows the step. Stochastic rounding keeps every step in
expectation. Prints the final loss over the 1500 rows for each seed and saves the
loss curves of seed 0.
"""

import argparse
import os

import torch

from _plotting import save_loss_curves
from airfoil import load_data, squared_loss
from fused_rmsprop import FusedRMSprop

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {
    "float32": (torch.float32, False),
    "bfloat16, round to nearest": (torch.bfloat16, False),
    "bfloat16, stochastic rounding": (torch.bfloat16, True),
}


def train(kind, features, labels, seed, lr=3e-4, epochs=20, batch=10, gamma=0.9):
    """Final loss and the loss curve (every 300 examples) of one run."""
    dtype, stochastic = KINDS[kind]
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(features.shape[1], 1, generator=gen) * 0.01).to(dtype).requires_grad_()
    b = torch.zeros(1, dtype=dtype, requires_grad=True)
    opt = FusedRMSprop([w, b], lr=lr, alpha=gamma, eps=1e-6, eps_in_sqrt=True,
                       stochastic_rounding=stochastic, rounding_seed=seed)
    x = features.to(dtype)

    def full_loss():
        with torch.no_grad():
            return squared_loss(features @ w.float() + b.float(), labels).mean().item()

    curve, seen = [(0.0, full_loss())], 0
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=gen)
        for i in range(0, len(order), batch):
            rows = order[i:i + batch]
            # the forward pass in the parameters' dtype, the loss in float32
            squared_loss((x[rows] @ w + b).float(), labels[rows]).mean().backward()
            opt.step()
            opt.zero_grad()
            seen += len(rows)
            if seen % 300 == 0:
                curve.append((seen / len(features), full_loss()))
    return full_loss(), curve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    features, labels = load_data()
    curves = {}
    for kind in KINDS:
        losses = []
        for seed in range(args.seeds):
            loss, curve = train(kind, features, labels, seed, args.lr, args.epochs)
            losses.append(loss)
            if seed == 0:
                curves[kind] = curve
        print(f"{kind:<30} final loss: " + " ".join(f"{x:.4f}" for x in losses)
              + f"  (mean {sum(losses) / len(losses):.4f})")
    save_loss_curves(curves, args.out, "bf16_rounding_loss.png",
                     f"airfoil, lr {args.lr:g}, parameters and state in one dtype")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
