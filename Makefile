# The two commands a new user runs on a fresh machine with only python3:
#   make demo   sets everything up, then builds, verifies, trains and evaluates a network on CIFAR-10 (CPU)
#   make test   sets everything up, then runs the test suite
#   make bench  runs every benchmark at a small size (a check that they run; for figures,
#               run each `python -m operad.experiments.bench.<name>` without the small options)
# Each creates .venv and installs the pinned CPU build of PyTorch there when no torch is present.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
# CIFAR-10 for the demo: $OPERAD_DATA, else ../shared/data beside the checkout, else ./data
DATA   ?= $(or $(OPERAD_DATA),$(wildcard ../shared/data),data)

.PHONY: install demo test test-all bench clean gpu-suite

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/operad demo --data $(DATA)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

BENCH := $(BIN)/python -m operad.experiments.bench
bench: install
	$(BENCH).pide --quick --channels 4 --batch 2 --dense-gib 0.05 --threads 1
	$(BENCH).wavelet --quick --threads 1
	$(BENCH).harmonic --small --runs 2 --threads 1
	$(BENCH).dendritic --configs 2,4,4,8 --runs 2 --threads 1
	$(BENCH).rmnet --models resnet20 --batch 2 --size 16 --runs 2 --iters 1 --threads 1
	$(BENCH).zoo --models mobilenetv2_100_cifar --runs 1 --batch 4 --threads 1 --no-gpu
# The one-call GPU suite (operad gpu-suite; SMOKE=1 runs it on the CPU at tiny sizes; PEER=path/airbench94.py
# races the speed recipe against it, by default .device/airbench94.py where it exists)
GPU_BUDGET ?= 540
GPU_OUT    ?= $(if $(SMOKE),runs/gpu-suite-smoke,experiments/results/gpu/$(shell date +%Y-%m-%d))
gpu-suite: install
	$(BIN)/operad gpu-suite --budget $(GPU_BUDGET) --out $(GPU_OUT) --data $(DATA) $(if $(SMOKE),--smoke,) $(if $(PEER),--peer $(PEER),)

clean:
	rm -rf $(VENV) build *.egg-info
