"""End-to-end generation of a fixed number of tokens (prefill + every decode step)."""


def test_generate(benchmark, perf, case, case_engine):
    perf.run_case(benchmark, case, case_engine)
