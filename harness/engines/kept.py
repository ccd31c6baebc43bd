"""The logits an engine picked its tokens from while the output check's probe ran (BaseEngine.keep_logits).

The check compares an engine's teacher-forced logits with HF's on the probe's outputs, fed the tokens
the engine itself chose. For a deterministic engine those logits are the ones its generate already
computed, so keeping them during the probe answers the check without running the probe again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager

import torch


class KeptLogits:
    def __init__(self) -> None:
        self._rows: dict[Hashable, list[torch.Tensor]] = {}  # a request in flight -> its rows so far
        self._done: dict[tuple, list[torch.Tensor]] = {}  # (prompt, tokens) -> one (tokens, vocab) per request

    def add(self, keys: Sequence[Hashable], logits: torch.Tensor) -> None:
        """One row of `logits` (rows, vocab) for each request in `keys`: the row its next token comes from.
        Copied: the engine may reuse its output buffer."""
        for key, row in zip(keys, logits.to("cpu", torch.float32, copy=True), strict=True):
            self._rows.setdefault(key, []).append(row)

    def finish(self, key: Hashable, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> None:
        rows = self._rows.pop(key)
        self._done.setdefault((tuple(prompt_ids), tuple(token_ids)), []).append(torch.stack(rows))

    def forget(self, key: Hashable) -> None:
        """Drop the rows of a request that will not finish."""
        self._rows.pop(key, None)

    def take(self, requests, continuations: Sequence[Sequence[int]]) -> list[torch.Tensor] | None:
        """The kept logits of every (request, continuation), or None unless all were kept."""
        keys = [(tuple(r.prompt_ids), tuple(c)) for r, c in zip(requests, continuations, strict=True)]
        if not keys or any(len(self._done.get(k, ())) < n for k, n in Counter(keys).items()):
            return None
        return [self._done[k].pop(0) for k in keys]

    def clear(self) -> None:
        self._rows.clear()
        self._done.clear()


@contextmanager
def keeping_logits(engine: object) -> Iterator[None]:
    """keep_logits on for the block, where the engine has the flag; then off, and whatever it kept dropped."""
    keeps = hasattr(engine, "keep_logits")
    if keeps:
        engine.keep_logits = True
    try:
        yield
    finally:
        if keeps:
            engine.keep_logits = False
        kept = getattr(engine, "kept", None)
        if isinstance(kept, KeptLogits):
            kept.clear()
