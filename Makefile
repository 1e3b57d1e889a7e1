# The two commands of the README: `make demo` and `make test`.
# Each creates the virtual environment .venv on first use and installs hamnet into it,
# with the exact versions tested pinned by constraints.txt.
# `make docs` builds the documentation site into site/ (strict: a broken link fails);
# `make test-lowest` runs the fast tests at the lowest versions pyproject.toml allows (constraints-lowest.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hamnet-installed
DOCS_STAMP := $(VENV)/.hamnet-docs-installed
LOWEST ?= .venv-lowest
LOWEST_STAMP := $(LOWEST)/.hamnet-installed
DEMO_DIR ?= demo-output

.PHONY: demo test test-slow test-lowest docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,docs]'
	touch $(DOCS_STAMP)

$(LOWEST_STAMP): pyproject.toml constraints-lowest.txt
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet -c constraints-lowest.txt -e '.[dev]'
	touch $(LOWEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/hamnet demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-lowest: $(LOWEST_STAMP)
	$(LOWEST)/bin/python -m pytest -q

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) $(LOWEST) $(DEMO_DIR) site build *.egg-info
