"""End-to-end generation of a fixed number of tokens (prefill + every decode step)."""


def test_generate(benchmark, perf, case, case_engine):
    result = perf.bench_generate(benchmark, case, perf.requests(case))
    assert result.generated_tokens == case.batch_size * case.new_tokens
