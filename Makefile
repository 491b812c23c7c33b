# The two commands a newcomer needs: `make up` runs the stack, `make test` passes the tests.
# Each installs what it needs first, so both work on a fresh machine.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: install system-deps up test lint format

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[dev]'

# What the tests need from Debian: a real Alertmanager for the alert tests, promtool (package
# prometheus) for the alert rules' unit tests, `wrk`, the load generator of `dotshop bench
# checkout`, and Chromium for the console's browser test (driven by Playwright, never a browser
# download). apt runs only when one is missing (sudo when not root).
system-deps:
	@{ command -v prometheus-alertmanager && command -v promtool && command -v wrk && \
	   command -v chromium; } >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    prometheus-alertmanager prometheus wrk chromium chromium-driver; }

up: install
	dotshop up

test: install system-deps
	ruff check .
	ruff format --check .
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .
