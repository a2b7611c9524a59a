# Every target installs what it needs into .venv, so a clean clone works
# with `make demo` or `make test` alone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; an unpinned torch pulls a multi-gigabyte CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# Compile the fused quantizer kernels now rather than in the first trial.
	# Without a C++ compiler the quantizers use PyTorch operators instead.
	$(BIN)/python -m qsearch.quant || echo "continuing without the fused kernels"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/qsearch run studies/digits_quick.yaml --storage sqlite:///qsearch.db

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/qat_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
