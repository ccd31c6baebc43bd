"""Toy external engines for the plug-in tests: one right, one subtly wrong."""

from harness.engines.manual import ManualEngine


class ToyEngine(ManualEngine):
    name = "toy"


class WrongToyEngine(ManualEngine):
    """Fast and wrong: one token of one request is off by one."""

    name = "wrong-toy"

    def generate(self, requests):
        result = super().generate(requests)
        tokens = result.outputs[min(1, len(result.outputs) - 1)].token_ids
        tokens[min(3, len(tokens) - 1)] += 1
        return result


class LateWrongToyEngine(WrongToyEngine):
    """Right for its first `right_calls` generate calls (the probe, pytest's pass of warm-up and timed
    rounds), wrong from then on: only a check of the later passes' rounds can see it."""

    name = "late-wrong-toy"
    right_calls = 3

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def generate(self, requests):
        self.calls += 1
        return super().generate(requests) if self.calls > self.right_calls else ManualEngine.generate(self, requests)
