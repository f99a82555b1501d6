# Two commands for a newcomer: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench soak lint clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/netmon demo

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	bash scripts/bench.sh

soak: setup
	$(VENV)/bin/pytest -m soak -p no:cacheprovider tests/soak

lint: setup
	$(VENV)/bin/ruff check app agent web storage archive tests bench

clean:
	rm -rf $(VENV) .pytest_cache .netmon-demo
