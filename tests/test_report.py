"""The report renders every figure from a small stored results file (a real CPU run, trimmed)."""

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

from harness.__main__ import main
from harness.baseline.record import merge_runs
from harness.report.figures import DPI, FIG_SIZE

SAMPLE = Path(__file__).parent / "data" / "sample_results.json"
FIGURES = ["prefill_vs_decode", "decode_steps", "batching", "roofline", "engines", "compare"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    doc = json.loads(SAMPLE.read_text())
    runs = []
    for spread in (1.0, 1.02, 0.98):  # a baseline pooled from three runs that differ by 2%
        run = copy.deepcopy(doc)
        for bench in run["benchmarks"]:  # ... and that were 30% faster on one case
            faster = 1.3 if bench["name"] == "test_batching[small-static-batch-bs4-prompt32-new32]" else 1.0
            bench["stats"]["data"] = [t * spread / faster for t in bench["stats"]["data"]]
        runs.append(run)
    baseline = merge_runs(runs)
    baseline.save(out / "baseline.json")
    assert main(["report", str(SAMPLE), "--compare", str(out / "baseline.json"), "--out", str(out)]) == 0
    return out, doc, (out / "report.md").read_text()


@pytest.mark.parametrize("stem", FIGURES)
def test_every_figure_is_a_valid_image_of_the_expected_size(report, stem):
    out, _, _ = report
    with Image.open(out / f"{stem}.png") as img:
        img.verify()
    with Image.open(out / f"{stem}.png") as img:
        width, height = img.size
    assert width == FIG_SIZE[0] * DPI
    assert height >= FIG_SIZE[1] * DPI
    assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")


def test_report_links_every_figure_and_carries_the_numbers(report):
    _, doc, md = report
    for stem in FIGURES:
        assert f"]({stem}.png)" in md
    for bench in doc["benchmarks"]:
        info = bench["extra_info"]
        assert bench["name"] in md
        assert f"{info['tokens_per_s']:,.1f}" in md
        assert f"{info['pct_of_roofline']:.1%}" in md
    assert "**regression**" in md  # the compare table highlights the slowed case
    assert "transformers-cb" in md
    assert "KV util" in md


def test_report_prints_the_serving_engines_side_by_side(tmp_path, capsys):
    assert main(["report", str(SAMPLE), "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("engine "))
    assert "TTFT p50 ms" in header
    assert "TPOT p99 ms" in header
    benches = json.loads(SAMPLE.read_text())["benchmarks"]
    serving = [b["extra_info"] for b in benches if b["extra_info"]["kind"] == "serving"]
    assert serving, "the sample has serving cases"
    for info in serving:
        row = next(line for line in lines if line.startswith(info["engine"] + " ") and info["workload"] in line)
        assert f"{info['tokens_per_s']:,.1f}" in row
        assert row.split()[-1] == (info.get("output_check") or "-")  # the sample predates the output check


def test_the_serving_table_says_whether_tokens_equal_hf():
    from harness.report.render import _checked
    from harness.results import CaseResult

    def result(text):
        return CaseResult(kind="serving", model="small", engine="vllm", output_check=text)

    assert _checked(result("3 rounds x 64 requests equal HF greedy")) == "equal HF"
    tie = "3 rounds x 64 requests equal HF greedy; 1 near-tie(s) within 1e-05 x |logit| accepted: request 3"
    assert _checked(result(tie)) == "equal HF (1 near-tie)"
    assert _checked(result("off (--perf-no-parity)")) == "off (--perf-no-parity)"


def test_the_report_needs_neither_torch_nor_transformers():
    """`make bench` ends with the report: importing torch and transformers for it cost seconds."""
    import subprocess
    import sys

    code = "import sys, harness.report.render; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
