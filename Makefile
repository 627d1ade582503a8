# Everything a fresh machine needs: `make demo` and `make test` create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench serve clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

demo: $(BIN)/.installed  ## two agents messaging through the embedded server
	$(BIN)/cuemsg demo

test: $(BIN)/.installed  ## the whole test suite (PostgreSQL tests skip if it is down)
	$(BIN)/pytest

lint: $(BIN)/.installed  ## ruff and mypy (strict) on cuemsg/
	$(BIN)/ruff check cuemsg
	$(BIN)/mypy

bench: $(BIN)/.installed  ## the benchmark; writes docs/benchmarks.md
	$(BIN)/python -m bench

serve: $(BIN)/.installed
	$(BIN)/cuemsg serve

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
