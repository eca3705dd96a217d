"""A real training run: scikit-learn's 8x8 digits, FusedRMSprop against torch.optim.RMSprop.

    python examples/digits.py [--epochs N] [--out DIR]

The data ships inside scikit-learn, so nothing is downloaded. It is 1797 images, split
1437 for training and 360 for testing. The model is a small MLP, trained twice from the
same initial weights in the same data order: once with FusedRMSprop and once with
torch.optim.RMSprop, with the same arguments. Each epoch prints the training loss, the
test accuracy and the time spent in optimizer.step(). The loss curves are saved to one
plot. The two curves coincide.
"""

import argparse
import os
import time

import torch
from sklearn.datasets import load_digits
from tqdm import tqdm

from _plotting import pyplot, save
from fused_rmsprop import FusedRMSprop

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = dict(lr=1e-3, alpha=0.99, momentum=0.9, centered=True, weight_decay=1e-4)


def data():
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return (x[:1437], y[:1437]), (x[1437:], y[1437:])


def run(optimizer_class, epochs, train, test):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = optimizer_class(model.parameters(), **ARGS)
    gen = torch.Generator().manual_seed(1)
    losses, name = [], optimizer_class.__name__
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train[0]), generator=gen)
        batches = order.split(32)
        step_time, total = 0.0, 0.0
        for idx in tqdm(batches, desc=f"{name} epoch {epoch}", leave=False):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(train[0][idx]), train[1][idx])
            loss.backward()
            start = time.perf_counter()
            opt.step()
            step_time += time.perf_counter() - start
            total += loss.item() * len(idx)
            losses.append(loss.item())
        with torch.no_grad():
            accuracy = (model(test[0]).argmax(1) == test[1]).float().mean().item()
        print(f"{name:<13} epoch {epoch}: loss {total / len(train[0]):.4f}, "
              f"test accuracy {accuracy:.3f}, optimizer.step() {1e3 * step_time:.1f} ms")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    args = parser.parse_args(argv)
    train, test = data()
    fused = run(FusedRMSprop, args.epochs, train, test)
    reference = run(torch.optim.RMSprop, args.epochs, train, test)
    gap = max(abs(a - b) for a, b in zip(fused, reference))
    print(f"largest difference between the two loss curves: {gap:.2e}")
    plt = pyplot()
    if plt is None:
        return 0
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(reference, lw=3, alpha=0.5, label="torch.optim.RMSprop")
    ax.plot(fused, lw=1, label="FusedRMSprop")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_yscale("log")
    ax.legend()
    save(fig, args.out, "digits_loss.png", "loss curves")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
