# pixvcs: make demo | make test | make lint | make bench
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test lint bench clean

$(BIN)/pixvcs: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/pixvcs

# git and git-lfs are needed by the interoperability tests and the benchmark.
system-deps:
	@command -v git >/dev/null && command -v git-lfs >/dev/null || { \
	  $(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q git git-lfs; }

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh demo-work

test: install system-deps
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check pixvcs tests $(wildcard bench scripts)
	$(BIN)/mypy

bench: install system-deps
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) demo-work bench/work
