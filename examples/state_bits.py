"""Does 8-bit optimizer state train as well as full precision? Four tasks.

    python examples/state_bits.py [--out DIR] [--quick]

Each task trains from the same start, in the same data order, with
FusedRMSprop at full precision and with state_bits=8 (min_8bit_size=0, so
every state is 8-bit), and prints the final loss of each over several seeds:
  1. airfoil: the seed's linear regression (lr 0.01, alpha 0.9, eps 1e-6
     inside the sqrt, batch 10, 2 epochs), 10 seeds;
  2. digits: scikit-learn's 8x8 digits, the MLP of examples/digits.py
     (momentum 0.9, centered, weight decay 1e-4), 4 epochs, 3 seeds: the loss
     over the 1437 training images;
  3. a small transformer language model (2 layers, width 64, 4 heads,
     randomly initialised) trained for 300 steps on the bytes of a source file
     that ships with torch (torch/optim/optimizer.py), 2 seeds: the mean loss
     over the last 50 steps, and the loss curves;
  4. a stress case: least squares on 4096 weights (one tensor) whose inputs
     have scale 1, but 16 of them scale 30, so squared gradients span 6
     decades within the tensor; 3 seeds: the test loss after 400 steps. A
     naive 8-bit code (one absmax per tensor, linear int8) is run too: its
     small square_avg values round to 0, their steps become 10 lr, and it
     fails; block scales and the log-linear code hold.
"""

import argparse
import inspect
import math
import os
import sys

import torch

from _plotting import pyplot, save
from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing.quantized import QuantizedReferenceRMSprop

HERE = os.path.dirname(os.path.abspath(__file__))


def make(kind):
    def build(params, **kw):
        if kind == "8-bit":
            return FusedRMSprop(params, state_bits=8, min_8bit_size=0, **kw)
        if kind == "per-tensor int8":
            return PerTensorLinear(params, min_8bit_size=0, **kw)
        return FusedRMSprop(params, **kw)
    return build


class PerTensorLinear(QuantizedReferenceRMSprop):
    """The naive 8-bit code: one absmax scale per tensor, linear int8 codes."""

    def quantize(self, x, signed):
        x = x.float()
        scale = x.abs().max().reshape(1)
        codes = torch.round(x / scale.clamp(min=1e-30) * 127).clamp(-127, 127)
        return codes.to(torch.int8), scale

    def dequantize(self, codes, scales, signed):
        return codes.float() / 127 * scales


def airfoil(kind, seed, epochs=2):
    from airfoil import load_data, squared_loss

    x, y = load_data()
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(x.shape[1], 1, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    opt = make(kind)([w, b], lr=0.01, alpha=0.9, eps=1e-6, eps_in_sqrt=True)
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=gen).split(10):
            squared_loss(x[rows] @ w + b, y[rows]).mean().backward()
            opt.step()
            opt.zero_grad()
    with torch.no_grad():
        return squared_loss(x @ w + b, y).mean().item(), None


def digits(kind, seed, epochs=4):
    from digits import ARGS, data

    (x, y), _ = data()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = make(kind)(model.parameters(), **ARGS)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y).item(), None


class TinyLM(torch.nn.Module):
    def __init__(self, width=64, layers=2, heads=4, context=64):
        super().__init__()
        self.embed = torch.nn.Embedding(256, width)
        self.position = torch.nn.Parameter(torch.randn(context, width) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                                 batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, 256)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, tokens):
        h = self.embed(tokens) + self.position[:tokens.shape[1]]
        return self.head(self.blocks(h, mask=self.mask, is_causal=True))


def language_model(kind, seed, steps=300, batch=16, context=64):
    import torch.optim.optimizer as source

    text = torch.tensor(list(inspect.getsource(source).encode()), dtype=torch.long)
    torch.manual_seed(seed)
    model = TinyLM(context=context)
    opt = make(kind)(model.parameters(), lr=1e-3, alpha=0.99)
    gen = torch.Generator().manual_seed(seed + 1)
    curve = []
    for _ in range(steps):
        starts = torch.randint(0, len(text) - context - 1, (batch,), generator=gen)
        window = torch.stack([text[s:s + context + 1] for s in starts.tolist()])
        logits = model(window[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), window[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return sum(curve[-50:]) / 50, curve


def stress(kind, seed, steps=400, width=4096, lr=2e-2):
    gen = torch.Generator().manual_seed(seed)
    scale = torch.ones(width)
    scale[torch.randperm(width, generator=gen)[:16]] = 30.0
    w_true = torch.randn(width, generator=gen) / scale
    w = torch.zeros(width, requires_grad=True)
    opt = make(kind)([w], lr=lr, alpha=0.99)
    x_test = torch.randn(2048, width, generator=gen) * scale
    curve = []
    for _ in range(steps):
        x = torch.randn(64, width, generator=gen) * scale
        y = x @ w_true + 0.1 * torch.randn(64, generator=gen)
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    with torch.no_grad():
        return ((x_test @ (w - w_true)) ** 2).mean().item(), curve


TASKS = {  # name: (function, seeds, what is printed, kinds)
    "airfoil": (airfoil, 10, "final loss", ("full", "8-bit")),
    "digits": (digits, 3, "final training loss", ("full", "8-bit")),
    "transformer LM": (language_model, 2, "loss, last 50 steps", ("full", "8-bit")),
    "stress": (stress, 3, "test loss", ("full", "8-bit", "per-tensor int8")),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    parser.add_argument("--quick", action="store_true",
                        help="fewer seeds (airfoil 3, others 1): for the tests")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    curves = {}
    for task, (fn, seeds, what, kinds) in TASKS.items():
        seeds = (3 if task == "airfoil" else 1) if args.quick else seeds
        means = {}
        for kind in kinds:
            results = [fn(kind, seed) for seed in range(seeds)]
            losses = [r[0] for r in results]
            means[kind] = sum(losses) / len(losses)
            if results[0][1] is not None:
                curves.setdefault(task, {})[kind] = results[0][1]
            print(f"{task:<15} {kind:<16} {what}: "
                  f"{' '.join(f'{x:.4f}' for x in losses)} (mean {means[kind]:.4f})", flush=True)
        for kind in kinds[1:]:
            gap = 100 * (means[kind] - means["full"]) / means["full"]
            print(f"{task:<15} {kind:<16} against full precision: {gap:+.2f} %", flush=True)
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4))
        for ax, (task, by_kind) in zip(axes, curves.items()):
            for kind, curve in by_kind.items():
                window = 10
                smooth = [sum(curve[max(0, i - window):i + 1]) / len(curve[max(0, i - window):i + 1])
                          for i in range(len(curve))]
                ax.plot(smooth, label=kind)
            ax.set_title(task)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (10-step mean)")
            ax.set_yscale("log")
            ax.legend()
        save(fig, args.out, "state_bits_loss.png", "loss curves")
    return 0 if all(math.isfinite(v) for v in means.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
