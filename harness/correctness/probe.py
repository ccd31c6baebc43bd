"""The probe workload: a small request set checked before an engine's first timed case, built so that
the bugs an engine is likely to have change its tokens. The timed rounds are checked too (every
request of every round); the probe is the fast first gate.

What it exercises, and why:
- outputs of 3 to 24 tokens (123 in all): a batch that shrinks as requests finish, and drift after
  16 tokens;
- prompts of 5 to 100 tokens in no particular order: several length groups in one decode step, and
  a group whose rows are not in batch order (two rows of close length, shorter first);
- three prompts that share whole KV blocks: A and B share their first block (a true prefix hit when
  prefix caching is on, and a block that stays in use by A after B finishes); C starts with A's
  second block of tokens, so an engine that shares a block by its own tokens alone, ignoring what
  comes before it, hands C the KV A computed for those tokens after A's first block;
- an engine that frees a block B still shares with A, and hands it out again, overwrites A's first
  block, position 0 first, with 13 of A's tokens still to come. A trained model leans on its first
  positions (an attention sink), so its tokens then leave HF's path by more than bfloat16's rounding;
  a shared block further along was overwritten one slot a step and moved them only within it.

Seeded random weights get random token ids. A trained model (one with a tokenizer) gets windows of
real text instead: on random ids it falls into short loops that no longer depend on the context, so
an engine that hands it another request's KV block would still give HF's tokens.
"""

from __future__ import annotations

import numpy as np

from harness.workloads import Request

PROBE_SEED = 1234
BLOCK = 16  # the paged engine's default block size: the shared prompts line up with its blocks


def probe_requests(vocab_size: int, seed: int = PROBE_SEED, text: tuple[int, ...] | None = None) -> list[Request]:
    """The probe; `text`, a trained model's tokens of real text, to cut its prompts from."""
    rng = np.random.default_rng(seed)

    def ids(n: int) -> tuple[int, ...]:
        if text is None:
            return tuple(int(t) for t in rng.integers(1, vocab_size, size=n))
        start = int(rng.integers(len(text) - n))
        return tuple(text[start : start + n])

    first, second = ids(BLOCK), ids(BLOCK)
    prompts = [
        ids(20),  # with the next one, a length group whose rows are shorter first
        ids(24),
        ids(5),
        ids(100),
        first + second + ids(7),  # A
        ids(61),
        first + ids(3),  # B: A's first block
        second + ids(21),  # C: A's second block of tokens as its first
    ]
    # B ends first, and the next request to need a block (after one more) takes the block B shared
    # with A, if the engine freed it; no other request ends in between. The last two to end are the
    # first two, close in length: one length group whose rows are not in batch order (where paged's
    # decode attention runs in torch; in C the step is one group in batch order).
    new_tokens = [24, 23, 12, 12, 22, 10, 3, 17]
    return [Request(p, n, request_id=i) for i, (p, n) in enumerate(zip(prompts, new_tokens, strict=True))]


def probe_for(spec) -> list[Request]:
    """The probe for a model spec: real text where its checkpoint has a tokenizer, else random ids."""
    from harness.text_workloads import text_ids, tokenizer_at

    text = text_ids(spec.path) if tokenizer_at(spec.path) is not None else None
    return probe_requests(spec.vocab_size, text=text)
