"""The built libraries use LibTorch's stable ABI only (csrc/torch_api.h,
NOTE: [stable ABI]), so one build loads in every torch from 2.11 on: `make
test` runs this suite with one binary under the pinned torch and the oldest.

These checks read the libraries' dynamic symbol tables (binutils' nm, which
every machine with gcc has)."""

import glob
import os
import re
import shutil
import subprocess

import pytest
import torch

from fused_rmsprop import _C

LIBRARIES = {"_C": _C.__file__}
try:
    from fused_rmsprop import _C_emulation
    LIBRARIES["_C_emulation"] = _C_emulation.__file__
except ImportError:  # a user's install: the test-only build is not there
    pass

# What a library may take from outside itself by a C name: the stable C shim
# of torch, Python's limited C API, the CUDA runtime, and the C runtime (whose
# symbols carry a version, e.g. memcpy@GLIBC_2.14). By a C++ name: the C++
# runtime (std::, __cxxabiv1::, operator new ...), never a namespace of
# libtorch or libc10, whose C++ symbols change from one torch to the next.
SHIM = re.compile(r"^(aoti_torch_|torch_)\w+$")
PYTHON = re.compile(r"^_?Py\w+$")
CUDA_RUNTIME = re.compile(r"^(__)?cuda\w+(@libcudart\.so\.\d+)?$")
VERSIONED = re.compile(r"@")
TORCH_CPP = re.compile(r"\b(at|c10|torch|caffe2|pybind11)::")


def _nm(path, *flags):
    nm = shutil.which("nm")
    assert nm is not None, "binutils' nm is needed to read the libraries' symbols"
    return subprocess.run([nm, "-D", *flags, path], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def _undefined_symbols(path):
    """(name, demangled name) of each undefined symbol but weak references,
    which need not resolve."""
    raw = _nm(path, "--undefined-only")
    demangled = _nm(path, "--undefined-only", "--demangle")
    assert len(raw) == len(demangled)
    return [(r.split()[-1], d.split(None, 1)[-1]) for r, d in zip(raw, demangled)
            if r.split()[-2].lower() != "w"]


def _torch_exports():
    """Every symbol the installed torch's libraries define."""
    names = set()
    for lib in glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch*.so")):
        out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True,
                             text=True, check=True).stdout
        names.update(line.split()[-1] for line in out.splitlines())
    return names


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_library_is_tagged_for_the_limited_python_api(name):
    assert LIBRARIES[name].endswith(".abi3.so"), LIBRARIES[name]


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_library_takes_nothing_from_torch_but_the_stable_c_shim(name):
    symbols = _undefined_symbols(LIBRARIES[name])
    assert any(SHIM.match(raw) for raw, _ in symbols)  # the reading works
    torch_cpp = [d for raw, d in symbols if raw.startswith("_Z") and TORCH_CPP.search(d)]
    assert torch_cpp == [], f"{name} needs C++ symbols of libtorch/libc10: {torch_cpp[:20]}"
    foreign_c = [raw for raw, _ in symbols if not raw.startswith("_Z") and not (
        SHIM.match(raw) or PYTHON.match(raw) or CUDA_RUNTIME.match(raw) or VERSIONED.search(raw))]
    assert foreign_c == [], f"{name} needs C symbols outside the stable ABI: {foreign_c[:20]}"


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_every_shim_function_used_is_exported_by_this_torch(name):
    # Run under each torch `make test` tests (2.11.0 and the pinned one).
    used = {raw for raw, _ in _undefined_symbols(LIBRARIES[name]) if SHIM.match(raw)}
    missing = sorted(used - _torch_exports())
    assert missing == [], f"torch {torch.__version__} does not export {missing}"

