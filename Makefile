# mlengine: `make quickstart` (install + end-to-end demo) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt

.PHONY: quickstart install install-test postgres test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Every extra (torch pinned to the CPU build), resolved against the shared constraints file.
$(VENV)/.installed-all: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[all]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-all
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[all,test]'
	touch $@

install: $(VENV)/.installed-all

install-test: $(VENV)/.installed-test

quickstart: install
	$(VENV)/bin/python scripts/quickstart.py

# PostgreSQL server binaries for the store tests (Debian's package; the tests start the server).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "PostgreSQL server binaries are missing: sudo apt-get install -y postgresql" >&2; exit 2; fi

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks examples scripts
	$(VENV)/bin/ruff format --check src tests benchmarks examples scripts
	$(VENV)/bin/mypy

test: install-test postgres lint
	$(VENV)/bin/pytest

# No-op trainer (pure overhead), then a trainer that works for 1 s (the ratio a user sees).
bench: install
	$(PY) benchmarks/jobs_overhead.py
	$(PY) benchmarks/jobs_overhead.py --trainer-seconds 1 --repeat 3
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/data.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
