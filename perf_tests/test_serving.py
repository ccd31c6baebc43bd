"""Serving: a seeded mixed-length workload through every engine that can take it, at equal KV memory."""


def test_serving(benchmark, perf, case, case_engine):
    perf.run_case(benchmark, case, case_engine)
