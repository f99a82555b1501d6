# Two commands for a newcomer: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
LINT_PATHS := app agent web storage archive tests bench scripts

.PHONY: setup demo test bench soak soak-ci lint clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/netmon demo

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	bash scripts/bench.sh

# Chaos soak (tests/soak, docs/reliability.md), run as root: 10 minutes with a kill -9 every
# 60 s, then every fuzz target with a large budget and fresh randomness.
soak: setup
	SOAK_SECONDS=$${SOAK_SECONDS:-600} SOAK_KILL_EVERY=$${SOAK_KILL_EVERY:-60} \
	  SOAK_RATE=$${SOAK_RATE:-3000} SOAK_VOLUME_MB=$${SOAK_VOLUME_MB:-3072} \
	  $(VENV)/bin/pytest -m soak -p no:cacheprovider -s tests/soak
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-3000} FUZZ_RANDOM=1 $(VENV)/bin/pytest -p no:cacheprovider tests/fuzz

# The CI-sized soak: 3 minutes at 2,000 flows/s, a kill -9 every 40 s (the fuzz targets already
# ran in `make test` with their short budget).
soak-ci: setup
	SOAK_SECONDS=180 SOAK_KILL_EVERY=40 SOAK_RATE=$${SOAK_RATE:-2000} \
	  $(VENV)/bin/pytest -m soak -p no:cacheprovider -s tests/soak

# ruff (pinned in pyproject's dev extra) and mypy --strict over the installed `netmon` package;
# .ci/run runs this before the tests, and .pre-commit-config.yaml runs the same on commit.
lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	VENV=$(VENV) bash scripts/typecheck.sh

clean:
	rm -rf $(VENV) .pytest_cache .netmon-demo build
