# The two set-up commands of the README: `make run` (dry run) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What users deploy, built exactly as the Containerfile builds it, apart from the developers' venv.
PROD ?= .venv-prod
PROD_LOCKED := $(PROD)/.locked
PROD_STAMP := $(PROD)/.installed
# The lowest versions setup.cfg allows, for the unit tests.
LOWEST ?= .venv-lowest
PACKAGE := setup.cfg pyproject.toml README.md $(shell find adapter -type f ! -name '*.pyc' ! -path '*/__pycache__/*')
# Tests run on one process per core, at most 4: the end-to-end ones mostly wait on the processes they drive.
PARALLEL := --numprocesses auto --maxprocesses 4
LOCK_FLAGS := --quiet --extra postgresql --generate-hashes --universal --python-version 3.10 --custom-compile-command "make lock"

.PHONY: run test lint lock lock-check lowest production unit e2e bench system-packages clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# A new lock builds a new venv; a changed package is reinstalled into it. flock: test runs may share it.
$(PROD_LOCKED): requirements.txt
	flock $(PROD).lock sh -ec 'rm -rf $(PROD); $(PYTHON) -m venv $(PROD); \
	  $(PROD)/bin/pip install --quiet --require-hashes -r requirements.txt; touch $(PROD_LOCKED)'

$(PROD_STAMP): $(PROD_LOCKED) $(PACKAGE)
	flock $(PROD).lock $(PROD)/bin/pip install --quiet --no-deps --force-reinstall .
	touch $(PROD_STAMP)

production: $(PROD_STAMP)

## Run the adapter on http://127.0.0.1:8080 in dry-run mode, from the install users deploy: events are logged and
## returned, never sent.
run: $(PROD_STAMP)
	DRY_RUN=true SHARED_SECRET=$${SHARED_SECRET:-change-me} HOST=$${HOST:-127.0.0.1} \
	STATE_DIRECTORY=$${STATE_DIRECTORY:-$(CURDIR)/.state} $(PROD)/bin/alert24-adapter serve

## Everything CI checks: lint, the lock, the unit tests on the lowest versions allowed, then unit, property and
## end-to-end tests, the end-to-end ones against the production install.
test: $(STAMP) system-packages lint lock-check lowest $(PROD_STAMP)
	$(BIN)/python -m pytest $(PARALLEL)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/uv pip compile --quiet --no-deps --no-header --no-annotate --extra postgresql setup.cfg -o $(VENV)/direct.txt
	$(BIN)/deptry . --requirements-files $(VENV)/direct.txt
	$(BIN)/hadolint Containerfile
	$(BIN)/yamllint --strict deploy/ .yamllint

## Refresh requirements.txt from setup.cfg (keeps current pins where they still fit; `make lock UPGRADE=1` upgrades).
lock: $(STAMP)
	$(BIN)/uv pip compile $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) setup.cfg -o requirements.txt

lock-check: $(STAMP)
	cp requirements.txt $(VENV)/requirements.check.txt
	$(BIN)/uv pip compile $(LOCK_FLAGS) setup.cfg -o $(VENV)/requirements.check.txt
	@diff -u requirements.txt $(VENV)/requirements.check.txt \
	  || { echo "requirements.txt is stale against setup.cfg: run make lock" >&2; exit 1; }

lowest: $(STAMP) system-packages
	rm -rf $(LOWEST)
	$(BIN)/uv venv --quiet --python $(PYTHON) $(LOWEST)
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct '.[postgresql]'
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python 'pytest>=7.4' 'pytest-xdist>=3.5' 'responses>=0.25' 'hypothesis>=6.90'
	$(BIN)/uv pip list --python $(LOWEST)/bin/python | grep -iE '^(flask|werkzeug|requests|urllib3|gunicorn|gevent|prometheus.client|pyyaml|psycopg) ' || true
	$(LOWEST)/bin/python -m pytest -q -m 'not e2e' -p no:cacheprovider $(PARALLEL)

unit: $(STAMP)
	$(BIN)/python -m pytest -m 'not e2e' $(PARALLEL)

e2e: $(STAMP) system-packages $(PROD_STAMP)
	$(BIN)/python -m pytest -m e2e $(PARALLEL)

system-packages:
	bash .ci/system-packages

## The performance benchmark (see README, "Performance").
bench: $(STAMP) system-packages $(PROD_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(PROD) $(LOWEST) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
