"""Bytes per parameter: a GPT-2-shaped language model trained on the CPU with
torch.optim.RMSprop and with FusedRMSprop's memory features.

    python examples/gpt_memory.py [--steps 300] [--out DIR] [--quick]

The model has GPT-2's layout (token and position embeddings, pre-norm blocks
of causal self-attention and a 4x GELU MLP, a final LayerNorm, the output
head tied to the token embedding), built from a small config and randomly
initialised; it reads bytes (vocabulary 256) of Python source files that ship
with torch (torch/optim/*.py), the same batches in every run. Each run is a
fresh process (so its memory is its own) and prints:

  held    bytes per parameter held between steps (after step(), in the usual
          loop whose zero_grad() comes before the next forward): the
          parameters, their gradients and the optimizer state, counted from
          the tensors (each storage once)
  peak    the most resident memory of one training step (forward, backward
          and update; the process's peak, VmHWM, reset before the step and
          read after it) above the process's memory before the model existed:
          parameters, state, activations, gradients and what the optimizer
          allocates
  loss    the mean training loss over the last 20 steps, and its ratio to the
          float32 run of torch.optim.RMSprop

The runs: torch.optim.RMSprop (float32); FusedRMSprop (float32), and with
gradient release; bfloat16 parameters with stochastic rounding and 8-bit state
(FusedRMSprop(stochastic_rounding=True, state_bits=8)), and with gradient
release (1 MiB buckets). A plot of the loss curves goes to DIR/gpt_memory_loss.png,
the numbers to DIR/gpt_memory.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys

import torch
import torch.nn.functional as F

from fused_rmsprop import FusedRMSprop

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = dict(n_layer=4, n_embd=192, n_head=6, n_ctx=128, vocab=256)
QUICK = dict(n_layer=2, n_embd=96, n_head=4, n_ctx=64, vocab=256)
LR, BATCH = 1e-3, 8
# a bucket of 1 MiB of gradients: several updates per backward at this size
RELEASE_BUCKET_BYTES = 2**20
RUNS = {
    "torch.optim.RMSprop": dict(dtype="float32"),
    "FusedRMSprop": dict(dtype="float32"),
    "FusedRMSprop + release": dict(dtype="float32", release=True),
    "bf16 + SR + 8-bit": dict(dtype="bfloat16", sr=True, bits=8),
    "bf16 + SR + 8-bit + release": dict(dtype="bfloat16", sr=True, bits=8, release=True),
}


class Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.c_attn, self.attn_proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.c_fc, self.mlp_proj = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in self.c_attn(self.ln_1(x)).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, n_layer, n_embd, n_head, n_ctx, vocab):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(vocab, n_embd), torch.nn.Embedding(n_ctx, n_embd)
        self.h = torch.nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = torch.nn.LayerNorm(n_embd)
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                torch.nn.init.normal_(p, std=std)

    def forward(self, tokens):
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # the head tied to the embedding


def text():
    files = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "optim", "*.py")))
    data = b"".join(open(f, "rb").read() for f in files)
    return torch.tensor(list(data), dtype=torch.long)


def _status(field):
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


def held_bytes(model, opt):
    """Bytes of the parameters, their gradients and the optimizer state (each
    storage once)."""
    tensors = [p for p in model.parameters()] + [p.grad for p in model.parameters()
                                                 if p.grad is not None]
    tensors += [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def train(run, config, steps, seed=0):
    """One run in this process: {curve, held, peak, params}."""
    options = RUNS[run]
    data, context = text(), config["n_ctx"]
    base = _status("VmRSS")  # before the model exists
    torch.manual_seed(seed)
    dtype = getattr(torch, options["dtype"])
    model = GPT(**config).to(dtype)
    if run == "torch.optim.RMSprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=LR)
    else:
        opt = FusedRMSprop(model.parameters(), lr=LR, stochastic_rounding=options.get("sr", False),
                           state_bits=options.get("bits"))
        if options.get("release"):
            opt.release_gradients(bucket_bytes=RELEASE_BUCKET_BYTES)
    gen = torch.Generator().manual_seed(seed + 1)
    curve, held, peaks = [], [], []
    for step in range(steps):
        starts = torch.randint(0, len(data) - context - 1, (BATCH,), generator=gen)
        window = torch.stack([data[s:s + context + 1] for s in starts.tolist()])
        measure = step >= steps - 5  # steady steps: the state exists
        if measure:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident memory
        opt.zero_grad()  # the usual loop: gradients live from backward to the next zero_grad
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, config["vocab"]),
                               window[:, 1:].reshape(-1))
        del logits
        loss.backward()
        opt.step()
        if measure:
            peaks.append(_status("VmHWM") - base)
            held.append(held_bytes(model, opt))
        curve.append(loss.item())
    n = sum(p.numel() for p in model.parameters())
    return dict(curve=curve, held=max(held) / n, peak=max(peaks), params=n)


def run_in_subprocess(run, quick, steps):
    # a fixed mmap threshold: freed tensors go back to the system at once, so
    # the resident memory follows the live tensors
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    args = [sys.executable, os.path.abspath(__file__), "--run", run, "--steps", str(steps)]
    out = subprocess.run(args + (["--quick"] if quick else []), env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="default 300 (--quick: 60)")
    p.add_argument("--quick", action="store_true", help="a smaller model, 60 steps")
    p.add_argument("--out", default=os.path.join(HERE, "out"))
    p.add_argument("--run", choices=list(RUNS), help=argparse.SUPPRESS)  # one run, JSON out
    args = p.parse_args(argv)
    config = QUICK if args.quick else CONFIG
    steps = args.steps or (60 if args.quick else 300)
    if args.run:
        print(json.dumps(train(args.run, config, steps)))
        return 0
    results = {run: run_in_subprocess(run, args.quick, steps) for run in RUNS}
    n = results["FusedRMSprop"]["params"]
    print(f"GPT-2-shaped model {config}: {n / 1e6:.2f}M parameters, {steps} steps, batch "
          f"{BATCH}x{config['n_ctx']} bytes, lr {LR}")
    reference = sum(results["torch.optim.RMSprop"]["curve"][-20:]) / 20
    print(f"{'run':30s} {'held B/param':>13s} {'step peak MB':>13s} {'loss':>7s} {'vs fp32':>8s}")
    for run, r in results.items():
        loss = sum(r["curve"][-20:]) / 20
        r["loss"], r["loss_ratio"] = loss, loss / reference
        print(f"{run:30s} {r['held']:13.2f} {r['peak'] / 1e6:13.1f} {loss:7.4f} "
              f"{100 * (loss / reference - 1):+7.2f}%")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpt_memory.json"), "w") as f:
        json.dump(dict(config=config, steps=steps, runs=results), f)
    from _plotting import pyplot, save

    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 4))
        for run, r in results.items():
            ax.plot(r["curve"], label=f"{run}: {r['held']:.2f} B/param held", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (nats per byte)")
        ax.legend(fontsize=8)
        save(fig, args.out, "gpt_memory_loss.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
