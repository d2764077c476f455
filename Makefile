# One command runs every check: `make check` (the README's test command, and what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: check test lint types install serve bench clean

check: install lint types test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

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
