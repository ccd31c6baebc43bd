"""Decode: one step for B sequences on a KV cache already holding L tokens (memory-bound)."""


def test_decode(benchmark, perf, case, case_engine):
    perf.run_case(benchmark, case, case_engine)
