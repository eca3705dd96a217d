"""What the benchmark measures: parameter lists and optimizer settings."""

from __future__ import annotations

import torch

CONFIGS = {
    "plain": dict(),
    "mom+ctr+wd": dict(momentum=0.9, centered=True, weight_decay=0.01),
}
DEFAULT_SIZES = [1e3, 1e4, 1e5, 1e6, 1e7, 6.4e7, 1e8]
HEADLINE_SIZE = 6.4e7  # the size issue 4's targets are stated for
# On a GPU: 1e6 (cache-resident on an H100's 50 MB L2 without the flush the
# harness does) to 1e9 (20-36 GB of traffic per step).
GPU_SIZES = [1e6, 1e7, 1e8, 1e9]


def size_name(size: float) -> str:
    return f"{size:.2g}"  # 6.4e+07


# The float32 cases that also time a torch.compile'd torch step, by device
# type (compiling takes 10-60 s a case): CPU 6.4e7 elements; CUDA 1e8 and
# the GPT-2-small list.
HEADLINES = {"cpu": {size_name(HEADLINE_SIZE)}, "cuda": {size_name(1e8), "gpt2-small"}}


def bytes_per_element(dtype: torch.dtype, config: str) -> int:
    """Minimum traffic of one step per element, with state in the param's
    dtype: read p and g and write p (3 accesses), and read and write each
    state tensor (v, + b with momentum, + gbar when centered)."""
    options = CONFIGS[config]
    size = torch.empty((), dtype=dtype).element_size()
    state = 1 + (options.get("momentum", 0) > 0) + bool(options.get("centered", False))
    return size * (3 + 2 * state)


def gpt2_small_shapes():
    """GPT-2 small (124M parameters, 148 tensors), from its published shapes."""
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def resnet50_shapes():
    """ResNet-50 (25.6M parameters, 161 tensors), from torchvision's layout."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            out = 4 * width
            shapes += [(width, in_ch, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (out, width, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, in_ch, 1, 1), (out,), (out,)]
            in_ch = out
    return shapes + [(1000, 2048), (1000,)]


def many_small_shapes():
    """200 tensors of 50K elements: many small tensors, one call."""
    return [(50_000,)] * 200


def many_tiny_shapes():
    """200 tensors of 16 elements: a step that is all per-parameter overhead."""
    return [(16,)] * 200


MODELS = {
    "gpt2-small": gpt2_small_shapes,
    "resnet50": resnet50_shapes,
    "200x50K": many_small_shapes,
    "200x16": many_tiny_shapes,
}


def numel(shapes) -> int:
    return sum(int(torch.Size(s).numel()) for s in shapes)
