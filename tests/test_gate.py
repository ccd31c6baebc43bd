"""The regression gate on synthetic samples, and its file handling."""

import json
import os

import numpy as np
import pytest

from harness.__main__ import main
from harness.baseline.gate import Thresholds, compare, method_line
from harness.baseline.storage import load_results
from harness.errors import EXIT_GATE_ERROR, EXIT_REGRESSION, BaselineError, ConfigError
from harness.files import write_json_atomic

TOKENS = 64


def has_regression(verdicts):
    return any(v.status == "regression" for v in verdicts)


def bench(name, seconds, kind="decode", healthy=None):
    return {
        "name": name,
        "stats": {"data": list(seconds)},
        "extra_info": {"tokens": TOKENS, "kind": kind, "gpu_healthy": healthy},
    }


def rounds(median_s, noise, seed, n=9):
    return np.random.default_rng(seed).normal(median_s, noise * median_s, n).tolist()


def doc(*benches):
    return {"machine_info": {"slug": "test-machine"}, "benchmarks": list(benches)}


def verdict(base_s, now_s, thresholds=None, kind="decode", name="test_decode[a]"):
    thresholds = thresholds or Thresholds()
    return compare(doc(bench(name, base_s, kind)), doc(bench(name, now_s, kind)), thresholds)[0]


def test_a_clear_drop_fails():
    v = verdict(rounds(1.0, 0.01, 1), rounds(1.15, 0.01, 2))  # 15% more time: ~13% fewer tokens/s
    assert v.status == "regression"
    assert v.change == pytest.approx(-0.13, abs=0.02)
    assert v.p_value < 0.01


def test_noise_passes():
    for seed in range(20):
        assert verdict(rounds(1.0, 0.03, seed), rounds(1.0, 0.03, seed + 100)).status in ("unchanged", "inconclusive")


def test_an_improvement_passes_and_is_marked():
    v = verdict(rounds(1.0, 0.01, 1), rounds(0.8, 0.01, 2))
    assert v.status == "improvement"
    assert v.change > 0.2


def test_a_significant_drop_below_the_threshold_passes():
    v = verdict(rounds(1.0, 0.002, 1), rounds(1.03, 0.002, 2))
    assert v.status == "unchanged"  # a real change, inside the threshold: its interval says so
    assert v.p_value < 0.01


def test_a_large_drop_within_huge_noise_is_not_significant():
    base = [1.0, 0.5, 1.5, 0.7, 1.3]
    now = [1.2, 0.6, 1.7, 0.8, 1.4]
    assert verdict(base, now).status == "inconclusive"


def test_thresholds_per_group_and_per_case():
    base, now = rounds(1.0, 0.01, 1), rounds(1.12, 0.01, 2)  # about -11%
    assert verdict(base, now).status == "regression"
    loose_group = Thresholds(groups={"decode": 0.15})
    assert verdict(base, now, loose_group).status == "unchanged"
    assert verdict(base, now, loose_group, kind="prefill").status == "regression"
    loose_case = Thresholds(cases={"test_decode[a]": 0.2})
    assert verdict(base, now, loose_case).status == "unchanged"


def test_an_unhealthy_gpu_is_inconclusive_not_a_regression():
    base = doc(bench("c", rounds(1.0, 0.01, 1)))
    now = doc(bench("c", rounds(2.0, 0.01, 2), healthy=False))
    v = compare(base, now, Thresholds())[0]
    assert v.status == "inconclusive"
    assert "unhealthy" in v.note


def test_missing_cases_are_listed():
    base = doc(bench("old", rounds(1, 0.01, 1)), bench("both", rounds(1, 0.01, 2)))
    now = doc(bench("both", rounds(1, 0.01, 3)), bench("new", rounds(1, 0.01, 4)))
    statuses = {v.name: v.status for v in compare(base, now, Thresholds())}
    assert statuses == {"both": "unchanged", "old": "missing", "new": "missing"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a pytest-benchmark results file"),
        ('{"benchmarks": [{"name": "x", "stats": {}}]}', "no raw rounds"),
        (
            '{"benchmarks": [{"name": "x", "stats": {"data": [1.0]}, "extra_info": {}}]}',
            "not recorded by llm-perf-suite",
        ),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=problem) as info:
        load_results(path)
    assert str(path) in str(info.value)


def test_atomic_write_is_sorted_indented_and_never_half_written(tmp_path):
    path = tmp_path / "sub" / "b.json"
    write_json_atomic(path, {"z": 1, "a": [1, 2]})
    assert path.read_text().startswith('{\n  "a": [')
    assert path.stat().st_mode & 0o044 == 0o044 or os.umask(os.umask(0)) & 0o044  # readable as umask allows
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})  # fails mid-serialisation
    assert json.loads(path.read_text()) == {"z": 1, "a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]  # no temp file left behind


def test_compare_cli_exit_codes_and_table(tmp_path, capsys):
    base, slow, same = (tmp_path / f"{n}.json" for n in ("base", "slow", "same"))
    write_json_atomic(base, doc(bench("test_decode[a]", rounds(1.0, 0.01, 1))))
    write_json_atomic(slow, doc(bench("test_decode[a]", rounds(1.3, 0.01, 2))))
    write_json_atomic(same, doc(bench("test_decode[a]", rounds(1.0, 0.01, 3))))
    assert main(["compare", str(base), str(slow)]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert "REGRESSION" in out
    assert "verdicts: 1 regression, 0 improvement, 0 unchanged, 0 inconclusive, 0 missing" in out
    assert main(["compare", str(base), str(same)]) == 0


def test_compare_cli_on_a_corrupt_file_names_it_and_overwrites_nothing(tmp_path, capsys):
    bad = tmp_path / "baseline.json"
    bad.write_text("{oops")
    good = tmp_path / "now.json"
    write_json_atomic(good, doc(bench("c", [1.0])))
    assert main(["compare", str(bad), str(good)]) == EXIT_GATE_ERROR
    assert str(bad) in capsys.readouterr().err
    assert bad.read_text() == "{oops"
    assert main(["baseline", "update", "--from", str(bad)]) == EXIT_GATE_ERROR
    assert bad.read_text() == "{oops"


def test_different_machines_are_not_compared(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, doc(bench("c", [1.0])) | {"machine_info": {"slug": "gpu-a"}})
    write_json_atomic(b, doc(bench("c", [1.0])) | {"machine_info": {"slug": "gpu-b"}})
    assert main(["compare", str(a), str(b)]) == EXIT_GATE_ERROR
    assert "gpu-a" in capsys.readouterr().err


def test_runs_with_different_engine_flags_are_not_compared(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, doc(bench("c", [1.0])) | {"machine_info": {"slug": "m"}})
    write_json_atomic(b, doc(bench("c", [0.5])) | {"machine_info": {"slug": "m", "engine_options": "--perf-compile"}})
    assert main(["compare", str(a), str(b)]) == EXIT_GATE_ERROR
    assert "recorded with no engine flags, this run with --perf-compile" in capsys.readouterr().err
    write_json_atomic(a, doc(bench("c", [1.0])) | {"machine_info": {"slug": "m", "engine_options": "--perf-compile"}})
    assert main(["compare", str(a), str(b)]) != EXIT_GATE_ERROR  # the same flags: compared


def test_a_baseline_pools_the_rounds_of_several_runs():
    from harness.baseline.record import merge_runs

    runs = [doc(bench("a", [1.0, 1.1]), bench("b", [2.0])), doc(bench("a", [0.9]), bench("b", [2.1, 2.2]))]
    merged = merge_runs(runs).by_name()
    assert merged["a"].rounds_s == [1.0, 1.1, 0.9]
    assert merged["b"].rounds_s == [2.0, 2.1, 2.2]
    assert merged["a"].result.baseline_runs == 2
    assert merged["a"].to_dict()["extra_info"]["baseline_runs"] == 2  # stored under the same key as ever
    assert runs[0]["benchmarks"][0]["stats"]["data"] == [1.0, 1.1]  # inputs untouched


def pooled(name, run_medians_s, within=0.005, seed=0, kind="decode"):
    """A baseline case pooled from several runs whose medians differ by the given seconds."""
    from harness.baseline.record import merge_runs

    runs = [doc(bench(name, rounds(m, within, seed + i), kind)) for i, m in enumerate(run_medians_s)]
    return merge_runs(runs).benches[0].to_dict()


def test_a_pooled_baseline_keeps_each_runs_median():
    case = pooled("a", [1.0, 1.1, 0.9])
    assert case["extra_info"]["run_tok_s"] == pytest.approx([64 / 1.0, 64 / 1.1, 64 / 0.9], rel=0.01)


def test_run_to_run_spread_keeps_a_noisy_machine_quiet():
    # Runs of the baseline differ by ~7% while each run's rounds agree within 0.5%: an unchanged
    # run that lands 8% slow is within the machine's spread. Rounds alone would call it a regression.
    base = {"machine_info": {"slug": "m"}, "benchmarks": [pooled("test_decode[a]", [1.0, 1.07, 0.94])]}
    now = doc(bench("test_decode[a]", rounds(1.08, 0.005, 9)))
    v = compare(base, now, Thresholds())[0]
    assert v.change == pytest.approx(-0.075, abs=0.02)
    assert v.status == "inconclusive"
    assert v.detectable > 0.2  # three runs 7% apart cannot see less than a fifth
    single = doc(bench("test_decode[a]", rounds(1.0, 0.005, 1)))
    assert compare(single, now, Thresholds())[0].status == "regression"  # the Mann-Whitney fallback


def test_a_drop_far_beyond_the_run_to_run_spread_fails():
    base = {"machine_info": {"slug": "m"}, "benchmarks": [pooled("test_decode[a]", [1.0, 1.01, 0.99])]}
    v = compare(base, doc(bench("test_decode[a]", rounds(1.15, 0.005, 9))), Thresholds())[0]
    assert v.status == "regression"
    assert v.p_value < 0.01


def with_ref(b, ref_ms, own_forward=True):
    b["extra_info"]["reference_ms"] = [ref_ms * (1 + 0.001 * i) for i in range(6)]
    b["extra_info"]["own_forward"] = own_forward  # like paged: its forward is not the reference's code
    return b


def stack_doc(*benches, torch="2.13.0"):
    return {"machine_info": {"slug": "m", "torch": torch, "transformers": "5.23.0"}, "benchmarks": list(benches)}


def _machine_speed_case(now_factor, ref_factor, torch="2.13.0", normalise="run"):
    names = [f"test_decode[c{i}]" for i in range(4)]
    base = stack_doc(*(with_ref(bench(n, rounds(1.0, 0.005, i)), 10.0) for i, n in enumerate(names)))
    now = stack_doc(
        *(with_ref(bench(n, rounds(now_factor, 0.005, 10 + i)), 10.0 * ref_factor) for i, n in enumerate(names)),
        torch=torch,
    )
    thresholds = Thresholds(normalise=normalise)
    return compare(base, now, thresholds), method_line(base, now, thresholds)


def test_a_slower_machine_is_divided_out():
    verdicts, method = _machine_speed_case(now_factor=1.15, ref_factor=1.15)  # everything 15% slower
    assert not has_regression(verdicts)
    assert all(abs(v.change) < 0.02 for v in verdicts)
    assert "raw -13" in verdicts[0].note
    assert "corrected for machine speed" in method
    assert "+15.0%" in method


def test_an_engine_that_runs_the_reference_forwards_code_is_never_corrected_by_it():
    """hf-generate, manual, static-batch run HF's forward, the reference's own code: a regression in it
    slows the reference alike, and dividing it out would hide it. Such cases are compared raw."""
    names = [f"test_decode[c{i}]" for i in range(4)]
    base = stack_doc(*(with_ref(bench(n, rounds(1.0, 0.005, i)), 10.0, own_forward=False) for i, n in enumerate(names)))
    now = stack_doc(
        *(with_ref(bench(n, rounds(1.15, 0.005, 10 + i)), 11.5, own_forward=False) for i, n in enumerate(names))
    )
    verdicts = compare(base, now, Thresholds())
    assert has_regression(verdicts)  # the reference slowed 15% too, yet the drop stands
    assert "4 case(s) compared raw" in method_line(base, now, Thresholds())


def test_an_engine_slowdown_the_reference_does_not_share_fails():
    verdicts, _ = _machine_speed_case(now_factor=1.15, ref_factor=1.0)
    assert has_regression(verdicts)
    verdicts, _ = _machine_speed_case(now_factor=1.15, ref_factor=1.0, normalise="case")
    assert has_regression(verdicts)


def test_no_machine_speed_correction_across_a_torch_change():
    verdicts, method = _machine_speed_case(now_factor=1.15, ref_factor=1.15, torch="2.14.0")
    assert has_regression(verdicts)  # a slower torch slows the reference too: it must not be divided out
    assert "torch differ" in method


def test_machine_speed_correction_can_be_switched_off():
    verdicts, method = _machine_speed_case(now_factor=1.15, ref_factor=1.15, normalise="off")
    assert has_regression(verdicts)
    assert "switched off" in method
    with pytest.raises(ConfigError, match="normalise must be one of"):
        Thresholds(normalise="sometimes")


def _many_cases(drop_case_factor, cases=11):
    """Ten unchanged cases and one that is `drop_case_factor` x slower, on a run-to-run spread of 3%."""
    base = {
        "machine_info": {"slug": "m"},
        "benchmarks": [pooled(f"test_decode[c{i}]", [1.0, 1.03, 0.97], seed=10 * i) for i in range(cases)],
    }
    now = doc(
        *(bench(f"test_decode[c{i}]", rounds(drop_case_factor if i == 0 else 1.0, 0.005, i)) for i in range(cases))
    )
    return base, now


def test_holm_keeps_a_borderline_case_of_many_quiet_and_still_fails_a_large_drop():
    base, now = _many_cases(1.1)  # one case 9% slower: p ~ 0.006 alone, ~0.07 after 11 cases
    adjusted = {v.name: v for v in compare(base, now, Thresholds())}
    assert adjusted["test_decode[c0]"].status == "inconclusive"
    assert 0.02 < adjusted["test_decode[c0]"].p_value < 0.2
    base, now = _many_cases(1.3)  # one case 23% slower: fails after the adjustment too
    assert {v.name: v.status for v in compare(base, now, Thresholds())}["test_decode[c0]"] == "regression"
    assert "Holm" in method_line(base, now, Thresholds())


def test_no_machine_speed_correction_when_the_reference_shapes_differ():
    names = [f"test_decode[c{i}]" for i in range(4)]
    base = stack_doc(*(with_ref(bench(n, rounds(1.0, 0.005, i)), 10.0) for i, n in enumerate(names)))
    now = stack_doc(*(with_ref(bench(n, rounds(1.15, 0.005, 10 + i)), 11.5) for i, n in enumerate(names)))
    for b in now["benchmarks"]:
        b["extra_info"]["reference_shape"] = [1, 1]  # the baseline's (unrecorded) shape is 1 x 8
    verdicts = compare(base, now, Thresholds())
    assert has_regression(verdicts)
    assert "another shape" in method_line(base, now, Thresholds())


def test_the_reference_forward_has_the_shape_of_the_cases_work():
    from harness.cases import Case, get_kind

    def reference_shape(case):
        return get_kind(case.kind).reference_shape(case)

    assert reference_shape(Case("decode", "small", "manual", batch_size=8, context_len=128)) == (8, 1)
    assert reference_shape(Case("prefill", "small", "manual", batch_size=2, prompt_len=64)) == (2, 64)
    assert reference_shape(Case("generate", "small", "manual", prompt_len=32, new_tokens=32)) == (1, 1)
    assert reference_shape(Case("serving", "small", "paged", workload="mixed16")) == (1, 8)
    assert reference_shape(Case("prefill", "small", "manual", batch_size=4, prompt_len=256)) == (1, 128)
