# The two commands a newcomer needs: `make up` runs the stack, `make test` passes the tests.
# Each installs what it needs first, so both work on a fresh machine.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: install system-deps infra-tools up test lint format

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

# The Terraform tests' tools (tests/infra/test_terraform_fmt.py, test_checkov.py), each built
# once under .dotshop/tools and skipped when present: checkov in a virtual environment of its
# own (its pinned dependencies must not move the project's), and HashiCorp's hclwrite
# formatter compiled to WebAssembly (npm @cdktf/hcl-tools) standing in for `terraform fmt`,
# whose binary is neither in Debian nor downloadable here. Pinned: a new checkov brings new
# checks, and adopting them is a change of its own.
TOOLS := .dotshop/tools
CHECKOV_VERSION := 3.3.30
HCL_TOOLS_VERSION := 0.21.0

infra-tools: $(TOOLS)/checkov/.installed-$(CHECKOV_VERSION) $(TOOLS)/hcl/.installed-$(HCL_TOOLS_VERSION)

$(TOOLS)/checkov/.installed-$(CHECKOV_VERSION):
	rm -rf $(TOOLS)/checkov
	$(PYTHON) -m venv $(TOOLS)/checkov
	nice -n 19 $(TOOLS)/checkov/bin/python -m pip install $(PIP_FLAGS) 'checkov==$(CHECKOV_VERSION)'
	touch $@

$(TOOLS)/hcl/.installed-$(HCL_TOOLS_VERSION):
	@command -v npm >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	rm -rf $(TOOLS)/hcl
	npm install --prefix $(TOOLS)/hcl --no-audit --no-fund --silent '@cdktf/hcl-tools@$(HCL_TOOLS_VERSION)'
	touch $@

up: install
	dotshop up

test: install system-deps infra-tools
	ruff check .
	ruff format --check .
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .
