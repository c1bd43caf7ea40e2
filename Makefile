# The two commands a fresh machine needs are `make demo` and `make test` (see README.md); `make up` runs the platform on real servers.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
INFRA := bash deploy/local/infra.sh

.PHONY: help install demo up test lint infra-up infra-down

help:
	@echo "make demo        install, then flywheel demo: the embedded platform (flywheel up) and the whole loop"
	@echo "make up          start Kafka, MinIO and PostgreSQL (deploy/local) and the five services"
	@echo "make test        lint, type-check and run the whole test suite on those real servers"
	@echo "make lint        ruff and mypy only"
	@echo "make infra-up    only start the servers; then: eval \"\$$($(INFRA) env)\""
	@echo "make infra-down  stop the servers (their data is kept)"

# Re-installed whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	python3 -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is needed")'
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Debian's packages the tests use: docker-compose only parses docker-compose.yml (no engine is needed);
# chromium renders the monitor's dashboard headless. Installed when missing and we are root; a test that
# needs one that is still missing fails saying so.
tools:
	missing=""
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"
	command -v chromium >/dev/null || missing="$$missing chromium"
	if [[ -n "$$missing" && $$(id -u) == 0 ]]; then
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$missing >/dev/null; } || echo "could not install$$missing" >&2
	fi

infra-up:
	$(INFRA) up

infra-down:
	$(INFRA) down

# The main job on the embedded default: `flywheel demo` starts `flywheel up` (embedded) when no platform answers
# and no servers are configured (the variables deploy/local exports are dropped here), and stops it after.
demo: install
	env -u FLYWHEEL_KAFKA_BOOTSTRAP -u FLYWHEEL_DATABASE_URL -u FLYWHEEL_S3_ENDPOINT $(BIN)/flywheel demo

up: install
	eval "$$($(INFRA) up)"
	$(BIN)/flywheel up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services flywheel tests bench

test: install tools lint
	eval "$$($(INFRA) up)"
	$(BIN)/python -m pytest
