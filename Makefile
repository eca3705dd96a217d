# make test   build once (CPU + CUDA kernels when nvcc is found) and run every check
#             CI runs with that one build under the pinned torch and under the
#             oldest supported one, then build the sdist and wheel as a user
#             would and self-check the wheel in a fresh venv (test-package)
# make bench  build and run the throughput microbenchmarks
# make test-slow  the long checks (1000 property-based examples)
# make sanitize   compute-sanitizer memcheck, racecheck and initcheck over a
#                 short CUDA step script (needs a GPU and compute-sanitizer)
# make build  just build the extension in place
# make gpu-check  on a machine with a GPU, offline, with the torch already
#                 installed: build for that GPU, self-check, GPU tests,
#                 benchmark and memcheck in about 5 minutes (tools/gpu_check.py;
#                 GPU_CHECK_ARGS="--budget 600 --skip bench --out DIR ...")
# Each target creates .venv in the checkout and installs what it needs.
#
# Offline, against a torch that is already installed (a GPU box, no pip):
#   make test NO_VENV=1 PYTHON=python3     (and the same for bench, build)
# uses $(PYTHON) as it is, installs nothing, and tests only that torch.

PYTHON ?= python3
TORCH_VERSION ?= 2.14.1
# The oldest torch we support (fused_rmsprop/_version.py's MIN_TORCH, which the
# build targets); `make test` runs the suite under it with the same build.
OLDEST_TORCH ?= 2.11.0
NO_VENV ?=
export MAX_JOBS ?= 2
# The tests use the test-only emulation build of the CUDA kernel (not part of
# a user's install), and fail rather than skip when it is missing.
export FUSED_RMSPROP_EMULATION := 1

VENV := .venv
OLD_VENV := .venv-oldest
PYTEST_ARGS := -q -m "not slow and not package" tests

ifeq ($(NO_VENV),1)
PY := $(PYTHON)
INSTALLED :=
TORCHRUN := $(PYTHON) -m torch.distributed.run
else
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
TORCHRUN := $(VENV)/bin/torchrun
endif

.PHONY: test test-pinned test-oldest test-package test-slow bench build examples sanitize gpu-check clean

$(VENV)/.installed: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) -r requirements-dev.txt
	# make the checkout's package importable from anywhere in the venv (examples, torchrun)
	$(PY) -c "import site, os; open(os.path.join(site.getsitepackages()[0], 'fused_rmsprop_checkout.pth'), 'w').write(os.getcwd() + '\n')"
	touch $@

$(OLD_VENV)/.installed: requirements-dev.txt
	test -x $(OLD_VENV)/bin/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install --quiet torch==$(OLDEST_TORCH) -r requirements-dev.txt
	touch $@

# Libraries of builds before the stable ABI port were tagged for one Python
# (_C.cpython-311-...so); Python would load such a stale one before _C.abi3.so.
build: $(INSTALLED)
	rm -f fused_rmsprop/_C*.cpython-*.so
	$(PY) setup.py --quiet build_ext --inplace

ifeq ($(NO_VENV),1)
test: test-pinned
	@echo "NO_VENV=1: tested the installed torch only (no pip: not torch $(OLDEST_TORCH), no wheel)"
else
test: test-pinned test-oldest test-package
endif

test-pinned: build
	$(PY) -m pytest $(PYTEST_ARGS)

# The oldest torch, with the libraries `build` made against the pinned one
# (LibTorch stable ABI: no rebuild; tests/test_stable_abi.py checks it).
test-oldest: build $(OLD_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(OLD_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The sdist, the wheel pip builds from it with build isolation, and that wheel
# self-checked in a fresh venv with torch $(OLDEST_TORCH) (tests/test_package.py;
# the fresh venv sees $(OLD_VENV)'s torch rather than installing 5 GB again).
test-package: $(INSTALLED) $(OLD_VENV)/.installed
	OLDEST_TORCH=$(OLDEST_TORCH) \
	OLDEST_SITE=$$($(OLD_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
	$(PY) -m pytest -q -m package tests/test_package.py

# 1000 property-based examples and other long checks (not part of CI)
test-slow: build
	$(PY) -m pytest -q -m slow tests

bench: build
	$(PY) bench/run.py $(BENCH_ARGS)

# Each tool over tools/sanitizer_step.py; the caching allocator is off so that
# every tensor is its own allocation and memcheck sees accesses past it.
# initcheck and racecheck look at our kernels only (torch's own are not ours
# to fix; racecheck checks shared memory, which our kernel does not use, so
# it must report 0 hazards).
SANITIZER ?= $(shell command -v compute-sanitizer || echo $${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer)
sanitize: build
	PYTORCH_NO_CUDA_MEMORY_CACHING=1 $(SANITIZER) --tool memcheck --error-exitcode 9 \
		$(PY) tools/sanitizer_step.py
	PYTORCH_NO_CUDA_MEMORY_CACHING=1 $(SANITIZER) --tool initcheck --error-exitcode 9 \
		--kernel-name kns=rmsprop_multi_tensor_kernel $(PY) tools/sanitizer_step.py
	PYTORCH_NO_CUDA_MEMORY_CACHING=1 $(SANITIZER) --tool racecheck --error-exitcode 9 \
		--kernel-name kns=rmsprop_multi_tensor_kernel $(PY) tools/sanitizer_step.py

# No venv and no pip: the python3 that is there, with its torch.
gpu-check:
	$(PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# the examples' optional dependencies (the `examples` extra), then every example
examples: build
	$(if $(NO_VENV),,$(PY) -m pip install --quiet matplotlib scikit-learn tqdm)
	PYTHONPATH=$(CURDIR) $(PY) examples/seed_2d.py
	PYTHONPATH=$(CURDIR) $(PY) examples/airfoil.py
	PYTHONPATH=$(CURDIR) $(PY) examples/digits.py
	PYTHONPATH=$(CURDIR) $(PY) examples/clipping_amp.py
	PYTHONPATH=$(CURDIR) $(PY) examples/bf16_rounding.py
	PYTHONPATH=$(CURDIR) $(PY) examples/state_bits.py
	PYTHONPATH=$(CURDIR) $(PY) examples/gpt_memory.py
	PYTHONPATH=$(CURDIR) $(TORCHRUN) --nproc_per_node 2 examples/train_ddp.py
	PYTHONPATH=$(CURDIR) $(TORCHRUN) --nproc_per_node 2 examples/train_fsdp2.py

clean:
	rm -rf build fused_rmsprop/*.so
