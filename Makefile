# Two commands on a fresh machine: `make demo` (install + a real audit) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The model servers the endpoint tests start (mlflow, mlserver) live apart: full mlflow needs pyarrow<26.
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed

.PHONY: install serve-env demo test test-all lint bench clean

# SDV, anonymeter and their kin declare pins below the product's pandas/numpy (requirements-synthetic.txt
# says which and why): their resolvable dependencies come with the synthetic extra, they themselves without.
$(STAMP): pyproject.toml requirements-synthetic.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray,onnx,llm,diffusion,synthetic]'
	$(BIN)/pip install --quiet --no-deps -r requirements-synthetic.txt
	touch $(STAMP)

$(SERVE_STAMP): requirements-serve.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install --quiet -r requirements-serve.txt
	touch $(SERVE_STAMP)

serve-env: $(SERVE_STAMP)

install: $(STAMP) $(SERVE_STAMP)

demo: $(STAMP) $(SERVE_STAMP)
	$(BIN)/python examples/demo_data.py demo-data
	$(BIN)/membershield audit --model demo-data/model.joblib \
	    --train demo-data/members.csv --holdout demo-data/nonmembers.csv \
	    --population demo-data/population.csv --label-column digit \
	    --references 16 --out demo-out --cache demo-data/cache

# `make test` leaves out the tests marked slow (end-to-end runs that train many models or start servers
# several times) to stay under ten minutes on two cores; CI (CI=true) and `make test-all` run every test.
ifeq ($(CI),true)
TEST_SELECTION :=
else
TEST_SELECTION := -m "not slow"
endif

test: $(STAMP) $(SERVE_STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/pytest -q $(TEST_SELECTION)

test-all: $(STAMP) $(SERVE_STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/pytest -q

clean:
	rm -rf demo-data demo-out .membershield .pytest_cache
