# Two entry points, each self-sufficient on a fresh machine with Python 3.11:
#   make study   set up .venv, then run the study on the bundled IMDB data (profile chosen by the device)
#   make test    set up .venv, then run the whole test suite (make test-fast: the quick lane for editing)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: study test test-fast setup clean-cache

setup: $(STAMP)

# requirements-bench.txt includes requirements.txt and adds the bench's optional Hugging Face references.
$(STAMP): requirements.txt requirements-bench.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

study: $(STAMP)
	$(PY) -m nanogpt study $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# The edit loop: everything but the tests marked slow (the study, the bench, subprocesses, long runs).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

clean-cache:
	rm -rf data/cache
