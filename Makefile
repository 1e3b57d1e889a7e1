# The two commands of the README: `make demo` and `make test`.
# Each creates the virtual environment .venv on first use and installs hamnet into it,
# with the exact versions tested pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hamnet-installed
DEMO_DIR ?= demo-output

.PHONY: demo test test-slow bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hamnet demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
