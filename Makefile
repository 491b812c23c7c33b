# The two commands a newcomer needs: `make up` runs the stack, `make test` passes the tests.
# Each installs what it needs first, so both work on a fresh machine.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: install up test lint format

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[dev]'

up: install
	dotshop up

test: install
	ruff check .
	ruff format --check .
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .
