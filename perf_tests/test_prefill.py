"""Prefill: one forward over B prompts of N tokens (compute-bound at any useful N)."""


def test_prefill(benchmark, perf, case, case_engine):
    perf.run_case(benchmark, case, case_engine)
