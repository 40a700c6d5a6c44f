# Two commands for a fresh machine:
#   make demo   set up, then measure the groceries-small use case on this machine and write a report
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# RecBole, the reference of the model tests, without its dependencies (what it imports is in the test extra)
RECBOLE := recbole==1.2.1

$(BIN)/etude: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps '$(RECBOLE)'
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
