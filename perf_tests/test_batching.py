"""The batch-size sweep: B identical requests at once; throughput rises, per-request latency too."""


def test_batching(benchmark, perf, case, case_engine):
    perf.run_case(benchmark, case, case_engine)
