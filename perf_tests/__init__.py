"""The suite's cases, one file per case kind: `pytest --pyargs perf_tests` runs them from any folder
once the suite is installed (its pytest plugin comes with it, by entry point)."""
