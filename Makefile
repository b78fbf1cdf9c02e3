# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
# `make test` is the whole suite (CI's and the README's test command), with Hypothesis' "ci" profile
# (a fixed sequence of examples); `make test-fast` leaves out the tests marked slow, for development.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast install data clean

$(BIN)/miniunlearn: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/miniunlearn

install: $(BIN)/miniunlearn

demo: install
	$(BIN)/miniunlearn demo

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest --hypothesis-profile=ci

test-fast: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow" --hypothesis-profile=dev

# Optional: Fashion-MNIST from Debian (needs root); used by the paper benchmark, not by demo or tests.
data:
	apt-get update && apt-get install -y dataset-fashion-mnist

clean:
	rm -rf $(VENV) build *.egg-info
