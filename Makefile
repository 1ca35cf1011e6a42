# coverwatch: `make run` runs the demo job end to end, `make test` runs the tests.
# Everything a fresh clone needs (venv, Python packages, Kafka jars) is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-faults test-faults-1m test-faults-hog bench bench-quick clean kafka-start kafka-stop

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,plot]'
	@touch $(STAMP)

install: $(STAMP)
	@bash infra/kafka.sh fetch

run: install
	@bash infra/run.sh

test: install
	$(BIN)/python -m pytest -q -m "not faults and not faults_1m"

test-faults: install
	$(BIN)/python -m pytest -q -m faults tests/

# opt-in: a million long-tail tenants through a worker SIGKILLed and restarted (slow)
test-faults-1m: install
	$(BIN)/python -m pytest -q -m faults_1m tests/test_faults_tenants.py

# the fault suite RUNS times in a row, each beside a CPU hog; records runs_with_cpu_hog
RUNS ?= 5
test-faults-hog: install
	$(BIN)/python -m pipeline.testing.hog_runs --runs $(RUNS)

bench: install
	$(BIN)/coverwatch bench detect --out bench/results/detect.json

bench-quick: install
	$(BIN)/coverwatch bench detect --quick --out bench/results/detect.json

kafka-start: install
	@bash infra/kafka.sh start --data var/kafka --sasl
	@echo 'clients log in: eval "$$(bash infra/kafka.sh env)"'

kafka-stop:
	@bash infra/kafka.sh stop --data var/kafka

clean:
	rm -rf var .pytest_cache
