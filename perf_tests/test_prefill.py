"""Prefill: one forward over B prompts of N tokens (compute-bound at any useful N)."""


def test_prefill(benchmark, perf, case, case_engine):
    step = case_engine.prefill_case(case.batch_size, case.prompt_len, seed=perf.options.seed)
    perf.bench_step(benchmark, case, step)
