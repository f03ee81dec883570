# The map of how outputs come from inputs. `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test lint bench clean-outputs

setup: $(STAMP)

# pip compiles every installed file to bytecode one by one; compileall does it on every core
# (88 s -> 43 + 24 s on 2 cores). Skipping it would not do: where PYTHONDONTWRITEBYTECODE is
# set, each test process would compile TensorFlow again on import.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -r requirements-dev.txt
	$(PY) -m compileall -q -j 0 -x '/tests?/' $(VENV)/lib > /dev/null
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m facelab demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) -m facelab bench
