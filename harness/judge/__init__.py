"""Judging: the statistics and the verdicts, in one place. Nothing here imports the rest of the suite
(but its errors): it works on numbers, and everything that compares runs calls `decide()`."""

from harness.judge.config import Thresholds
from harness.judge.decide import (
    MISSING,
    SINGLE,
    TWO_STAGE,
    VERDICTS,
    Estimate,
    Verdict,
    counts,
    decide,
    exit_code,
    missing,
)

__all__ = ["MISSING", "SINGLE", "TWO_STAGE", "VERDICTS", "Estimate", "Thresholds", "Verdict", "counts", "decide"]
__all__ += ["exit_code", "missing"]
