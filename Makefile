# Conveyor: `make demo` and `make test` work from a clean clone on Debian 12.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint format system-deps kubernetes-bin clean bench bench-quick bench-system-deps

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)"; exit 1; }

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[demo]'
	@touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[demo,test]'
	@touch $@ $(VENV)/.demo-installed

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[demo,test,bench]'
	@touch $@ $(VENV)/.test-installed $(VENV)/.demo-installed

## demo: create the virtualenv, install Conveyor and run the video workflow end to end
demo: $(VENV)/.demo-installed
	$(BIN)/conveyor demo

## system-deps: the container engines and tools the tests start (apt, as root)
system-deps:
	@bash scripts/install-system-deps.sh

## kubernetes-bin: the binaries of the tests' Kubernetes cluster, built once per machine into KUBE_CACHE
## from the Go module proxy (needs go >= 1.24; 11 min cold, 0.01 s when built; scripts/KUBERNETES-NOTES.md)
KUBE_CACHE ?= /var/cache/conveyor/kubernetes
kubernetes-bin:
	nice -n 10 bash scripts/build-kubernetes.sh $(KUBE_CACHE)

## test: install everything the tests need, lint, run the whole suite
test: system-deps kubernetes-bin $(VENV)/.test-installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	CONVEYOR_KUBE_CACHE=$(KUBE_CACHE) $(BIN)/pytest

## bench-system-deps: GNU parallel, one of the suite's baselines (apt, as root; otherwise says how)
bench-system-deps:
	@if command -v parallel >/dev/null; then echo "bench deps OK: $$(parallel --version | head -1)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q parallel >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q parallel >/dev/null; }; \
		echo "bench deps installed: $$(parallel --version | head -1)"; \
	else echo "GNU parallel is missing (its row will say not installed): apt-get install -y parallel, as root"; fi

## bench: the full benchmark suite, Conveyor against its baselines; about 30 min on the 2-core VM.
## Writes bench/results/suite.json, suite.md (the table) and suite.png. Options: python -m bench.suite --help
bench: system-deps bench-system-deps $(VENV)/.bench-installed
	$(BIN)/python -m bench.suite

## bench-quick: every row once with tiny N, about 2 min; fails when the harness breaks, whatever the numbers
bench-quick: system-deps bench-system-deps $(VENV)/.bench-installed
	$(BIN)/ruff check bench
	$(BIN)/ruff format --check bench
	$(BIN)/python -m bench.suite --quick

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests

format: $(VENV)/.test-installed
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
