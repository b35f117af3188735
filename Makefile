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

# Debian packages the tests and the benchmark run for real: git and git-lfs
# (interoperability), redis-server (Celery workers), chromium (the HTML report
# rendered in a headless browser).
SYSTEM_PACKAGES := git:git git-lfs:git-lfs redis-server:redis-server chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh demo-work

test: install system-deps
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check pixvcs tests $(wildcard bench scripts)
	$(BIN)/mypy

# run.py renders results.md whole; the others put their own sections back in
# (bench/mdsections.py). bench/neardup_quality.py needs scikit-image: see bench/README.md.
bench: install system-deps
	$(BIN)/python bench/run.py
	$(BIN)/python bench/transfer_bench.py
	$(BIN)/python bench/crawl_bench.py
	$(BIN)/python bench/status_bench.py
	$(BIN)/python bench/change_bench.py
	$(BIN)/python bench/read_bench.py
	$(BIN)/python bench/neardup_bench.py --md bench/results.md

clean:
	rm -rf $(VENV) demo-work bench/work
