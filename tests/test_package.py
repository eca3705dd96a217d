"""The package as a user gets it: an sdist, a wheel that pip builds from it
with build isolation, and that wheel installed into a fresh venv with the
oldest torch we support, where the self-check must pass.

Slow (one isolated build environment with torch, one compile, one venv):
`make test-package` runs it (part of `make test`); `-m package` selects it.

Disk: pip's isolated build environment holds a CUDA build of torch (about
6 GB) while the wheel builds. The sdist needs no compiler and no torch of its
own, so it is made without isolation; the fresh venv gets the oldest torch from
`OLDEST_SITE` (the site-packages of `make`'s .venv-oldest, added with a .pth
file, so pip sees it installed) instead of a second 5 GB copy, or installs it
with pip when `OLDEST_SITE` is not set."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import pytest

from fused_rmsprop._version import MIN_TORCH, __version__

pytestmark = pytest.mark.package

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLDEST_TORCH = os.environ.get("OLDEST_TORCH", "{}.{}.0".format(*MIN_TORCH))
OLDEST_SITE = os.environ.get("OLDEST_SITE")
# What pip's isolated build environment takes: torch with its CUDA libraries
# (5.4 GB at peak, measured with 2.14.1) and the build's objects, with a margin.
BUILD_ENV_BYTES = 7 << 30
CUDA_EXPECTED = shutil.which("nvcc") is not None and os.environ.get(
    "FUSED_RMSPROP_CUDA", "auto") != "0"


def _run(cmd, **kwargs):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def _user_env():
    # As a user's shell: none of the checkout's test switches, no checkout on
    # the path, the default CUDA targets.
    drop = ("FUSED_RMSPROP_EMULATION", "TORCH_CUDA_ARCH_LIST", "PYTHONPATH", "CUDA_VISIBLE_DEVICES")
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    free = shutil.disk_usage(tempfile.gettempdir()).free
    assert free >= BUILD_ENV_BYTES, (
        f"{tempfile.gettempdir()} has {free / 2**30:.1f} GiB free; pip's isolated build "
        f"environment needs about {BUILD_ENV_BYTES / 2**30:.0f} GiB (torch with its CUDA "
        "libraries): free some space or point TMPDIR elsewhere")
    out = tmp_path_factory.mktemp("dist")
    env = _user_env()
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, ROOT],
         env=env)
    (sdist,) = glob.glob(str(out / "*.tar.gz"))
    # pip builds the wheel from the sdist in an isolated environment, as
    # `pip install .` does from the checkout.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, sdist], env=env)
    (wheel,) = glob.glob(str(out / "*.whl"))
    return sdist, wheel


def test_sdist_holds_every_source_file(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tracked = _run(["git", "ls-files", "csrc", "fused_rmsprop", "setup.py", "pyproject.toml",
                    "MANIFEST.in", "LICENSE", "README.md", "CHANGELOG.md"], cwd=ROOT).stdout.split()
    missing = sorted(set(tracked) - names)
    assert missing == [], f"the sdist lacks {missing}"
    assert not [n for n in names if n.endswith((".so", ".o"))]


def test_wheel_is_abi3_with_the_kernels_and_without_the_test_build(dist):
    _, wheel = dist
    name = os.path.basename(wheel)
    assert re.fullmatch(rf"fused_rmsprop-{re.escape(__version__)}-cp310-abi3-linux_x86_64\.whl",
                        name), name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"fused_rmsprop-{__version__}.dist-info/METADATA").decode()
    assert "fused_rmsprop/_C.abi3.so" in names
    assert not [n for n in names if "_C_emulation" in n]
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names), names
    assert "Requires-Dist: torch>={}.{}".format(*MIN_TORCH) in metadata
    assert f"Version: {__version__}" in metadata


@pytest.mark.skipif(not CUDA_EXPECTED, reason="no nvcc: the wheel is built for the CPU only")
def test_wheel_carries_sm80_sm90_and_sm90_ptx(dist, tmp_path):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as z:
        lib = z.extract("fused_rmsprop/_C.abi3.so", tmp_path)
    tool = shutil.which("cuobjdump")
    if tool is None:
        triton = pytest.importorskip("triton")
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                            "cuobjdump")
    elf = _run([tool, "--list-elf", lib]).stdout
    ptx = _run([tool, "--list-ptx", lib]).stdout
    assert "sm_80" in elf and "sm_90" in elf, elf
    assert "sm_90" in ptx, ptx


def test_wheel_installs_and_self_checks_with_the_oldest_torch(dist, tmp_path):
    _, wheel = dist
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    env = _user_env()
    if OLDEST_SITE:
        site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                    ).stdout.strip()
        with open(os.path.join(site, "oldest_torch.pth"), "w") as f:
            f.write(OLDEST_SITE + "\n")
        # Nothing to download: the wheel's Requires-Dist must be met by what is there.
        _run([python, "-m", "pip", "install", "--quiet", "--no-index", wheel], env=env)
    else:
        _run([python, "-m", "pip", "install", "--quiet", f"torch=={OLDEST_TORCH}", "numpy",
              wheel], env=env)
    # From a directory without the checkout, so the installed package is used.
    where = _run([python, "-c", "import torch, fused_rmsprop._C as c; "
                  "print(torch.__version__); print(c.__file__)"], env=env, cwd=tmp_path).stdout
    version, lib = where.split()
    assert version.startswith(OLDEST_TORCH), version
    assert lib.startswith(str(venv)) and lib.endswith("_C.abi3.so"), lib
    check = _run([python, "-m", "fused_rmsprop.check"], env=env, cwd=tmp_path).stdout
    assert re.search(r"^cpu\s+float32\s+\d+\s+ok$", check, re.M), check
