"""The pieces the benchmark session is made of, each on its own: the case-kind registry, the options
table, the results schema, the engine cache, the case timer and the gate run."""

import dataclasses
import json

import pytest
import torch

from harness.baseline.run import gate_this_run, judge
from harness.cases import KINDS, Case, CaseKind, build_cases, get_kind
from harness.engine_cache import EngineCache
from harness.engines import EngineConfig
from harness.engines.paged.scheduler import SchedulerConfig
from harness.errors import EXIT_OK, EXIT_REGRESSION, BaselineError, ConfigError, UnknownNameError
from harness.judge import Thresholds
from harness.options import OPTIONS, add_options, options_from
from harness.results import BenchRecord, CaseResult, ResultsFile
from harness.settings import PerfOptions
from harness.timer import CaseTimer

# --- case kinds ------------------------------------------------------------------------------------


def test_every_kind_names_its_cases_stably():
    ids = {k: [c.id for c in build_cases(k, "default", ["small"], None, None, lambda e, kind: True)] for k in KINDS}
    assert ids["prefill"][:2] == ["small-manual-bs1-prompt32", "small-manual-bs1-prompt256"]
    assert "small-paged-bs8-ctx512" in ids["decode"]
    assert "small-static-batch-bs16-prompt32-new32" in ids["batching"]
    assert ids["generate"][0] == "small-hf-generate-bs1-prompt32-new32"
    assert ids["serving"] == ["small-static-batch-mixed16", "small-paged-mixed16"]


def test_step_kinds_need_the_engines_own_step_method():
    class OnlyGenerate:
        name = "only-generate"

    cache = EngineCache(PerfOptions(), {}, torch.device("cpu"), "float32")
    cache.engine_class = lambda name: OnlyGenerate
    assert not cache.engine_ok("only-generate", get_kind("decode"))
    assert cache.engine_ok("only-generate", get_kind("serving"))


def test_an_unknown_kind_or_tier_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid case kinds: batching, decode, generate, prefill, serving"):
        get_kind("nope")
    with pytest.raises(UnknownNameError, match="valid tiers"):
        build_cases("decode", "huge", ["small"], None, None, lambda e, k: True)


def test_a_new_kind_is_one_object(monkeypatch):
    """A kind built from the base class alone: its cases, ids, requests and cost come from it."""
    long_gen = CaseKind(
        "longgen", {"default": {"engines": ["paged"], "batch_sizes": [2], "prompt_lens": [8], "new_tokens": [64]}}
    )
    monkeypatch.setitem(KINDS, "longgen", long_gen)
    (case,) = build_cases("longgen", "default", ["tiny"], None, None, lambda e, k: True)
    assert case.id == "tiny-paged-bs2-prompt8-new64"
    assert [r.max_new_tokens for r in long_gen.requests(case, 512, 0)] == [64, 64]
    assert long_gen.reference_shape(case) == (2, 1)


# --- options -------------------------------------------------------------------------------------


def test_each_default_is_written_once():
    """The engine knobs' defaults are EngineConfig's; the command line's are PerfOptions'."""
    defaults = PerfOptions()
    for knob in ("max_num_seqs", "max_batch_size", "preemption", "kv_cache_mem"):
        assert getattr(defaults, knob) == getattr(EngineConfig(), knob)
    assert defaults.engine_config() == EngineConfig()
    fields = {f.name for f in dataclasses.fields(SchedulerConfig) if f.default is dataclasses.MISSING}
    assert {"max_num_seqs", "max_num_batched_tokens", "preemption"} <= fields  # no second default there
    for opt in OPTIONS:
        assert opt.default == getattr(defaults, opt.dest)


def test_options_parse_from_any_argparse_like_source():
    import argparse

    parser = argparse.ArgumentParser()
    add_options(parser.add_argument)
    args = parser.parse_args(
        ["--perf-models", "tiny,small", "--perf-batch-sizes", "1,8", "--perf-no-parity", "--perf-rounds", "3"]
    )
    opts = options_from(lambda flag: getattr(args, flag.lstrip("-").replace("-", "_")))
    assert opts.models == ("tiny", "small")
    assert opts.batch_sizes == (1, 8)
    assert opts.parity is False
    assert opts.rounds == 3
    assert opts.max_num_seqs == PerfOptions().max_num_seqs
    bad = parser.parse_args(["--perf-batch-sizes", "1,eight"])
    with pytest.raises(ConfigError, match="--perf-batch-sizes wants comma-separated integers"):
        options_from(lambda flag: getattr(bad, flag.lstrip("-").replace("-", "_")))


# --- results -------------------------------------------------------------------------------------


def test_a_results_file_round_trips_with_the_same_keys_and_keeps_unknown_ones(tmp_path):
    stored = json.loads((__import__("pathlib").Path(__file__).parent / "data" / "sample_results.json").read_text())
    stored["benchmarks"][0]["extra_info"]["from_a_newer_suite"] = 1.5
    doc = ResultsFile.from_dict(stored)
    assert doc.benches[0].result.extra == {"from_a_newer_suite": 1.5}
    doc.save(tmp_path / "r.json")
    again = json.loads((tmp_path / "r.json").read_text())
    for before, after in zip(stored["benchmarks"], again["benchmarks"], strict=True):
        assert after["extra_info"] == before["extra_info"]
        assert after["stats"]["data"] == before["stats"]["data"]
    assert again["machine_info"] == stored["machine_info"]


def test_case_result_fields_are_typed_and_unknown_metrics_land_in_extra():
    r = CaseResult(kind="decode", tokens=8)
    r.update({"kv_utilisation": 0.5, "some_engine_metric": 3.0})
    assert r.kv_utilisation == 0.5
    assert r.to_extra_info()["some_engine_metric"] == 3.0
    bench = BenchRecord("test_decode[x]", [1.0, 2.0, 4.0], r)
    assert bench.round_tok_s() == [8.0, 4.0, 2.0]
    assert bench.median_tok_s == 4.0


# --- engine cache --------------------------------------------------------------------------------


def test_switching_models_releases_the_last_ones_engines():
    closed = []

    class Closing:
        name = "closing"

        def __init__(self, loaded, config):
            self.loaded = loaded

        def close(self):
            closed.append(self.loaded.spec.name)

    cache = EngineCache(PerfOptions(models=("tiny",)), {}, torch.device("cpu"), "float32")
    cache.engine_class = lambda name: Closing
    first = cache.engine(Case("generate", "tiny", "closing"))
    assert cache.engine(Case("generate", "tiny", "closing")) is first
    cache.close()
    assert closed == ["tiny"]


def test_serving_engines_get_what_static_batch_reserves():
    cache = EngineCache(PerfOptions(models=("tiny",)), {}, torch.device("cpu"), "float32")
    serving = Case("serving", "tiny", "paged", workload="mixed16")
    from harness.engines.static_batch import arrival_batches, contiguous_kv_tokens
    from harness.roofline import kv_bytes_per_token

    tokens = contiguous_kv_tokens(arrival_batches(cache.requests(serving), PerfOptions().max_batch_size))
    assert cache.kv_bytes(serving) == tokens * kv_bytes_per_token(cache.model("tiny").spec, "float32")
    assert cache.kv_bytes(Case("decode", "tiny", "paged", context_len=128)) is None
    pinned = EngineCache(PerfOptions(models=("tiny",), kv_cache_mem=1e6), {}, torch.device("cpu"), "float32")
    assert pinned.kv_bytes(serving) is None  # --kv-cache-mem wins


# --- case timer ----------------------------------------------------------------------------------


class FakeBenchmark:
    disabled = False

    def __init__(self):
        self.calls = []

    def pedantic(self, target, rounds, warmup_rounds, iterations, setup=None):
        self.calls.append((rounds, warmup_rounds))
        for _ in range(rounds + warmup_rounds):
            if setup:
                setup()
            target()


def test_fast_cases_get_enough_rounds_to_span_the_minimum_time(tiny):
    ran = []
    timer = CaseTimer(torch.device("cpu"), rounds=5, warmup_rounds=1, min_time_s=0.05)
    bench = FakeBenchmark()
    timing = timer.time(bench, lambda: ran.append(1), tiny, (1, 8))
    ((rounds, warmup),) = bench.calls
    assert rounds > 5  # a microsecond target: capped at MAX_ROUNDS, far above the floor of 5
    assert warmup == 0  # the sizing round was the warm-up
    assert len(ran) == rounds + 1
    assert timing.reference_shape == (1, 8)
    assert len(timing.reference_ms) >= 6  # before and after, at least three each
    slow = CaseTimer(torch.device("cpu"), rounds=5, warmup_rounds=1, min_time_s=0.0)
    bench = FakeBenchmark()
    slow.time(bench, lambda: None, tiny, (1, 8))
    assert bench.calls == [(5, 1)]


# --- gate run ------------------------------------------------------------------------------------


def _doc(slug, names, seconds=1.0):
    return ResultsFile(
        {"slug": slug},
        [BenchRecord(n, [seconds * (1 + 0.001 * i) for i in range(7)], CaseResult(tokens=10)) for n in names],
    )


def test_a_comparison_with_no_case_in_common_fails_with_one_line():
    with pytest.raises(BaselineError, match="no case in common"):
        judge(_doc("m", ["a"]), _doc("m", ["b"]), Thresholds(), "base.json")
    with pytest.raises(BaselineError, match="different machines"):
        judge(_doc("m1", ["a"]), _doc("m2", ["a"]), Thresholds(), "base.json")
    assert judge(_doc("m", ["a", "b"]), _doc("m", ["a"]), Thresholds(), "base.json").exit_code == EXIT_OK
    assert judge(_doc("m", ["a"]), _doc("m", ["a"], 2.0), Thresholds(), "base.json").exit_code == EXIT_REGRESSION


def test_the_first_run_on_a_machine_records_and_passes(tmp_path):
    outcome = gate_this_run(_doc("m", ["a"]), Thresholds(), tmp_path / "baselines", tmp_path / "results")
    assert outcome.exit_code == EXIT_OK
    assert "no baseline for this machine (m)" in outcome.lines[0]
    assert (tmp_path / "results" / "m" / "latest.json").exists()
    with pytest.raises(BaselineError, match="no such file"):
        gate_this_run(_doc("m", ["a"]), Thresholds(), tmp_path, tmp_path, tmp_path / "missing.json")


def test_a_bad_tool_perf_value_is_one_config_error_naming_the_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.perf]\nnormalise = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml: \[tool.perf\] normalise must be one of"):
        Thresholds.from_pyproject(tmp_path / "pyproject.toml")
    (tmp_path / "pyproject.toml").write_text("[tool.perf]\nthreshold = 'five percent'\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        Thresholds.from_pyproject(tmp_path / "pyproject.toml")
