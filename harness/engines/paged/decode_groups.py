"""How a decode step's rows meet their K/V: grouped by context length, each group gathered from the
pool into reused buffers and attended to at its own longest context, or, for a lone row whose blocks
lie one after another in the pool, read in place; under --perf-compile, a step of many rows as one
group read through their block tables (flex_decode.py). With the C decode attention, the whole step
is one group read in place (in_place)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class DecodeGroup:
    """Rows of a decode step attended to together: their block tables, longest context and mask, and
    where their K/V comes from (a padded gather into `buffers`, or the pool itself from `first_block`)."""

    index: torch.Tensor | None  # the group's rows in batch order; None: the whole batch, in batch order
    tables: torch.Tensor  # (rows, width) block ids, in the group's row order
    ctx: int
    mask: torch.Tensor | None  # (rows, 1, 1, ctx): each row sees its own positions only; None: all full
    buffers: tuple[torch.Tensor, torch.Tensor] | None  # where the gather copies to; None when read in place
    first_block: int | None = None  # one row whose blocks are consecutive from here: read in place
    block_mask: object | None = None  # flex_decode.py's: the whole batch attended through its tables
    lengths: list[int] | None = None  # each row's context (its position + 1), in the group's row order


def consecutive_from(table: list[int]) -> int | None:
    """The first block of a table whose blocks follow one another in the pool (b, b+1, ...), or None."""
    return table[0] if table and table == list(range(table[0], table[0] + len(table))) else None


def length_buckets(lengths: list[int], ratio: float = 0.75, most: int = 8) -> list[list[int]]:
    """Group batch rows by context length so each group pads to its own longest, not the batch's: the
    K/V gathered and attended to shrink from B x max to about the sum of the lengths. Longest first; a
    group takes rows down to `ratio` of its longest; at most `most` groups. Each group costs two
    gathers and one attention call per layer, so finer is not always faster: on `small`, 24 rows with
    contexts 100-700, a step took 44.7 ms at (0.5, 4), 37.7-39.7 ms anywhere from (0.7, 6) to (0.9, 16)
    (PagedModelRunner.decode timed alone, median of 20 steps)."""
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    groups: list[list[int]] = []
    for b in order:
        if groups and (lengths[b] >= ratio * lengths[groups[-1][0]] or len(groups) == most):
            groups[-1].append(b)
        else:
            groups.append([b])
    return groups


def padded_tables(block_tables: list[list[int]], width: int, device, dtype=torch.long) -> torch.Tensor:
    """(rows, width) block ids: each table cut or padded with block 0 (never read past a row's length)."""
    return torch.tensor([(t + [0] * width)[:width] for t in block_tables], dtype=dtype, device=device)


def ragged_mask(positions: list[int], ctx: int, device: torch.device) -> torch.Tensor | None:
    """(rows, 1, 1, ctx): row b sees positions 0 .. positions[b]; None when every row sees all ctx."""
    if all(p + 1 == ctx for p in positions):
        return None
    row_pos = torch.tensor(positions, device=device)
    return (torch.arange(ctx, device=device)[None] <= row_pos[:, None])[:, None, None, :]


def whole_batch(positions: list[int], block_tables: list[list[int]], block_size: int, device, mask) -> DecodeGroup:
    """The whole batch as one group attended through its block tables (flex_decode.py). Its tables and
    mask are what a gather would need, should the kernel turn out not to compile here."""
    ctx = max(positions) + 1
    width = -(-ctx // block_size)
    tables = padded_tables(block_tables, width, device)
    lengths = [p + 1 for p in positions]
    return DecodeGroup(None, tables, ctx, ragged_mask(positions, ctx, device), None, None, mask, lengths)


def in_place(positions: list[int], block_tables: list[list[int]], block_size: int, device) -> DecodeGroup:
    """The whole batch as one group in batch order, each row read in place through its table over its
    own length (kv_attention.py): no mask, no gather, no reordering."""
    lengths = [p + 1 for p in positions]
    tables = padded_tables(block_tables, -(-max(lengths) // block_size), device)
    return DecodeGroup(None, tables, max(lengths), None, None, lengths=lengths)


def plan_groups(
    positions: list[int],
    block_tables: list[list[int]],
    block_size: int,
    device: torch.device,
    gather_buffers: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
) -> list[DecodeGroup]:
    """Length groups of a decode step whose row b attends to positions 0 .. positions[b]. Every per-row
    tensor of a group (block tables, mask positions, queries, outputs) is taken in that group's row
    order, which length_buckets makes longest first. gather_buffers(blocks) gives a group's K/V copy."""
    batch, groups = len(positions), []
    for rows in length_buckets([p + 1 for p in positions]):
        ctx = max(positions[b] for b in rows) + 1
        width = -(-ctx // block_size)
        tables = padded_tables([block_tables[b] for b in rows], width, device)
        # index None only when the group is the whole batch in batch order
        index = None if rows == list(range(batch)) else torch.tensor(rows, device=device)
        mask = ragged_mask([positions[b] for b in rows], ctx, device)  # ragged contexts: hide each row's tail
        lone = consecutive_from(block_tables[rows[0]][:width]) if len(rows) == 1 else None
        buffers = gather_buffers(tables.numel()) if lone is None else None
        groups.append(DecodeGroup(index, tables, ctx, mask, buffers, lone, lengths=[positions[b] + 1 for b in rows]))
    return groups
