"""Builds fused_rmsprop._C (CPU kernel always, CUDA kernel when it can).

Environment switches:
  FUSED_RMSPROP_CUDA=auto|1|0   auto (default): build the CUDA kernel when torch
                                is a CUDA build and nvcc is found; 1: require it;
                                0: CPU only.
  TORCH_CUDA_ARCH_LIST          respected; when unset and no GPU is visible,
                                sm_80 and sm_90 are built with PTX for newer GPUs.
  CUDA_HOME                     the CUDA toolkit; found from nvcc when unset.
  FUSED_RMSPROP_EMULATION=0|1   1: also build the test-only fused_rmsprop._C_emulation
                                (the CUDA kernel compiled for the CPU; `make build`
                                and `make test` set it). Default 0: not installed.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def _read_version_file():
    """__version__ and MIN_TORCH from fused_rmsprop/_version.py, read without
    importing the package (whose __init__ needs the built library)."""
    about = {}
    with open(os.path.join(ROOT, "fused_rmsprop", "_version.py")) as f:
        exec(f.read(), about)
    return about["__version__"], about["MIN_TORCH"]


VERSION, MIN_TORCH = _read_version_file()


def _toolkit_from_nvcc(nvcc):
    """The toolkit root of `nvcc`, even when nvcc is a wrapper script."""
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
        return home
    # A wrapper (as /usr/local/bin/nvcc is here) hides the toolkit; the real
    # nvcc reports its own location as TOP in a dry run.
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cu")
        open(src, "w").close()
        out = subprocess.run(
            [nvcc, "--dryrun", "-v", "-c", src, "-o", os.path.join(tmp, "p.o")],
            capture_output=True, text=True, check=False,
        )
    match = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
    return os.path.realpath(match.group(1)) if match else None


def _cuda_mode():
    mode = os.environ.get("FUSED_RMSPROP_CUDA", "auto").strip().lower()
    if mode not in ("auto", "1", "0"):
        sys.exit(f"FUSED_RMSPROP_CUDA must be auto, 1 or 0, got {mode!r}")
    return mode


def _want_cuda():
    """Decide whether to build the CUDA kernel; set CUDA_HOME for torch."""
    mode = _cuda_mode()
    if mode == "0":
        return False
    import torch

    nvcc = None
    if os.environ.get("CUDA_HOME"):
        nvcc = os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
        nvcc = nvcc if os.path.exists(nvcc) else None
    else:
        found = shutil.which("nvcc")
        home = _toolkit_from_nvcc(found) if found else None
        if home:
            # torch.utils.cpp_extension guesses CUDA_HOME from the nvcc on PATH
            # (here /usr/local, which has no libcudart); tell it the truth
            # before it is imported.
            os.environ["CUDA_HOME"] = home
            nvcc = os.path.join(home, "bin", "nvcc")
    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is not a CUDA build")
    if nvcc is None:
        problems.append("nvcc was not found (put it on PATH or set CUDA_HOME)")
    if problems:
        if mode == "1":
            sys.exit("FUSED_RMSPROP_CUDA=1 but the CUDA kernel cannot be built: "
                     + "; ".join(problems))
        print("fused_rmsprop: building without CUDA: " + "; ".join(problems))
        return False
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    return True


# NOTE: [stable ABI] in csrc/torch_api.h: the sources use only LibTorch's
# stable ABI, targeting MIN_TORCH (the oldest torch we support), and Python's
# limited API: one build loads in every torch >= MIN_TORCH and every
# Python >= 3.10 (the wheel is tagged cp310-abi3).
TORCH_TARGET_VERSION = "0x{:02x}{:02x}000000000000".format(*MIN_TORCH)
PY_LIMITED_API = "cp310"


def _extensions():
    use_cuda = _want_cuda()
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    target = f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}"
    # torch < 2.13 compiles extensions as C++17 unless a -std flag is given;
    # the sources are C++20 (as torch >= 2.13 itself).
    cxx = ["-O3", "-std=c++20", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno",
           "-fopenmp", target]
    common = dict(
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    exts = []
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        # --fmad=false: no multiply-add contracted into an FMA, as the CPU
        # build (-ffp-contract=off) and the emulation, so that CUDA, CPU and
        # emulation round alike (bit-identical results); the kernel is
        # memory-bound, so it costs nothing (tests/test_cuda_build.py checks
        # the PTX for fma).
        nvcc = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", "--fmad=false",
                target]
        exts.append(CUDAExtension(
            "fused_rmsprop._C", sources,
            # USE_CUDA: the stable shim's CUDA declarations (the current stream)
            define_macros=[("FUSED_RMSPROP_WITH_CUDA", "1"), ("USE_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **common))
    else:
        exts.append(CppExtension(
            "fused_rmsprop._C", sources,
            extra_compile_args={"cxx": cxx}, **common))
    emulation = sorted(glob.glob("csrc/emulation/*.cpp"))
    if emulation and os.environ.get("FUSED_RMSPROP_EMULATION", "0") == "1":
        # Test-only: the CUDA kernel source compiled as C++ for the CPU.
        exts.append(CppExtension(
            "fused_rmsprop._C_emulation", emulation,
            extra_compile_args={"cxx": ["-O2", "-std=c++20", "-ffp-contract=off",
                                        "-Wno-unknown-pragmas", target]},
            **common))
    return exts


if __name__ == "__main__":
    ext_modules = _extensions()  # first: it sets CUDA_HOME for cpp_extension
    from torch.utils.cpp_extension import BuildExtension

    import setuptools

    # pyproject.toml declares the license dynamic: an SPDX expression where
    # setuptools knows them (>= 77), the old free-text field before.
    new_setuptools = int(setuptools.__version__.split(".")[0]) >= 77
    license_kw = ({"license_expression": "BSD-3-Clause"} if new_setuptools
                  else {"license": "BSD-3-Clause"})
    setup(
        **license_kw,
        version=VERSION,
        install_requires=["torch>={}.{}".format(*MIN_TORCH)],
        packages=find_packages(include=["fused_rmsprop", "fused_rmsprop.*"]),
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        options={"bdist_wheel": {"py_limited_api": PY_LIMITED_API}},
    )
