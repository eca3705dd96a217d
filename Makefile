# make test   build (CPU + CUDA kernels when nvcc is found) and run every check CI runs
# make bench  build and run the throughput microbenchmarks
# make test-slow  the long checks (1000 property-based examples)
# make build  just build the extension in place
# Each target creates .venv in the checkout and installs what it needs.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.14.1
export MAX_JOBS ?= 2

.PHONY: test test-slow bench build examples clean

$(VENV)/.installed: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) -r requirements-dev.txt
	# make the checkout's package importable from anywhere in the venv (examples, torchrun)
	$(PY) -c "import site, os; open(os.path.join(site.getsitepackages()[0], 'fused_rmsprop_checkout.pth'), 'w').write(os.getcwd() + '\n')"
	touch $@

build: $(VENV)/.installed
	$(PY) setup.py --quiet build_ext --inplace

test: build
	$(PY) -m pytest -q -m "not slow" tests

# 1000 property-based examples and other long checks (not part of CI)
test-slow: build
	$(PY) -m pytest -q -m slow tests

bench: build
	$(PY) bench/run.py $(BENCH_ARGS)

# the examples' optional dependencies (the `examples` extra), then every example
examples: build
	$(PY) -m pip install --quiet matplotlib scikit-learn tqdm
	$(PY) examples/seed_2d.py
	$(PY) examples/airfoil.py
	$(PY) examples/digits.py
	$(VENV)/bin/torchrun --nproc_per_node 2 examples/train_ddp.py
	$(VENV)/bin/torchrun --nproc_per_node 2 examples/train_fsdp2.py

clean:
	rm -rf build fused_rmsprop/*.so
