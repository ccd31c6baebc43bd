"""Decode: one step for B sequences on a KV cache already holding L tokens (memory-bound)."""


def test_decode(benchmark, perf, case, case_engine):
    step = case_engine.decode_case(case.batch_size, case.context_len, seed=perf.options.seed)
    perf.bench_step(benchmark, case, step)
