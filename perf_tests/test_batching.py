"""The batch-size sweep: B identical requests at once; throughput rises, per-request latency too."""


def test_batching(benchmark, perf, case, case_engine):
    result = perf.bench_generate(benchmark, case, perf.requests(case))
    assert all(len(o.token_ids) == case.new_tokens for o in result.outputs)
