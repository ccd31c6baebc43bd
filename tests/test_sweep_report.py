"""The report's rate sweep (harness/report/sweep.py): grouping, the highest rate meeting the SLO, sweep.png.

The results are made up by hand: two engines on mixed16 at 1, 2, 4 req/s and all at once, whose SLO
attainment crosses 0.9 for paged and never reaches it for static-batch; paged on mixed64 meets it at
every rate; a lone capped case that is no sweep. paged's goodput peaks at 4 req/s, where only 70% of
its requests met the SLOs: a rule that took the rate of most goodput would answer 4, the attainment
rule answers 2.
"""

import json
import math

import pytest
from PIL import Image

from harness.__main__ import main
from harness.report.figures import by_kind
from harness.report.sweep import MEETS_ATTAINMENT, Sweep, find_sweeps, verdict
from harness.results import CaseResult, ResultsFile

SLO = {"ttft": 2000.0, "tpot": 200.0}
INF = math.inf

# engine, workload, offered rate, achieved req/s, TTFT p50 ms, TPOT p50 ms, goodput req/s, SLO attainment
POINTS = [
    ("paged", "mixed16", 4, 3.6, 1500, 120, 2.5, 0.70),  # out of order: the file's order must not matter
    ("paged", "mixed16", 1, 1.0, 300, 60, 1.0, 1.00),
    ("paged", "mixed16", INF, 5.0, 6000, 250, 2.0, 0.40),
    ("paged", "mixed16", 2, 1.9, 700, 90, 1.8, 0.95),
    ("static-batch", "mixed16", 1, 0.9, 900, 150, 0.8, 0.80),
    ("static-batch", "mixed16", 2, 1.6, 2500, 210, 1.1, 0.60),
    ("static-batch", "mixed16", 4, 2.4, 5000, 260, 1.1, 0.30),
    ("static-batch", "mixed16", INF, 2.6, 9000, 300, 0.5, 0.10),
    ("paged", "mixed64", 1, 1.0, 200, 50, 1.0, 1.00),
    ("paged", "mixed64", INF, 3.0, 1800, 150, 2.7, 0.90),  # exactly 0.9 meets it
]


def _bench(engine, workload, rate, achieved, ttft, tpot, goodput, attainment, slo=SLO, cap=0):
    finite = not math.isinf(rate)
    suffix = (f"-rate{rate:g}" if finite else "") + (f"-conc{cap}" if cap else "")
    info = {
        **dict(kind="serving", model="small", engine=engine, workload=workload, tokens=1000),
        **dict(tokens_per_s=100 * achieved, pct_of_roofline=0.1, bound="memory"),
        # an all-at-once case records no load (Load.recorded): no burstiness, no cap
        **(dict(request_rate=rate, burstiness=1.0, max_concurrency=cap) if finite or cap else {}),
        **dict(request_throughput=achieved, output_throughput=100 * achieved),
        **dict(ttft_ms_p50=ttft, ttft_ms_p99=3 * ttft, tpot_ms_p50=tpot, tpot_ms_p99=2 * tpot, itl_ms_p50=tpot),
        **dict(e2el_ms_p99=10 * ttft, goodput=goodput, slo_attainment=attainment, slo_ms=slo),
    }
    return {"name": f"test_serving[small-{engine}-{workload}{suffix}]", "stats": {"data": [1.0]}, "extra_info": info}


def _results(points=POINTS, **kw) -> dict:
    benches = [_bench(*p, **kw) for p in points]
    benches.append(_bench("paged", "mixed16", 1, 0.9, 400, 70, 0.9, 1.0, cap=8))  # one rate under a cap: no sweep
    return {"machine_info": {"slug": "test"}, "benchmarks": benches}


def _sweeps(doc: dict) -> dict[tuple[str, str], Sweep]:
    sweeps = find_sweeps(by_kind(ResultsFile.from_dict(doc))["serving"])
    return {(s.engine, s.workload): s for s in sweeps}


def test_serving_cases_group_into_sweeps_ordered_by_offered_rate_inf_last():
    sweeps = _sweeps(_results())
    assert set(sweeps) == {("paged", "mixed16"), ("static-batch", "mixed16"), ("paged", "mixed64")}
    assert sweeps["paged", "mixed16"].rates == [1, 2, 4, INF]
    assert sweeps["static-batch", "mixed16"].rates == [1, 2, 4, INF]
    assert sweeps["paged", "mixed64"].rates == [1, INF]
    assert all(s.max_concurrency == 0 and s.burstiness == 1 for s in sweeps.values())  # the capped case is alone


def _check_highest(sweeps: dict[tuple[str, str], Sweep]) -> None:
    paged, static, big = sweeps["paged", "mixed16"], sweeps["static-batch", "mixed16"], sweeps["paged", "mixed64"]
    best = paged.highest_meeting()
    assert best is not None
    assert best.request_rate == 2
    assert static.highest_meeting() is None
    assert big.highest_meeting() is big.points[-1]  # inf
    slo = "(ttft:2000 tpot:200, >= 90% of requests)"
    assert verdict(paged) == f"highest rate meeting the SLO {slo}: 2 req/s (1.90 achieved)"
    assert verdict(static) == f"highest rate meeting the SLO {slo}: none of the rates"
    assert verdict(big) == f"highest rate meeting the SLO {slo}: every rate, including all at once"


def test_the_highest_rate_meeting_the_slo_follows_the_attainment_rule():
    assert MEETS_ATTAINMENT == 0.9
    _check_highest(_sweeps(_results()))


def test_a_rule_by_most_goodput_is_caught(monkeypatch):
    """The mutant: the rate of most goodput instead of the highest rate with >= 90% attainment."""

    def by_max_goodput(self):
        return max(self.points, key=lambda p: p.goodput)

    monkeypatch.setattr(Sweep, "highest_meeting", by_max_goodput)
    with pytest.raises(AssertionError):
        _check_highest(_sweeps(_results()))


def _sweep(attainments: list[float | None], slo=SLO) -> Sweep:
    rates = [1.0, 2.0, None][: len(attainments)]
    points = [
        CaseResult(kind="serving", request_rate=r, request_throughput=r or 3.0, slo_attainment=a, slo_ms=slo)
        for r, a in zip(rates, attainments, strict=True)
    ]
    return Sweep("small", "paged", "mixed16", 1.0, 0, points)


def test_the_verdict_in_the_other_cases():
    assert verdict(_sweep([0.95, 0.91])).endswith(": 2 req/s (2.00 achieved; the highest rate tried)")
    assert verdict(_sweep([0.5, 0.95, 0.99])).endswith(": all at once, but not 1 req/s")
    assert verdict(_sweep([0.95, 0.2, 0.1])).endswith(": 1 req/s (1.00 achieved)")
    assert verdict(_sweep([0.8999, 0.5])).endswith(": none of the rates")
    no_slo = verdict(_sweep([None, None], slo=None))
    assert "goodput/SLO was not given" in no_slo
    assert "--goodput" in no_slo
    assert "SLOs not recorded" in verdict(_sweep([0.95, 0.5], slo=None))  # attainment from before slo_ms


def test_the_report_has_the_sweep_section_and_figure(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    png = tmp_path / "out" / "sweep.png"
    assert png.stat().st_size > 10_000
    with Image.open(png) as img:
        img.verify()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Rate sweep" in md
    assert "](sweep.png)" in md
    assert "### paged on mixed16, small" in md
    assert "### static-batch on mixed16, small" in md
    assert "| 2 | 1.90 | 190.0 | 700 | 2,100 | 90.0 | 180.0 | 90.0 | 7,000 | 1.80 | 95% |" in md
    assert "| inf | 5.00 |" in md
    assert "highest rate meeting the SLO (ttft:2000 tpot:200, >= 90% of requests): 2 req/s" in md


def test_no_sweep_no_section_and_no_figure(tmp_path):
    one_rate = [p for p in POINTS if p[2] == 1]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(one_rate)))
    assert main(["report", str(path), "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "sweep.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "Rate sweep" not in md
    assert "## Engine comparison" in md  # the rest of the report is there
