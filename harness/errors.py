"""Errors a person can act on, and the exit codes the suite ends with. Each error says what was asked
and what would have worked; the CLI and the pytest plugin print it as one line, without a traceback."""

# Exit codes. pytest's own are 0-5 (0 passed, 1 tests failed, 2 interrupted, 3 internal error, 4 usage
# error, 5 no tests collected); the suite's start at 10, so none is read as another.
EXIT_OK = 0
EXIT_REGRESSION = 10  # the gate or the A/B found a regression (throughput, latency)
EXIT_GATE_ERROR = 11  # nothing to compare: an unusable baseline, another machine, no case in common, none required
EXIT_INCONCLUSIVE = 12  # --strict: a case could not be told unchanged
EXIT_UNHEALTHY = 13  # --perf-strict-health refused an unhealthy GPU
EXIT_USAGE = 14  # `llm-perf`: a bad option, name or configuration value (under pytest: pytest's 4)
EXIT_CHECK_FAILED = 15  # `llm-perf ab`: a side's engine failed the output check or could not run a case
EXIT_CODES = {
    EXIT_REGRESSION: "a regression",
    EXIT_GATE_ERROR: "nothing to compare (no usable baseline, another machine, no case in common)",
    EXIT_INCONCLUSIVE: "a case inconclusive, under --strict",
    EXIT_UNHEALTHY: "an unhealthy GPU, under --perf-strict-health",
    EXIT_USAGE: "a bad option, name or configuration value (llm-perf)",
    EXIT_CHECK_FAILED: "a side failed a case's output check or broke opening it (llm-perf ab)",
}


class PerfSuiteError(Exception):
    """Base class: the CLI and the pytest plugin print these without a traceback."""

    exit_code = EXIT_USAGE


class UnknownNameError(PerfSuiteError, KeyError):
    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]


class ConfigError(PerfSuiteError):
    """A bad value in pyproject.toml [tool.perf] or on the command line."""


class ModelTooLargeError(PerfSuiteError):
    pass


class BaselineError(PerfSuiteError):
    """A results or baseline file that cannot be used, or a comparison that would compare nothing."""

    exit_code = EXIT_GATE_ERROR
