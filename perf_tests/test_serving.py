"""Serving: a seeded mixed-length workload through every engine that can take it."""


def test_serving(benchmark, perf, case, case_engine):
    requests = perf.requests(case)
    result = perf.bench_generate(benchmark, case, requests)
    assert result.generated_tokens == sum(r.max_new_tokens for r in requests)
