# A newcomer's guide: `make demo` runs the demo, `make test` runs lint, types and tests.
# Both make the virtualenv (.venv) and install what they need on first use.
# The venv is built with the Python CI tests (3.12, see .ci/find-python); give
# PYTHON=... for another supported one (3.11.8 or newer): the venv is then rebuilt.

PYTHON ?= $(shell .ci/find-python)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(notdir $(PYTHON))

.PHONY: install demo test pytest lint format bench chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python >= 3.11.8: give PYTHON=..."; exit 1; }
	rm -f $(VENV)/.installed*
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) examples/demo.py

test: lint pytest

pytest: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

chaos: install
	$(PY) -m benchmarks chaos $(CHAOS_ARGS)

bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build
