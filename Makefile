# `make bench` and `make test` each set up .venv on a fresh machine (Python 3.11+, pip, make).
# torch: an already installed build is kept (GPU machines; the venv sees system packages);
# otherwise the pinned CPU wheel is installed first, so pip never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
RESULTS ?= results/latest.json
REPORT_DIR ?= report
BENCH_ARGS ?=
TEST_ARGS ?=

.PHONY: setup bench test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[dev]"
	@touch $(STAMP)

bench: $(STAMP)
	@mkdir -p $(dir $(RESULTS))
	$(PY) -m pytest perf_tests --benchmark-json $(RESULTS) $(BENCH_ARGS)
	$(PY) -m harness report $(RESULTS) --out $(REPORT_DIR)

test: $(STAMP)
	$(PY) -m pytest tests perf_tests --models tiny --benchmark-disable $(TEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check harness perf_tests tests examples

clean:
	rm -rf $(VENV) results $(REPORT_DIR) *.egg-info
