# Entry points. `make demo` and `make test` each set up everything from nothing.
PYTHON ?= python3
VENV ?= .venv
ADAS_HOME ?= $(CURDIR)/.adas
export ADAS_HOME
export SDL_VIDEODRIVER = offscreen
export WANDB_MODE ?= offline

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all test-fast architecture ui lint clean-state

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	bash scripts/setup_system_deps.sh  # first: the Triton env's perf_analyzer links Debian's libb64
	bash scripts/setup_triton_env.sh
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## run the main job end to end on embedded defaults (BUNDLE=dir: another candidate bundle; VERBOSE=1: the full event stream)
	$(BIN)/python scripts/run_demo.py $(if $(BUNDLE),--bundle $(BUNDLE)) $(if $(VERBOSE),--verbose)

test: setup architecture  ## the whole test suite (what CI runs), nightly tests left out
	$(BIN)/python -m pytest

test-all: setup architecture  ## every test, the nightly ones (long fault injection) included
	$(BIN)/python -m pytest -m "nightly or not nightly"

architecture: setup  ## the import contracts, ruff, and dg's check of the definitions
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	bash scripts/check_defs.sh

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

ui: setup  ## the Dagster UI on the same instance `make demo` used
	$(BIN)/python -c 'from adas.settings import AdasHome; from resources.instance import prepare_local_instance; prepare_local_instance(AdasHome.from_env())'
	DAGSTER_HOME=$(ADAS_HOME)/dagster $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-state:  ## forget every local run, artifact and inbox item (the local OCI registry is stopped first)
	-test -x $(BIN)/python && $(BIN)/python -m adas.packaging.local_oci_registry stop $(ADAS_HOME)/oci-registry
	rm -rf $(ADAS_HOME)
