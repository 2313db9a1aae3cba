# Two commands on a fresh machine: `make demo` (install + a real audit) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo_data.py demo-data
	$(BIN)/membershield audit --model demo-data/model.joblib \
	    --train demo-data/members.csv --holdout demo-data/nonmembers.csv \
	    --population demo-data/population.csv --label-column digit \
	    --references 16 --out demo-out --cache demo-data/cache

test: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/pytest -q

clean:
	rm -rf demo-data demo-out .membershield .pytest_cache
