# Set-up is automatic: `make demo` and `make test` create .venv and install distmtl into it first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/distmtl tune --space search_spaces/demo.yaml
	@echo
	@echo "MLflow runs are in $(CURDIR)/mlflow.db (artifacts in ./mlruns). Open the UI with:"
	@echo "  $(BIN)/distmtl ui   # MLflow's UI on mlflow.db at http://127.0.0.1:5000, opened at this sweep"

test: install  # every test (CI); a crash prints every thread's stack
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest -m ""

test-fast: install  # no Ray cluster, recipe or fresh Python process: what to run while you work
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest

clean:
	rm -rf ray_results mlruns mlflow.db .pytest_cache
