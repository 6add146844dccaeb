# The two set-up commands of the README: `make run` (dry run) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit e2e bench system-packages clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the adapter on http://127.0.0.1:8080 in dry-run mode: events are logged and returned, never sent.
run: $(STAMP)
	DRY_RUN=true SHARED_SECRET=$${SHARED_SECRET:-change-me} HOST=$${HOST:-127.0.0.1} \
	STATE_DIRECTORY=$${STATE_DIRECTORY:-$(CURDIR)/.state} $(BIN)/alert24-adapter serve

## Everything CI checks: lint, format, unit, property and end-to-end tests.
test: $(STAMP) system-packages lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

system-packages:
	bash .ci/system-packages

## The performance benchmark (see README, "Performance").
bench: $(STAMP) system-packages
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
