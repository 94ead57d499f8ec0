# Two entry points: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/monge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(BIN)/monge

install: $(BIN)/monge

demo: install
	OMP_NUM_THREADS=1 $(BIN)/monge demo
	@echo "monge is installed in $(VENV)/: run '. $(VENV)/bin/activate' to use the monge command (or call $(BIN)/monge)"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/ot_solvers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
