# Two commands on a fresh machine: `make run` (the service) and `make test` (the suite).
# Each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint lock replay bench soak mutants clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch is pinned here (the CPU wheel); the project itself asks only for a range.
	$(BIN)/pip install "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/smlrec serve

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# requirements.lock: the runtime packages pinned (the container image installs them)
lock: $(STAMP)
	$(BIN)/python tools/lock.py > requirements.lock

replay: $(STAMP)
	$(BIN)/smlrec replay --dataset ml-100k --methods sml,full_retrain,fine_tune,spmf,popularity --out runs/ml-100k

# Load benchmarks (minutes; wrk gives the throughput figures: apt-get install wrk).
# Figures and the machine they ran on go into bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.ingestion --distributed
	$(BIN)/python -m bench.faults

# Hours-long checks of the distributed mode on private Redis/PostgreSQL servers
# (sizes are flags: see python -m bench.soak --help and python -m bench.faults --help).
soak: $(STAMP)
	$(BIN)/python -m bench.soak
	$(BIN)/python -m bench.faults --drills all --repeat 3

# Mutation testing (mutmut), one module at a time with the tests that exercise it:
# `make mutants` runs every target, `make mutants TARGETS="periods transfer"` some.
# CPU-heavy (minutes to an hour per module); scores and survivors: tests/mutation/REPORT.md.
mutants: $(STAMP)
	$(BIN)/python tests/mutation/run.py $(TARGETS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
