# Everything a fresh machine needs: `make demo` and `make test` create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test quick compat lint bench serve clean

CODE := cuemsg tests bench examples

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

demo: $(BIN)/.installed  ## two agents messaging through the embedded server
	$(BIN)/cuemsg demo

test: $(BIN)/.installed  ## the whole test suite (PostgreSQL tests skip if it is down)
	$(BIN)/pytest

quick: $(BIN)/.installed  ## the edit loop: no slow, fuzz, model-checking or fault tests; stops at a failure
	$(BIN)/pytest -x -m "not slow" --ignore=tests/fuzz --ignore=tests/model --ignore=tests/faults

compat:  ## `make quick`'s tests on Python 3.10 and 3.13 (each where found), in .venv-3.10, .venv-3.13
	bash .ci/compat

lint: $(BIN)/.installed  ## ruff (check, format) on everything; mypy strict on cuemsg/, lighter on the rest
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/mypy tests bench examples

bench: $(BIN)/.installed  ## the benchmark; writes docs/benchmarks.md
	$(BIN)/python -m bench

serve: $(BIN)/.installed
	$(BIN)/cuemsg serve

clean:
	rm -rf $(VENV) .venv-* build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
