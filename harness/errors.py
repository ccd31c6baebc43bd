"""Errors a person can act on, and the exit codes the suite ends with. Each error says what was asked
and what would have worked; the CLI and the pytest plugin print it as one line, without a traceback."""

# Exit codes (pytest's own are 0-5)
EXIT_OK = 0
EXIT_USAGE = 2  # a bad option, name or configuration value (the CLI's; pytest's usage error is 4)
EXIT_UNHEALTHY = 3  # --perf-strict-health refused an unhealthy GPU
EXIT_REGRESSION = 10  # the gate or the A/B comparison found a regression
EXIT_GATE_ERROR = 11  # the gate could not compare: unusable baseline, another machine, no case in common
EXIT_INCONCLUSIVE = 12  # --strict: a row was inconclusive (its interval too wide to tell)


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
