# Two commands on a fresh machine: `make serve` and `make test`.
# Both create or refresh .venv as needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed
DATA_DIR ?= data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv serve-venv system-deps lint serve serve-dev serve-prod test test-slow fuzz reliability bench train clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# torch first: 2.13.0 is a CPU wheel on the dev and CI machines; any other
# requirement that admits a newer torch would pull several GB of CUDA
# packages. A torch already in the venv is kept. torch is a dependency of
# serving too: the learner that `ranker serve` runs beside the API trains
# with it, and the encoders' ONNX graphs are exported from torch once; the
# API workers themselves never import it.
$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e .
	touch $(SERVE_STAMP)

$(STAMP): $(SERVE_STAMP)
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

serve-venv: $(SERVE_STAMP)  ## create or refresh .venv with what serving needs (no test tools)

venv: $(STAMP)  ## create or refresh .venv with the test tools too

serve: serve-venv  ## the ranking API under gunicorn (a worker per core), the online learner beside it, embedded Redis, on the demo shop with the starting policy (builds the demo index on first run)
	$(BIN)/ranker serve --demo --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

serve-dev: serve-venv  ## the same on Flask's development server in one process (debugging)
	$(BIN)/ranker serve --dev --demo --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

serve-prod: serve  ## an alias of `serve` (production-grade by default)

system-deps:  ## redis-server, chromium and chromedriver for the tests (apt, when root and missing)
	bash .ci/system-deps

lint: venv  ## ruff (lint and formatting) and lint-imports (the stages' import rules), configured in pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

test: venv system-deps lint  ## lint, then the whole test suite except the long suites (browser tests save screenshots to test-artifacts/)
	$(BIN)/python -m pytest -m "not slow" --durations=20

test-slow: venv system-deps  ## the long suites (soak, long fuzzing, full training)
	$(BIN)/python -m pytest -m slow
	$(MAKE) fuzz

fuzz: venv  ## schemathesis over every operation of /openapi.json: at least 5,000 requests, no 5xx, bodies match the schema
	RANKER_FUZZ_EXAMPLES=300 RANKER_FUZZ_MIN_REQUESTS=2500 $(BIN)/python -m pytest -s tests/api/test_fuzz.py

reliability: test-slow  ## the long reliability suites: slow tests, fuzzing (5,000+ requests), the 10-minute soak
	OMP_NUM_THREADS=1 $(BIN)/python bench/soak.py --stream-max-len 10000 --name soak-capped  # steady state: the event log at its cap within the 10 minutes

bench: venv  ## benchmarks that print figures (see bench/README.md); about 100 minutes on 2 cores
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/simulator.py
	$(BIN)/python bench/policy.py --train 300000
	$(BIN)/python bench/session.py --slate
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/online.py
	$(BIN)/python bench/api_catalog.py
	$(BIN)/python bench/catalog_home.py
	$(BIN)/python bench/ab.py
	$(BIN)/python bench/cluster.py

train: venv  ## train a PPO ranking policy on the demo shop's session environment into $(DATA_DIR)/policies/trained
	$(BIN)/ranker train --env envs/SessionShopping-v0 --timesteps 300000 --out $(DATA_DIR)/policies/trained --catalog $(DATA_DIR)

clean:  ## remove the venv and the demo data
	rm -rf $(VENV) $(DATA_DIR)
