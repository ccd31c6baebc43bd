"""Errors a person can act on. Each one says what was asked and what would have worked."""


class PerfSuiteError(Exception):
    """Base class: the CLI and the pytest plugin print these without a traceback."""


class UnknownNameError(PerfSuiteError, KeyError):
    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]


class ModelTooLargeError(PerfSuiteError):
    pass


class BaselineError(PerfSuiteError):
    pass
