"""One layer's decode attention in the paged engine, two ways, interleaved: through the block tables
(flex_decode.py, under --perf-compile) and gathered into length groups (the engine's eager path).

    python -m experiments.decode_attention [--model small] [--rows 4,8,16,32] [--rounds 15]

For each row count, rows of differing contexts (150-800 tokens, seeded) and rows of one context
(400) on blocks scattered over the pool, the same queries both ways; both answers are compared
before timing. Prints the median of each and their ratio. flex_decode.worth_it's rule (which steps
go through the tables) rests on this comparison.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

import torch

from experiments.decode_bound import interleaved
from harness.engines import EngineConfig
from harness.engines.base import StepCase
from harness.engines.paged.decode_groups import plan_groups, whole_batch
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.model_runner import PagedModelRunner
from harness.models import build_model
from harness.roofline import kv_bytes_per_token
from harness.specs import get_spec


def rows_on_scattered_blocks(runner: PagedModelRunner, lengths: list[int], rng: random.Random):
    """Positions and block tables of rows with these context lengths, their blocks drawn at random."""
    free = list(range(runner.k_cache.shape[1] - 1))  # the last block is the graphs' scratch block
    rng.shuffle(free)
    tables = [[free.pop() for _ in range(-(-n // runner.block_size))] for n in lengths]
    return [n - 1 for n in lengths], tables


def both_ways(runner: PagedModelRunner, positions: list[int], tables: list[list[int]]) -> dict[str, StepCase]:
    q = torch.randn(len(positions), runner.n_heads, runner.head_dim)

    def through_tables():
        mask = runner.flex.block_mask(positions, tables)
        return runner._decode_attention(0, q, whole_batch(positions, tables, runner.block_size, "cpu", mask), None)

    def gathered():
        groups = plan_groups(positions, tables, runner.block_size, runner.device, runner._gather_buffers)
        out = None if groups[0].index is None else q.new_empty(len(positions), runner.n_heads * runner.head_dim)
        for g in groups:
            out = runner._decode_attention(0, q, g, out)
        return out

    torch.testing.assert_close(through_tables(), gathered(), rtol=1e-4, atol=1e-4)
    return {"tables": StepCase(run=through_tables), "gathered": StepCase(run=gathered)}


def run(model: str, rows: list[int], rounds: int, seed: int = 0) -> list[str]:
    loaded = build_model(get_spec(model), dtype="float32", device="cpu")
    lengths = {"ragged": lambda n, rng: [rng.randint(150, 800) for _ in range(n)], "equal": lambda n, rng: [400] * n}
    pool = (max(rows) * 800 + 64 * max(rows)) * kv_bytes_per_token(loaded.spec, "float32")
    runner = PagedEngine(loaded, EngineConfig(compile=True, kv_cache_mem=float(pool))).runner
    runner.k_cache.normal_()
    runner.v_cache.normal_()
    lines = []
    for kind, draw in lengths.items():
        for n in rows:
            rng = random.Random(seed + n)
            times = interleaved(both_ways(runner, *rows_on_scattered_blocks(runner, draw(n, rng), rng)), rounds, seed)
            t, g = statistics.median(times["tables"]), statistics.median(times["gathered"])
            ms = f"tables {t * 1e3:.2f} ms, gathered {g * 1e3:.2f} ms"
            lines.append(f"{kind} {n} rows: {ms}, gathered/tables {g / t:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.decode_attention", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--rows", default="4,8,16,32")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    for line in run(args.model, [int(r) for r in args.rows.split(",")], args.rounds):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
