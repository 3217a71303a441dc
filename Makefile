# keras_mae: `make pretrain` runs the main job end to end, `make test` the test suite on all three backends
# (`make test-fast` without the app subprocess runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow jax torch
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# The main job: fastest backend on a 2-core CPU for the demo preset (see BENCHMARKS.md), in bf16 where the CPU
# has bf16 dot products (AVX512_BF16 / AMX: 9-14% faster, probe within 0.3 points of float32's), else float32.
BACKEND ?= torch
DTYPE_POLICY ?= $(shell grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo mixed_bfloat16 || echo float32)
WORKDIR ?= runs/fashion_mnist
SCREENING ?= runs/screening

.PHONY: install data test test-fast pretrain screening clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 is the CPU build on this machine's disk; any other version downloads gigabytes.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,jax,torch]'
	touch $@

install: $(VENV)/.installed

$(FASHION_MNIST):
	# Fashion-MNIST from Debian (no download at run time); needs root or sudo.
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi

data: $(FASHION_MNIST)

# pytest once per backend, in $(TEST_WORKERS) worker processes (pytest-xdist; a file's tests stay on one worker, so
# its module fixtures run once); $(1): extra pytest arguments. Most of an app test is one process importing
# and compiling on one core, so 2 workers on a 2-core CPU cut the suite's time by a third (BENCHMARKS.md).
TEST_WORKERS ?= 2
PER_BACKEND = status=0; for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(1) $(PYTEST_ARGS) || status=1; \
	done; exit $$status

test: install data
	@$(call PER_BACKEND,)

# The inner loop: everything but the app runs in subprocesses (marked slow).
test-fast: install data
	@$(call PER_BACKEND,-m "not slow")

pretrain: install data
	KERAS_BACKEND=$(BACKEND) $(PY) apps/pretrain.py --flagfile=apps/configs/fashion_mnist.flags --workdir=$(WORKDIR) \
	  --dtype_policy=$(DTYPE_POLICY) $(ARGS)
	KERAS_BACKEND=$(BACKEND) $(PY) apps/linear_probe.py --flagfile=apps/configs/linprobe_fashion_mnist.flags \
	  --encoder=$(WORKDIR) --workdir=$(WORKDIR)/linear_probe --cache_features --compare_random_init

# A screening task on a user-style folder: shirt vs T-shirt/top, pretrain, probe, evaluate (README).
screening: install data
	KERAS_BACKEND=$(BACKEND) $(PY) apps/make_screening_folder.py --output=$(SCREENING)/data
	KERAS_BACKEND=$(BACKEND) $(PY) apps/pretrain.py --flagfile=apps/configs/screening_fashion_mnist.flags \
	  --dataset=$(SCREENING)/data --workdir=$(SCREENING)/pretrain --verbose=2 $(ARGS)
	KERAS_BACKEND=$(BACKEND) $(PY) apps/linear_probe.py --flagfile=apps/configs/linprobe_screening.flags \
	  --encoder=$(SCREENING)/pretrain --workdir=$(SCREENING)/probe --cache_features --compare_random_init --verbose=0
	for run in probe probe/random_init; do KERAS_BACKEND=$(BACKEND) $(PY) apps/evaluate.py --model=$(SCREENING)/$$run \
	  --workdir=$(SCREENING)/evaluate/$$(basename $$run) --positive_class=shirt --target_recall=0.9 || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
