"""The history store and its change-point check (harness/history)."""

import numpy as np
import pytest

from harness.__main__ import main
from harness.errors import EXIT_OK, EXIT_REGRESSION
from harness.files import write_json_atomic
from harness.history.check import check
from harness.history.store import HistoryStore, Point


def results(tok_s: float, night: int) -> dict:
    info = {"tokens": 100, "tokens_per_s": tok_s, "kind": "decode"}
    bench = {"name": "test_decode[a]", "stats": {"data": [100 / tok_s] * 3}, "extra_info": info}
    return {"machine_info": {"slug": "m", "dtype": "float32"}, "benchmarks": [bench],
            "datetime": f"2026-11-{night:02d}T03:00:00", "commit_info": {"id": f"commit{night}"}}  # fmt: skip


def test_a_step_in_the_stored_series_is_found_with_its_commits_and_fails_the_check(tmp_path, capsys):
    rng = np.random.default_rng(0)
    store = tmp_path / "h.sqlite"
    for night in range(1, 25):
        level = 100 if night < 21 else 80
        write_json_atomic(tmp_path / "r.json", results(level * float(np.exp(rng.normal(0, 0.02))), night))
        assert main(["history", "add", str(tmp_path / "r.json"), "--history", str(store)]) == EXIT_OK
    assert HistoryStore(store).runs() == 24
    capsys.readouterr()
    assert main(["history", "check", "--history", str(store)]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert "test_decode[a] tokens_per_s [m]: REGRESSION -19.3% at point 21" in out
    assert "commits commit20..commit21" in out
    assert main(["history", "show", "--history", str(store), "--out", str(tmp_path / "report")]) == EXIT_OK
    assert (tmp_path / "report" / "history.md").exists()
    assert list((tmp_path / "report").glob("history-*.png"))


def test_a_steady_series_raises_nothing_and_an_old_step_no_longer_fails():
    rng = np.random.default_rng(1)
    flat = [Point(str(i), str(i), "m", 100 * float(np.exp(rng.normal(0, 0.02)))) for i in range(30)]
    assert check({("c", "tokens_per_s", "m"): flat}) == []
    stepped = [
        Point(str(i), str(i), "m", (100 if i < 10 else 80) * float(np.exp(rng.normal(0, 0.02)))) for i in range(30)
    ]
    (change,) = check({("c", "tokens_per_s", "m"): stepped})
    assert change.regression
    assert not change.recent  # 20 nights ago: reported, but the nightly no longer fails on it


def test_a_latency_series_regresses_going_up():
    rng = np.random.default_rng(2)
    up = [Point(str(i), str(i), "m", (100 if i < 20 else 130) * float(np.exp(rng.normal(0, 0.02)))) for i in range(24)]
    (change,) = check({("c", "ttft_ms_p99", "m"): up})
    assert change.regression
    assert change.change == pytest.approx(0.30, abs=0.05)


def test_a_corrupt_store_is_named(tmp_path):
    bad = tmp_path / "h.sqlite"
    bad.write_text("not a database")
    assert main(["history", "check", "--history", str(bad)]) == 11
