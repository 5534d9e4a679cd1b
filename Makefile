# Two commands set up everything on a fresh machine: `make book` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HNSWLIB_NO_NATIVE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install browser book test lint lab benchmark clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.2"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,dev]"
	$(PY) -m retrieval_lib.infra.kernel install > /dev/null
	touch $(STAMP)

install: $(STAMP)

## Execute every chapter and build the HTML book into book/_build/html (strict: warnings are errors).
book: $(STAMP)
	$(PY) book/build.py

## Debian's headless Chromium and its driver, for the browser check of the built book (apt-get, when missing).
browser:
	@if ! command -v chromium > /dev/null || ! command -v chromedriver > /dev/null; then \
	    sudo=""; if [ "$$(id -u)" -ne 0 ] && command -v sudo > /dev/null; then sudo="sudo"; fi; \
	    $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends chromium chromium-driver; \
	fi

## Install and run the whole test suite (unit tests, then the executed book, its claims and a browser check).
test: $(STAMP) browser
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

## Open the chapters in JupyterLab on the project's environment.
# JupyterLab refuses to run as root unless told to (containers often run as root); PRESET=tiny opens
# every chapter on the tiny world, which runs in seconds.
lab: $(STAMP)
	$(if $(PRESET),RETRIEVAL_LIB_PRESET=$(PRESET)) $(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

benchmark: $(STAMP)
	$(PY) benchmarks/run_benchmarks.py --book

clean:
	rm -rf book/_build .cache
