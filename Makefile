# The one task runner. CI (.ci/run) calls these targets verbatim.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=

.PHONY: help install up test test-fast lint typecheck proto proto-check bench browser prometheus clean

help:
	@echo "make up          run the mesh: embedded nats-server + supervisor + example workers"
	@echo "make test        lint, type-check, proto drift check, and the whole test suite"
	@echo "make test-fast   unit tests only"
	@echo "make bench       benchmarks vs raw nats-py and FastStream (not a test)"
	@echo "make proto       regenerate proto/ from the library's wire types"

$(UV):
	@echo ">> installing uv (the project's package manager) with pip"
	python3 -m pip install --user --quiet uv || python3 -m pip install --quiet uv

install: $(UV)
	@echo ">> syncing the uv workspace from uv.lock"
	@$(UV) sync --all-groups --frozen --quiet

up: install
	@$(UV) run actormesh up

lint: install
	@echo ">> ruff"
	@$(UV) run ruff check libs services tests bench
	@$(UV) run ruff format --check libs services tests bench

typecheck: install
	@echo ">> mypy --strict"
	@$(UV) run mypy libs/actormesh/src services/counter/src services/echo/src services/assistant/src services/supervisor/src

proto: install
	@$(UV) run python -m actormesh._proto proto

proto-check: install
	@$(UV) run python -m actormesh._proto proto --check

browser:
	@command -v chromium >/dev/null || { echo ">> chromium missing: installing Debian's chromium (needs root)"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  { echo "!! could not install chromium: run 'apt-get install chromium' and retry"; exit 1; }; }

prometheus:
	@command -v prometheus >/dev/null || { echo ">> prometheus missing: installing Debian's prometheus (needs root)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) || \
	  { echo "!! could not install prometheus: run 'apt-get install prometheus' and retry"; exit 1; }; }

test: install lint typecheck proto-check browser prometheus
	@echo ">> pytest (real nats-server, headless Chromium, chaos), with coverage (floor in pyproject.toml)"
	@$(UV) run coverage run -m pytest $(PYTEST_ARGS)
	@echo ">> coverage (fails below the floor, fail_under in pyproject.toml)"
	@$(UV) run coverage report

test-fast: install
	@$(UV) run pytest tests/unit $(PYTEST_ARGS)

bench: install
	@$(UV) run python -m bench $(BENCH_ARGS)

clean:
	rm -rf .actormesh test-artifacts bench/results .pytest_cache .mypy_cache .ruff_cache .coverage build libs/actormesh/build
