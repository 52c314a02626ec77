# Quick start: `make demo` (the whole loop on real data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= ../shared/data

.PHONY: demo doctor test lint bench bench-signatures bench-ingest clean install install-dev bench-ui bench-judge bench-online bench-scale bench-local-judge bench-discovery bench-gate

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch==2.13.0 first: the CPU build on this machine's disk (an unpinned torch pulls CUDA).
# llama-cpp-python next, built portably (x86-64 + AVX2/FMA/F16C, no AVX-512/AMX; the generic baseline on
# ARM) into a wheel folder keyed by version + flags, so a natively built wheel is never reused:
# see scripts/install-llama-cpp.sh. `assay doctor` then checks the local judge on a 600-token prompt.
$(VENV)/.installed: $(PY) pyproject.toml scripts/install-llama-cpp.sh
	$(PIP) install --quiet torch==2.13.0
	bash scripts/install-llama-cpp.sh $(PY)
	$(PIP) install --quiet -e '.[all]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# `assay doctor` first: a missing model or a judge that cannot run stops here, with the fix, in seconds.
demo: $(VENV)/.installed
	$(VENV)/bin/assay --workspace demo-workspace doctor
	$(VENV)/bin/assay demo --data $(DATA) --out demo-workspace

doctor: $(VENV)/.installed
	$(VENV)/bin/assay doctor --dev

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q --durations=15

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src

# Signatures vs. AgentRx human root causes (ARI, NMI, purity; TF-IDF + k-means baseline) and the
# 10,000-unit scaling run; writes benchmarks/results/signatures.json. UNITS=1000 for a quicker run.
UNITS ?= 10000
bench-signatures: $(VENV)/.installed
	$(PY) benchmarks/bench_signatures.py --units $(UNITS)

# Review-page render time for a 500-span unit, p50/p95 over 50 requests; writes benchmarks/results/ui.json.
bench-ui: $(VENV)/.installed-dev
	$(PY) benchmarks/bench_ui.py

# OTLP/HTTP ingestion into `assay serve` (protobuf and JSON): spans/s, p50/p99 latency, peak RSS;
# writes benchmarks/results/ingest.json. SPANS=10000 for a quicker run.
SPANS ?= 100000
# Phoenix goes in its own venv (.bench-phoenix): it is a large install with its own pins.
PHOENIX_VENV ?= .bench-phoenix
$(PHOENIX_VENV)/bin/phoenix:
	python3 -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install --quiet arize-phoenix

bench-ingest: $(VENV)/.installed-dev $(PHOENIX_VENV)/bin/phoenix
	$(PY) benchmarks/bench_ingest.py --spans $(SPANS) --phoenix $(PHOENIX_VENV)/bin/phoenix

# 500 judge calls against a local OpenAI-compatible server answering after 200 ms, at concurrency 16:
# throughput as a share of the bound (beside a pure-httpx client's), and the cached re-run's model calls; then
# 50 calls to llama_cpp.server with SmolLM2 (calls/s, tokens/s); writes benchmarks/results/judge.json.
bench-judge: $(VENV)/.installed-dev
	flock /tmp/assay-bench.lock $(PY) benchmarks/bench_judge.py

# OTLP ingest spans/s of `assay serve` with no worker, `--worker` idle, and `--worker` busy (a code check;
# the local SmolLM2 judge); writes benchmarks/results/online.json. ONLINE_SPANS=8704 for a quicker run.
ONLINE_SPANS ?= 17408
bench-online: $(VENV)/.installed-dev
	flock /tmp/assay-bench.lock $(PY) benchmarks/bench_online.py --spans $(ONLINE_SPANS)

# Backfill units/s (code evaluator over 2,000 real units, and a small llm_judge part): local executor vs Ray
# on 1 and 2 worker processes, on PostgreSQL (ASSAY_TEST_POSTGRES_URL, or .ci/postgres.sh starts one), plus
# store bytes per span; writes benchmarks/results/scale.json.
bench-scale: $(VENV)/.installed-dev
	ASSAY_TEST_POSTGRES_URL="$${ASSAY_TEST_POSTGRES_URL:-$$(bash .ci/postgres.sh)}" \
	  flock /tmp/assay-bench.lock $(PY) benchmarks/bench_scale.py

clean:
	rm -rf demo-workspace report.html .pytest_cache

# The local judge in its child process vs llama-cpp-python in-process: per-call overhead (median, p95) on a short
# prompt and a 600-token one; writes benchmarks/results/local_judge.json.
bench-local-judge: $(VENV)/.installed-dev
	flock /tmp/assay-bench.lock $(PY) benchmarks/bench_local_judge.py

# Failure discovery without outcomes (issue 17): detectors vs the reward on 300 tau-bench runs (withheld),
# signatures vs AgentRx human categories (ARI/NMI/purity/coverage vs TF-IDF + k-means), and the discovery
# curve (queue order vs random review); writes benchmarks/results/discovery.json.
bench-discovery: $(VENV)/.installed-dev
	flock /tmp/assay-bench.lock $(PY) benchmarks/bench_discovery.py --part all
