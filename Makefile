# Two commands for a fresh machine:
#   make demo   set up, then measure the groceries-small use case on this machine and write a report
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/etude: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/etude

demo: setup
	status=0; $(BIN)/etude local --stack groceries-small --only gru4rec,sasrec --ramp-seconds 20 --hold-seconds 10 \
		--out results/local || status=$$?; \
	$(BIN)/etude report results/local --out results/report && exit $$status

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

.PHONY: setup demo test
