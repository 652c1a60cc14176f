# Every target installs what it needs into .venv first; `make test` and `make demo`
# work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: install lint test test-fast bench bench-faults demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check ctxcache tasks tests benchmarks celeryconfig.py
	$(BIN)/ruff format --check ctxcache tasks tests benchmarks celeryconfig.py
	$(BIN)/mypy --strict ctxcache tasks celeryconfig.py

test: lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not celery"

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks

# Workers SIGKILLed and the cache's Redis crashed during 1,000 bookings, per broker layout.
bench-faults: $(STAMP)
	$(BIN)/python -m benchmarks faults

demo: $(STAMP)
	$(BIN)/python -m ctxcache.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .ctxcache-demo
