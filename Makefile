# Two commands on a fresh machine: `make demo` and `make test`. Each does its own setup.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Bytecode caches on, whatever the shell says: without them every `rtphelper` start compiles rtpcore (~0.12 s).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup test-setup demo typecheck test test-fast bench e2e-tests clean start server deploy worker serve

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)
	@bash scripts/system-deps.sh

test-setup: $(STAMP)
	@bash scripts/system-deps.sh test
	@bash scripts/build-rpcapd.sh >/dev/null || echo "rpcapd could not be built: the RPCAP tests will skip"

demo: setup
	$(PY) -m flows.demo

# Prefect (scripts/desk.sh; README "Running with Prefect"). PREFECT_API_URL defaults to http://127.0.0.1:4200/api.
# `make start`: server + pool + deployments + worker on this machine, prints the UI address; Ctrl-C stops all.
start: setup
	@PY=$(PY) bash scripts/desk.sh start

# The parts, for a real installation (no setup step: run `make setup` once on that machine).
server:
	@PY=$(PY) bash scripts/desk.sh server

deploy:
	@PY=$(PY) bash scripts/desk.sh deploy

worker:
	@PY=$(PY) bash scripts/desk.sh worker

# `rtphelper serve` beside a worker: output links of local sessions open in the browser (RTPHELPER_SERVE_SECRET).
serve:
	@PY=$(PY) bash scripts/desk.sh serve

# Static types of rtpcore/, tasks/, flows/ ([tool.mypy] in pyproject.toml); `make test` runs it before pytest.
typecheck: $(STAMP)
	$(PY) -m mypy

test: test-setup typecheck
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q tests/rtpcore

bench: test-setup
	$(PY) bench/run.py

e2e-tests: setup
	$(PY) scripts/e2e_replay.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache demo-output bench/out
