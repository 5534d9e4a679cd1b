# Two commands set up everything on a fresh machine: `make book` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HNSWLIB_NO_NATIVE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install book test lint lab benchmark clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.2"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (retrieval_lib)" > /dev/null
	touch $(STAMP)

install: $(STAMP)

## Execute every chapter and build the HTML book into book/_build/html (strict: warnings are errors).
book: $(STAMP)
	$(PY) book/build.py

## Install and run the whole test suite (unit tests, then the executed book and its claims).
test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

## Open the chapters in JupyterLab on the project's environment.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

benchmark: $(STAMP)
	$(PY) benchmarks/run_benchmarks.py --book

clean:
	rm -rf book/_build .cache
