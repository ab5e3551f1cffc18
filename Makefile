# Flow Builder: `make test` sets everything up from a clean clone and runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# cdk.json runs `python3 app.py`: the venv's python3 must come first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
# jsii silences its end-of-life banner per Node major version listed here.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install test lint run synth bench-api bench-worker bench-synth clean

# The venv is refreshed whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest

run: install
	$(PY) -m scripts.run_local

synth: install
	npx cdk synth --quiet

bench-api: install
	$(PY) -m bench.api

bench-worker: install
	$(PY) -m bench.worker

bench-synth: install
	$(PY) -m bench.synth

clean:
	rm -rf $(VENV) node_modules cdk.out .pytest_cache .ruff_cache
