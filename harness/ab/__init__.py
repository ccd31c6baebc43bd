"""Base against head on one machine: interleaved rounds in two worker processes (harness/ab/runner.py)."""
