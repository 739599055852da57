# `make demo` and `make test` each set up the virtual environment (once; again when the pins change) and run.
# demo needs the runtime pins (requirements.txt), test and lint also the dev pins (requirements-dev.txt).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: setup demo test lint bench-cpu docker-smoke clean

$(RUNTIME): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME) requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(DEV)

setup: $(DEV)

demo: $(RUNTIME)
	$(BIN)/mcn demo

test: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -ra --durations=15

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-cpu: $(RUNTIME)
	$(BIN)/python bench/extract.py --quick
	$(BIN)/python bench/train_step.py --device cpu --small
	$(BIN)/python bench/pipeline.py --quick

# Builds the image and runs the whole chain in containers (needs a Docker engine; not part of CI).
docker-smoke:
	PYTHON=$(PYTHON) docker/smoke.sh

clean:
	rm -rf $(VENV) mcn-demo .pytest_cache .ruff_cache *.egg-info
