"""Scheduler decisions, without torch."""

import subprocess
import sys

from harness.engines.paged.block_manager import BlockManager
from harness.engines.paged.scheduler import Scheduler, SchedulerConfig
from harness.engines.paged.sequence import SeqStatus, Sequence


def make(num_blocks=8, block_size=4, **config):
    knobs = {"max_num_seqs": 16, "max_num_batched_tokens": 4096, "preemption": "recompute", **config}
    return Scheduler(SchedulerConfig(**knobs), BlockManager(num_blocks, block_size, num_cpu_blocks=num_blocks))


def seq(i, n, priority=0):
    return Sequence(i, list(range(100 * i + 1, 100 * i + 1 + n)), 50, priority, arrival=i)


def test_bookkeeping_never_imports_torch():
    code = (
        "import sys; import harness.engines.paged.scheduler, harness.engines.paged.block_manager; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_waiting_join_within_limits_and_prefill_comes_first():
    s = make(num_blocks=16, max_num_seqs=2)
    for i in range(3):
        s.add(seq(i, 5))
    batch = s.schedule()
    assert batch.is_prefill
    assert [x.seq_id for x in batch.seqs] == [0, 1]
    for x in batch.seqs:
        x.output_ids.append(7)
    batch = s.schedule()
    assert not batch.is_prefill
    assert len(batch.seqs) == 2
    s.finish(batch.seqs[0])
    batch = s.schedule()
    assert batch.is_prefill
    assert [x.seq_id for x in batch.seqs] == [2]


def test_token_budget_limits_a_prefill_batch():
    s = make(num_blocks=32, max_num_seqs=8, max_num_batched_tokens=12)
    for i in range(3):
        s.add(seq(i, 5))
    assert [x.seq_id for x in s.schedule().seqs] == [0, 1]


def test_preemption_takes_the_lowest_priority_latest_arrival():
    s = make(num_blocks=3, block_size=4, max_num_seqs=3)
    a, b, c = seq(0, 4, priority=0), seq(1, 4, priority=1), seq(2, 4, priority=1)
    for x in (a, b, c):
        s.add(x)
    assert len(s.schedule().seqs) == 3  # one full block each: the pool is full
    for x in (a, b, c):
        x.output_ids.append(9)  # each now needs a second block
    batch = s.schedule()
    assert c.status is SeqStatus.WAITING  # priority 1 and arrived last
    assert b.status is SeqStatus.WAITING  # then the next least important, to make room for a
    assert [x.seq_id for x in batch.seqs] == [0]
    assert s.num_preemptions == 2


def test_swap_preemption_moves_blocks_and_brings_them_back():
    s = make(num_blocks=2, block_size=4, max_num_seqs=2, preemption="swap")
    a, b = seq(0, 4), seq(1, 4)
    s.add(a)
    s.add(b)
    s.schedule()
    a.output_ids.append(1)
    b.output_ids.append(1)
    batch = s.schedule()
    assert b.status is SeqStatus.SWAPPED
    assert len(batch.swap_out) == 1
    assert b.cpu_block_table
    s.finish(a)
    batch = s.schedule()
    assert b.status is SeqStatus.RUNNING
    assert len(batch.swap_in) == 1
    assert batch.seqs == [b]


def test_admission_keeps_a_watermark_free_while_others_run():
    s = make(num_blocks=100, block_size=4, max_num_seqs=8, watermark=0.05)  # 5 blocks held back
    s.add(seq(0, 4 * 90))  # 90 blocks: admitted, nothing else runs
    s.add(seq(1, 4 * 6))  # 6 more would leave 4 < 5 free
    assert [x.seq_id for x in s.schedule().seqs] == [0]
    s2 = make(num_blocks=100, block_size=4, max_num_seqs=8, watermark=0.05)
    s2.add(seq(0, 4 * 90))
    s2.add(seq(1, 4 * 5))  # leaves exactly 5 free
    assert [x.seq_id for x in s2.schedule().seqs] == [0, 1]


def test_a_request_needing_the_whole_pool_still_runs_alone_under_a_watermark():
    s = make(num_blocks=10, block_size=4, max_num_seqs=4, watermark=0.2)
    s.add(seq(0, 40))
    assert [x.seq_id for x in s.schedule().seqs] == [0]


def test_the_probe_hands_a_stale_engine_the_first_block_of_a_request_with_tokens_to_come():
    """harness/correctness/probe.py's design, at the scheduler: with a block manager that frees a block
    still shared (tests/mutants.py), the first write into A's blocks by another request lands on A's
    position 0 while A has at least 10 tokens to go, the damage a trained model cannot round away."""
    from mutants import StaleBlockManager

    from harness.correctness.probe import probe_requests

    requests = probe_requests(1000)
    s = Scheduler(SchedulerConfig(256, 4096, "recompute"), StaleBlockManager(200, 16))
    seqs = [Sequence(i, list(r.prompt_ids), r.max_new_tokens, arrival=i) for i, r in enumerate(requests)]
    for q in seqs:
        s.add(q)
    a = seqs[4]
    writes = []  # (A's block index, slot, A's tokens to go) of each write by another request into A's blocks
    while s.has_unfinished():
        batch = s.schedule()
        for q in batch.seqs if not batch.is_prefill and a.status == SeqStatus.RUNNING else []:
            block = q.block_table[(len(q) - 1) // 16]
            if q is not a and block in a.block_table:
                writes.append((a.block_table.index(block), (len(q) - 1) % 16, a.max_new_tokens - len(a.output_ids)))
        for q in batch.seqs:
            q.output_ids.append(7)
            if len(q.output_ids) >= q.max_new_tokens:
                s.finish(q)
    assert writes, "no request wrote into A's blocks"
    assert writes[0][:2] == (0, 0)  # A's first block, position 0
    assert writes[0][2] >= 10
