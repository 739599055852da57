# `make demo` and `make test` each set up the virtual environment (once; again when the pins change) and run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench-cpu clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" setuptools wheel
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/mcn demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -ra --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-cpu: $(STAMP)
	$(BIN)/python bench/extract.py --quick
	$(BIN)/python bench/train_step.py --device cpu --small
	$(BIN)/python bench/pipeline.py --quick

clean:
	rm -rf $(VENV) mcn-demo .pytest_cache .ruff_cache *.egg-info
