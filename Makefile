# make run    set up what is missing, then serve the default model pair (CONFIG=path to override)
# make test   set up what is missing, then run every check: format, lint, types, tests
PY := .venv/bin/python
CONFIG ?=
PYTEST_ARGS ?=
CODE := $(wildcard server.py gateway planner evaluation benchmarks loadtest workload decision cpu_sampler scripts tests)

.PHONY: setup models run test check lint format typecheck unit plan eval bench bench-gateway bench-mirror bench-routing loadtest report

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

# make eval   answer quality through the running `make run` gateway: LIMIT=N items per suite,
#             MODELS=r1,qwen SUITES=code,math,logic,smoke CONCURRENCY=16 SAMPLES=1 MAX_TOKENS=
#             EVAL_OUT=results/eval/NAME RESUME=1 GATEWAY=http://127.0.0.1:8000
#             UNSAFE_CODE=1: run model-written code even where the sandbox has no namespace isolation
GATEWAY ?= http://127.0.0.1:8000
LIMIT ?=
MODELS ?=
SUITES ?=
CONCURRENCY ?=
SAMPLES ?=
MAX_TOKENS ?=
EVAL_OUT ?=
RESUME ?=
UNSAFE_CODE ?=

eval: setup
	$(PY) scripts/eval.py --gateway $(GATEWAY) $(if $(LIMIT),--limit $(LIMIT)) \
		$(if $(MODELS),--models $(MODELS)) $(if $(SUITES),--suites $(SUITES)) \
		$(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) $(if $(SAMPLES),--samples $(SAMPLES)) \
		$(if $(MAX_TOKENS),--max-tokens $(MAX_TOKENS)) $(if $(EVAL_OUT),--out $(EVAL_OUT)) $(if $(RESUME),--resume) \
		$(if $(UNSAFE_CODE),--confirm-run-unsafe-code)

# make bench          engines of BENCH_CONFIG (CONFIG=... overrides): cold start, memory, single stream,
#                     concurrency sweep, transformers baseline, gateway vs direct -> results/bench/<run>/
# make bench QUICK=1  the same in a few minutes (small counts); BENCH_ARGS=any scripts/bench.py option
# make bench-gateway  the gateway's own cost against a fake upstream
# make bench-mirror   what the shadow mirror at 1.0 costs the client's request (QUICK=1: a short check)
# make bench-routing  routing policies on two SmolLM2 replicas: prefix vs least_loaded (about an hour;
#                     QUICK=1 for a few minutes) -> results/bench/routing/
# make loadtest       Locust headless through the running `make run` gateway: SCENARIO=chat-mix USERS=8
#                     DURATION=2m [CONFIG=the deployment make run serves] [LOCUST_ARGS=any other Locust or
#                     loadtest option] -> results/locust/SCENARIO_*.csv, .html
BENCH_CONFIG ?= engine_config/test.yaml
SCENARIO ?= chat-mix
USERS ?= 8
DURATION ?= 2m
LOCUST_ARGS ?=
BENCH_ARGS ?=

bench: setup
	$(PY) scripts/bench.py --config $(or $(CONFIG),$(BENCH_CONFIG)) $(if $(QUICK),--quick) $(BENCH_ARGS)

bench-gateway: setup
	$(PY) scripts/bench_gateway.py

bench-mirror: setup
	$(PY) scripts/bench_mirror.py $(if $(QUICK),--quick) $(BENCH_ARGS)
bench-routing: setup
	$(PY) scripts/bench_routing.py $(if $(QUICK),--quick) $(BENCH_ARGS)

loadtest: setup
	mkdir -p results/locust
	$(PY) -m locust -f loadtest --headless -u $(USERS) -r $(USERS) -t $(DURATION) --scenario $(SCENARIO) \
		$(if $(CONFIG),--deployment $(CONFIG)) --stop-timeout 300 \
		--csv results/locust/$(SCENARIO) --html results/locust/$(SCENARIO).html $(LOCUST_ARGS)

# make report   one replace-or-keep report from the latest `make bench` and `make eval` runs and the
#               page's votes -> results/report/<UTC time>/{report.md, report.html, report.json}:
#               GPU=H100 (adds the memory plan; GPU_CONFIG=engine_config/gpu.yaml) GPU_HOUR_USD=2.5
#               RULES=decision/rules.yaml BENCH=results/bench/<run> EVAL=results/eval/<run>
#               VOTES=.cache/votes.sqlite3 REPORT_ARGS=any other scripts/report.py option
RULES ?= decision/rules.yaml
GPU_HOUR_USD ?=
GPU_CONFIG ?=
BENCH ?=
EVAL ?=
VOTES ?=
REPORT_ARGS ?=

report: setup
	$(PY) scripts/report.py --rules $(RULES) $(if $(GPU),--gpu $(GPU)) $(if $(GPU_CONFIG),--gpu-config $(GPU_CONFIG)) \
		$(if $(GPU_HOUR_USD),--gpu-hour-usd $(GPU_HOUR_USD)) $(if $(BENCH),--bench $(BENCH)) \
		$(if $(EVAL),--eval $(EVAL)) $(if $(VOTES),--votes $(VOTES)) $(if $(CONFIG),--config $(CONFIG)) $(REPORT_ARGS)
