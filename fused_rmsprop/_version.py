"""The package's version and the oldest torch it runs with, written once.

setup.py reads this file without importing the package: the version of the
wheel and the sdist, the torch requirement, and TORCH_TARGET_VERSION (the
stable ABI of MIN_TORCH, which the native library is built for) come from
here; `import fused_rmsprop` refuses an older torch by the same numbers.
"""

__version__ = "0.1.0"
MIN_TORCH = (2, 11)
