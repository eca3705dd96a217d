"""Plot helpers shared by the examples (matplotlib is an optional dependency)."""

import os


def pyplot():
    """matplotlib.pyplot on a file-only backend, or None if it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (make examples installs it): no plot")
        return None
    return plt


def save(fig, out_dir, name, what="plot"):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"{what} written to {path}")
    return path


def save_loss_curves(curves, out_dir, name, title=None):
    """Plots {label: [(epoch, loss), ...]} on a log scale and saves it as
    out_dir/name (nothing without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        ax.plot(*zip(*curve), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss over the 1500 rows")
    ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return save(fig, out_dir, name, "loss curves")
