# Two entry points do all the set-up on a fresh machine with Python 3.11:
#   make demo   - create/reuse .venv, install, run the main job
#   make test   - create/reuse .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmir-installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the local CPU wheel; a bare requirement would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmir demo

# ruff (lint + format, [tool.ruff] in pyproject.toml), then lint-imports: the layers features -> mmir_env -> agents -> experiments ([tool.importlinter] in pyproject.toml);
# --no-cache: the graph takes half a second, and a cache shared by differently configured runs can go stale
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/agent_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
