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
