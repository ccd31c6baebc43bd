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
