# make run    set up what is missing, then serve the default model pair (CONFIG=path to override)
# make test   set up what is missing, then run every check: format, lint, types, tests
PY := .venv/bin/python
CONFIG ?=
PYTEST_ARGS ?=
CODE := server.py gateway planner scripts tests loadtest

.PHONY: setup models run test check lint format typecheck unit plan

setup:
	@bash scripts/setup.sh

models: setup

run: setup
	$(PY) server.py $(if $(CONFIG),--config $(CONFIG))

test: setup check

check: lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -m "not engines" $(PYTEST_ARGS)

lint:
	$(PY) -m ruff format --check $(CODE)
	$(PY) -m ruff check $(CODE)

format:
	$(PY) -m ruff format $(CODE)
	$(PY) -m ruff check --fix $(CODE)

typecheck:
	$(PY) -m mypy

plan:  ## make plan GPU=H200 [CONFIG=engine_config/gpu.yaml]: GPU memory plan for a deployment
	$(PY) scripts/plan_memory.py --config $(or $(CONFIG),engine_config/gpu.yaml) $(if $(GPU),--gpu $(GPU))
