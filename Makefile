# Two entry points: `make demo` (the main job) and `make test` (what CI runs: .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo lint typecheck test bench clean docs docs-check dist dist-check

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

# Style and bug checks (rules and their reasons: [tool.ruff] in pyproject.toml, "Checks" in CONTRIBUTING.md).
lint: install
	$(BIN)/ruff check src tests bench examples docs/tools

# Types: mypy on src/monge with the strictness of [tool.mypy] in pyproject.toml.
typecheck: install
	$(BIN)/mypy

# Everything CI checks: style, types, the test suite, then the strict docs build, which runs the
# gallery scripts in quick mode (MONGE_QUICK=1; a failing example fails the build).
test: lint typecheck
	$(BIN)/python -m pytest -q
	$(MAKE) docs-check

bench: install
	$(BIN)/python bench/ot_solvers.py

# The documentation site in site/: `mkdocs build --strict` (warnings are errors, no network);
# its hook (docs/tools/hooks.py) runs the gallery scripts of examples/ in quick mode first.
docs: install
	$(BIN)/pip install -q -c constraints.txt -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 OMP_NUM_THREADS=1 $(BIN)/mkdocs build --strict

# The docs build, checked: `docs`, then the pages every build must have (run by `make test`).
docs-check: docs
	test -f site/index.html && test -f site/api/monge/index.html && test -f site/gallery/index.html

# A wheel and an sdist in dist/ (needs only a venv with `build`; monge itself is not installed).
dist:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt build
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# Both install into a fresh venv (torch from the local wheel) and the CLI runs there.
dist-check: dist
	DIR=$$(mktemp -d) && $(PYTHON) -m venv $$DIR/venv && \
	$$DIR/venv/bin/pip install -q "$(TORCH)" && \
	$$DIR/venv/bin/pip install -q -c constraints.txt dist/monge-*.whl && \
	(cd $$DIR && venv/bin/monge --help >/dev/null && \
	 venv/bin/python -c "import importlib.resources as r, monge; assert r.files('monge').joinpath('py.typed').is_file(); print('wheel: monge', monge.__version__)") && \
	$$DIR/venv/bin/pip install -q --no-deps --force-reinstall dist/monge-*.tar.gz && \
	(cd $$DIR && venv/bin/monge --help >/dev/null && \
	 venv/bin/python -c "import importlib.resources as r, monge; assert r.files('monge').joinpath('py.typed').is_file(); print('sdist: monge', monge.__version__)") && \
	rm -rf $$DIR

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache site dist
