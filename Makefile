# keras_mae: `make pretrain` runs the main job end to end, `make test` the test suite on all three backends.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow jax torch
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# The main job: fastest backend on a 2-core CPU for the demo preset (see BENCHMARKS.md).
BACKEND ?= torch
WORKDIR ?= runs/fashion_mnist

.PHONY: install data test pretrain clean

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

test: install data
	@status=0; for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(PY) -m pytest -q $(PYTEST_ARGS) || status=1; \
	done; exit $$status

pretrain: install data
	KERAS_BACKEND=$(BACKEND) $(PY) apps/pretrain.py --flagfile=apps/configs/fashion_mnist.flags --workdir=$(WORKDIR) $(ARGS)
	KERAS_BACKEND=$(BACKEND) $(PY) apps/linear_probe.py --flagfile=apps/configs/linprobe_fashion_mnist.flags \
	  --encoder=$(WORKDIR) --workdir=$(WORKDIR)/linear_probe --cache_features --compare_random_init

clean:
	rm -rf $(VENV) .pytest_cache
