"""The markdown a pull request shows: `llm-perf compare --summary FILE` writes the verdict table as a
file, and with no FILE it goes to $GITHUB_STEP_SUMMARY, appended after what other steps wrote."""

import json

import pytest

from harness.__main__ import main


def results(tok_s: list[float], work: dict | None = None) -> dict:
    info = {"tokens": 100, "kind": "decode", "seed": 0, "work": work}
    bench = {"name": "test_decode[x]", "stats": {"data": [100 / t for t in tok_s]}, "extra_info": info}
    return {"machine_info": {"slug": "m"}, "benchmarks": [bench]}


def compare(tmp_path, base: dict, now: dict, *extra: str) -> int:
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(now))
    return main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), *extra])


def test_the_summary_is_a_markdown_table_with_the_verdict(tmp_path):
    steady = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8]
    summary = tmp_path / "s.md"
    code = compare(tmp_path, results(steady, {"steps": 10}), results(steady, {"steps": 12}), "--summary", str(summary))
    md = summary.read_text()
    assert code == 10
    assert md.startswith("### llm-perf compare")
    assert "| case | base | now | unit | change | 95% CI | p | verdict |" in md
    assert "`test_decode[x] work:steps`" in md
    assert "**REGRESSION**" in md


def test_github_s_job_summary_is_appended_to(tmp_path, monkeypatch):
    target = tmp_path / "step_summary.md"
    target.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    steady = [100.0, 101.0, 99.0, 100.5, 99.5]
    assert compare(tmp_path, results(steady), results(steady)) == 0
    text = target.read_text()
    assert text.startswith("earlier step\n### llm-perf compare")


def test_an_inconclusive_row_whose_own_interval_is_beyond_the_threshold_says_why():
    from harness.judge.decide import Verdict
    from harness.judge.table import format_markdown

    common = {"name": "test_decode[x]", "status": "inconclusive", "change": -0.06, "threshold": 0.02}
    common["detectable"] = 0.08
    beyond = Verdict(**common, low=-0.10, high=-0.025, p_value=0.03)
    across = Verdict(**common, low=-0.12, high=0.01, p_value=0.4)
    md = format_markdown([beyond, across], "m", "t")
    row_beyond, row_across = [line for line in md.splitlines() if line.startswith("| `test_decode")]
    assert "its own 95% interval lies beyond +-2%" in row_beyond
    assert "could tell" not in row_beyond
    assert "could tell a change beyond +-8.0%" in row_across
    assert "own 95% interval" not in row_across


@pytest.mark.parametrize(
    ("detectable", "said"),
    [
        (0.08, "could tell a change beyond +-8.0%"),
        (55602.1, "could tell no change under 2x"),
        (float("inf"), "could tell no change,"),
    ],
)
def test_what_an_inconclusive_row_could_tell_reads_plainly(detectable, said):
    from harness.judge.decide import Verdict
    from harness.judge.table import format_table

    row = Verdict(
        "test_serving[x]", "inconclusive", change=-0.001, threshold=0.02, low=-0.2, high=0.2, detectable=detectable
    )
    assert said in format_table([row], "m")[1]
