"""The seed's training example: linear regression on the airfoil self-noise data.

    python examples/airfoil.py [--out DIR] [--seed N]

It follows the d2l procedure. Each column is standardized and the first 1500 rows are
kept. Training minimizes squared loss / 2 over shuffled minibatches of 10 for 2
epochs, with lr 0.01 and gamma 0.9, starting from weights drawn from N(0, 0.01). It
trains three ways, from the same start and in the same data order:
  1. the seed's from-scratch RMSProp update;
  2. FusedRMSprop with the seed's convention (eps = 1e-6 inside the sqrt);
  3. torch.optim.RMSprop (alpha 0.9, its own eps 1e-8 outside the sqrt).
It prints the final loss over the 1500 rows and the time per epoch of each, and saves
the loss curves. The seed reports a final loss of about 0.244 (0.243 to 0.246 across
its three frameworks).
"""

import argparse
import os
import time

import torch

from _plotting import save_loss_curves
from fused_rmsprop import FusedRMSprop

HERE = os.path.dirname(os.path.abspath(__file__))


def load_data(rows=1500):
    raw = torch.tensor([[float(v) for v in line.split("\t")]
                        for line in open(os.path.join(HERE, "data", "airfoil_self_noise.dat"))],
                       dtype=torch.float32)
    data = (raw - raw.mean(dim=0)) / raw.std(dim=0, unbiased=False)
    return data[:rows, :-1], data[:rows, -1:]


def squared_loss(y_hat, y):
    return (y_hat - y) ** 2 / 2


def seed_rmsprop(params, states, lr, gamma, eps=1e-6):
    """The seed's update, written out (s = gamma s + (1 - gamma) g^2, p -= lr g / sqrt(s + eps))."""
    with torch.no_grad():
        for p, s in zip(params, states):
            s[:] = gamma * s + (1 - gamma) * p.grad ** 2
            p[:] -= lr * p.grad / torch.sqrt(s + eps)
            p.grad.zero_()


def train(kind, features, labels, seed, epochs=2, batch=10, lr=0.01, gamma=0.9):
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(features.shape[1], 1, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    order = [torch.randperm(len(features), generator=gen) for _ in range(epochs)]
    if kind == "seed":
        states = [torch.zeros_like(w), torch.zeros_like(b)]
        step = lambda: seed_rmsprop([w, b], states, lr, gamma)  # noqa: E731
    else:
        opt = (FusedRMSprop([w, b], lr=lr, alpha=gamma, eps=1e-6, eps_in_sqrt=True)
               if kind == "fused" else torch.optim.RMSprop([w, b], lr=lr, alpha=gamma))

        def step():
            opt.step()
            opt.zero_grad()

    def full_loss():
        with torch.no_grad():
            return squared_loss(features @ w + b, labels).mean().item()

    curve, seen, elapsed = [(0, full_loss())], 0, 0.0
    for idx in order:
        start = time.perf_counter()
        for i in range(0, len(idx), batch):
            rows = idx[i:i + batch]
            squared_loss(features[rows] @ w + b, labels[rows]).mean().backward()
            step()
            seen += len(rows)
            if seen % 200 == 0:  # as the seed: the loss over all rows every 200 examples
                elapsed += time.perf_counter() - start
                curve.append((seen / len(features), full_loss()))
                start = time.perf_counter()
        elapsed += time.perf_counter() - start
    return full_loss(), elapsed / epochs, curve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    features, labels = load_data()
    results = {}
    for kind, name in (("seed", "seed's update (from scratch)"),
                       ("fused", "FusedRMSprop, seed convention"),
                       ("torch", "torch.optim.RMSprop")):
        loss, per_epoch, curve = train(kind, features, labels, args.seed)
        results[name] = curve
        print(f"{name:<32} loss: {loss:.3f}, {per_epoch:.3f} sec/epoch")
    save_loss_curves(results, args.out, "airfoil_loss.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
