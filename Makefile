# One command surface; .ci/run calls the same targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test proto bench bench-media bench-farm bench-orchestrator bench-gateway bench-pixels bench-tickets bench-chain bench-costs contracts contracts-check devchain run clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,s3]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check farm gateway chain tests
	$(BIN)/ruff format --check farm gateway chain tests
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: bench-media bench-farm bench-costs bench-orchestrator bench-gateway bench-pixels bench-tickets bench-chain

# Needs Debian's ffmpeg for the side-by-side run (apt-get install ffmpeg).
bench-media: $(STAMP)
	@command -v ffmpeg >/dev/null || (apt-get install -y -qq ffmpeg >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq ffmpeg))
	$(BIN)/python tests/bench/bench_media.py --runs $${RUNS:-7}

# go-livepeer's wire protocol subset: regenerate the committed protobuf modules and stubs.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. chain/pm.proto farm/golivepeer/net.proto

# The one-command demo: node API, a worker and beat on the embedded Redis and SQLite.
run: $(STAMP)
	$(BIN)/farm up

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Needs Redis and PostgreSQL running (as .ci/run starts them).
bench-farm: $(STAMP)
	$(BIN)/python -m tests.bench.bench_farm

# Needs Redis and PostgreSQL running, on a quiet machine: control-plane CPU per segment by
# component, and cores per 1,000 concurrent 2 s streams (docs/scaling.md).
bench-costs: $(STAMP)
	$(BIN)/python -m tests.bench.bench_costs

# Needs Redis and PostgreSQL running, and anvil (chain/contracts' npm packages): /segment with
# tickets beside a direct submit.
bench-orchestrator: $(STAMP)
	$(BIN)/python -m tests.bench.bench_orchestrator

# Needs Redis and PostgreSQL running.
bench-gateway: $(STAMP)
	$(BIN)/python -m tests.bench.bench_gateway

# CPU per segment of the gateway's pixel check: counted from packets against decoded.
bench-pixels: $(STAMP)
	$(BIN)/python -m tests.bench.bench_pixels --runs $${RUNS:-50}

# Ticket validations per second per core, coincurve against pure Python.
bench-tickets: $(STAMP)
	$(BIN)/python -m tests.bench.bench_tickets

# Development contracts: recompile (npm solc, pinned), check the committed artifacts, or run
# a bootstrapped anvil chain.
contracts: $(STAMP)
	$(BIN)/python -m chain.compile

contracts-check: $(STAMP)
	$(BIN)/python -m chain.compile --check

devchain: $(STAMP)
	$(BIN)/python -m chain.devchain devchain.json

# Gas per redeemed ticket, batched against one transaction per ticket, on anvil.
bench-chain: $(STAMP)
	$(BIN)/python -m tests.bench.bench_chain
