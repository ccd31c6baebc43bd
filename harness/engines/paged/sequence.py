"""A request inside the engine: its tokens, its blocks, its state. No torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto


class SeqStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    SWAPPED = auto()
    FINISHED = auto()


@dataclass(eq=False)
class Sequence:
    seq_id: int
    prompt_ids: list[int]
    max_new_tokens: int
    priority: int = 0  # lower value is served first
    arrival: int = 0  # arrival order, for tie-breaks and preemption (latest arrived goes first)
    output_ids: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    cpu_block_table: list[int] = field(default_factory=list)  # while swapped out
    num_cached_tokens: int = 0  # leading tokens whose KV came from the prefix cache at the last allocation
    status: SeqStatus = SeqStatus.WAITING

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def order_key(self) -> tuple[int, int]:
        """Sort key: most important first (lowest priority value, then earliest arrival)."""
        return (self.priority, self.arrival)
