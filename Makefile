# The two set-up commands: `make run` (the whole local stack) and `make test`.
# Each creates the virtualenv and installs what it needs; the Kafka broker's jars
# are resolved from Maven Central on first use and cached in ~/.cache/sluice.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-e2e install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/sluice up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The two lanes of `make test` (tests/lanes.py puts each test in one): the quick one needs
# no service, the other a real broker, schema registry or ClickHouse.
test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .sluice
