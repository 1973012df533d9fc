# Conveyor: `make demo` and `make test` work from a clean clone on Debian 12.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint format system-deps clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)"; exit 1; }

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[demo]'
	@touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[demo,test]'
	@touch $@ $(VENV)/.demo-installed

## demo: create the virtualenv, install Conveyor and run the video workflow end to end
demo: $(VENV)/.demo-installed
	$(BIN)/conveyor demo

## system-deps: the container engines and tools the tests start (apt, as root)
system-deps:
	@bash scripts/install-system-deps.sh

## test: install everything the tests need, lint, run the whole suite
test: system-deps $(VENV)/.test-installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests

format: $(VENV)/.test-installed
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
