# Bootstrap for a fresh machine: `make run` and `make test` create .venv, install
# the pinned requirements once (again when requirements.txt or constraints.txt
# change) and run the default job or the test suite.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= workdirs/vit_digits
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	# The project itself, editable: scripts and notebooks outside the repository import it.
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m vit_jax.main --config configs/vit_digits.py --workdir $(WORKDIR)

# Two workers, each test file on one of them (its module fixtures built once): the suite
# is bound by XLA compilation and process start-up, which two cores run side by side.
PYTEST_WORKERS ?= -n 2 --dist loadfile

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The suite without the tests marked slow (pyproject.toml: markers): a few minutes on 2 CPUs.
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check vit_jax configs tests benchmarks

clean:
	rm -rf $(VENV) workdirs
