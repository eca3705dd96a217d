"""The seed's 2-D RMSProp experiments, run with FusedRMSprop.

    python examples/seed_2d.py [--out DIR]

1. The trace on f = 0.1 x1^2 + 2 x2^2 from (-5, -2), with lr 0.4, gamma 0.9 and eps
   1e-6 inside the sqrt, for 20 steps. It prints the seed's line
   `epoch 20, x1: -0.010599, x2: 0.000000` and plots the trajectory.
2. The leaky-average weights (1 - gamma) gamma^t for several gamma.
3. The section's exercises: gamma = 1, the rotated problem
   f = 0.1 (x1 + x2)^2 + 2 (x1 - x2)^2, and the sensitivity to gamma.
"""

import argparse
import os

import torch

from _plotting import pyplot, save
from fused_rmsprop import FusedRMSprop

HERE = os.path.dirname(os.path.abspath(__file__))


def f_2d(x):
    return 0.1 * x[0] ** 2 + 2 * x[1] ** 2


def f_rotated(x):
    return 0.1 * (x[0] + x[1]) ** 2 + 2 * (x[0] - x[1]) ** 2


def trace(f, gamma=0.9, lr=0.4, steps=20):
    x = torch.tensor([-5.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = FusedRMSprop([x], lr=lr, alpha=gamma, eps=1e-6, eps_in_sqrt=True)
    points = [x.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        f(x).backward()
        opt.step()
        points.append(x.detach().clone())
    return torch.stack(points)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    args = parser.parse_args(argv)

    points = trace(f_2d)
    x1, x2 = points[-1].tolist()
    print(f"epoch 20, x1: {x1:f}, x2: {x2:f}")

    # Exercise: gamma = 1 never updates the square average from its start at 0, so
    # the step is lr * g / sqrt(eps): huge, and the iterates oscillate or blow up.
    one = trace(f_2d, gamma=1.0)
    print(f"gamma = 1: after 20 steps x = ({one[-1, 0]:.3g}, {one[-1, 1]:.3g}); "
          "s stays 0, so every step is lr * g / sqrt(eps) and the iterates diverge")
    rotated = trace(f_rotated)
    print(f"rotated problem: after 20 steps f = {f_rotated(rotated[-1]):.3g} "
          f"(axis-aligned: {f_2d(points[-1]):.3g}); the per-coordinate scaling no longer "
          "matches the problem's axes, so convergence is slower")
    finals = {g: f_2d(trace(f_2d, gamma=g)[-1]).item() for g in (0.5, 0.7, 0.9, 0.95, 0.99)}
    print("sensitivity to gamma, f after 20 steps: "
          + ", ".join(f"{g}: {v:.2e}" for g, v in finals.items()))
    print("small gamma makes s track the latest g^2, so every step is about lr long whatever "
          "the gradient and the iterates keep bouncing around the minimum; large gamma "
          "remembers the larger early gradients, so steps shrink as the gradient does")

    plt = pyplot()
    if plt is None:
        return 0
    fig, axes = plt.subplots(1, 5, figsize=(25, 4))
    grid = torch.meshgrid(torch.linspace(-5.5, 1, 100), torch.linspace(-3, 1, 100), indexing="ij")
    for ax, (name, pts, f) in zip(axes[:2], (("f = 0.1 x1^2 + 2 x2^2", points, f_2d),
                                             ("rotated", rotated, f_rotated))):
        ax.contour(grid[0], grid[1], f(grid), colors="#1f77b4")
        ax.plot(pts[:, 0], pts[:, 1], "-o", color="#ff7f0e")
        ax.set_title(f"RMSProp trace, {name}")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    t = torch.arange(40, dtype=torch.float64)
    for g in (0.95, 0.9, 0.8, 0.7):
        axes[2].plot(t, (1 - g) * g ** t, label=f"gamma = {g:.2f}")
    axes[2].set_title("weights of past squared gradients")
    axes[2].set_xlabel("time")
    axes[2].legend()
    axes[3].semilogy(list(finals), list(finals.values()), "-o")
    axes[3].set_title("f after 20 steps against gamma")
    axes[3].set_xlabel("gamma")
    axes[4].semilogy(one.abs().max(dim=1).values.clamp_min(1e-300), "-o", label="gamma = 1")
    axes[4].semilogy(points.abs().max(dim=1).values.clamp_min(1e-300), "-o", label="gamma = 0.9")
    axes[4].set_title("max |x_i| per step: gamma = 1 diverges")
    axes[4].set_xlabel("step")
    axes[4].legend()
    save(fig, args.out, "seed_2d.png", "plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
