"""Block manager invariants under random operation sequences (hypothesis), with simulated contents:
every slot 'holds' what its real KV depends on, the token at that position and every token before it,
so a prefix hit or a swap that hands a sequence the wrong KV is caught, including a block whose own
tokens match but whose prefix does not."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.engines.paged.block_manager import BlockManager
from harness.engines.paged.sequence import Sequence

BS = 4


class Sim:
    def __init__(self, num_blocks: int, num_cpu: int) -> None:
        self.bm = BlockManager(num_blocks, BS, num_cpu)
        self.content: dict[int, list[int]] = {}  # device block -> tokens written there
        self.cpu: dict[int, list[int]] = {}
        self.live: list[Sequence] = []
        self.swapped: list[Sequence] = []

    def write(self, seq: Sequence, upto: int) -> None:
        """The runner writes KV for positions num_cached .. upto-1."""
        for pos in range(seq.num_cached_tokens, upto):
            block = seq.block_table[pos // BS]
            slots = self.content.setdefault(block, [None] * BS)
            slots[pos % BS] = tuple(seq.token_ids[: pos + 1])  # KV at pos depends on tokens 0..pos

    def check_contents(self, seq: Sequence, upto: int) -> None:
        for pos in range(upto):
            assert self.content[seq.block_table[pos // BS]][pos % BS] == tuple(seq.token_ids[: pos + 1])

    def check_invariants(self) -> None:
        refs: dict[int, int] = {}
        for seq in self.live:
            for b in seq.block_table:
                refs[b] = refs.get(b, 0) + 1
        for block in self.bm.blocks:
            assert block.ref_count >= 0
            assert block.ref_count == refs.get(block.block_id, 0)
            if block.ref_count > 1:  # shared only as a full block registered with its whole chain
                assert block.chain is not None
                assert len(block.chain) % BS == 0
                assert self.content[block.block_id] == [block.chain[: len(block.chain) - BS + i + 1] for i in range(BS)]
        free = list(self.bm.free_block_ids)
        assert len(free) == len(set(free))
        assert set(free) == {b.block_id for b in self.bm.blocks if b.ref_count == 0}
        assert self.bm.shared_extra_refs == sum(max(r - 1, 0) for r in refs.values())


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "grow", "free", "swap_out", "swap_in"]),
        st.integers(0, 10),
        st.lists(st.integers(1, 3), min_size=1, max_size=14),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, num_blocks=st.integers(4, 24))
def test_block_manager_invariants(ops, num_blocks):
    sim = Sim(num_blocks, num_cpu=num_blocks)
    next_id = 0
    for op, pick, tokens in ops:
        if op == "add":
            # a tiny alphabet makes shared prefixes (and so cache hits) frequent
            seq = Sequence(next_id, list(tokens), 100)
            next_id += 1
            if sim.bm.can_allocate(seq):
                sim.bm.allocate(seq)
                sim.check_contents(seq, seq.num_cached_tokens)  # a hit must already hold these tokens
                sim.write(seq, len(seq))
                sim.live.append(seq)
        elif op == "grow" and sim.live:
            seq = sim.live[pick % len(sim.live)]
            seq.output_ids.append(tokens[0])
            if sim.bm.can_append(seq):
                sim.bm.append_slot(seq)
                seq.num_cached_tokens = len(seq) - 1
                sim.write(seq, len(seq))
            else:
                seq.output_ids.pop()
        elif op == "free" and sim.live:
            sim.bm.free(sim.live.pop(pick % len(sim.live)))
        elif op == "swap_out" and sim.live:
            seq = sim.live[pick % len(sim.live)]
            if sim.bm.can_swap_out(seq):
                sim.live.remove(seq)
                for dev, cpu in sim.bm.swap_out(seq):
                    sim.cpu[cpu] = list(sim.content[dev])
                sim.swapped.append(seq)
        elif op == "swap_in" and sim.swapped:
            seq = sim.swapped[pick % len(sim.swapped)]
            if sim.bm.can_swap_in(seq):
                sim.swapped.remove(seq)
                for cpu, dev in sim.bm.swap_in(seq):
                    sim.content[dev] = list(sim.cpu[cpu])
                sim.check_contents(seq, len(seq))  # swap out then in restores the same contents
                sim.live.append(seq)
        sim.check_invariants()
        for seq in sim.live:
            sim.check_contents(seq, len(seq))
    for seq in sim.live:
        sim.bm.free(seq)
    for seq in sim.swapped:
        sim.bm.free_cpu_block_ids.extend(seq.cpu_block_table)
    sim.live = []
    sim.check_invariants()
    assert sim.bm.num_free_blocks == num_blocks
    assert len(sim.bm.free_cpu_block_ids) == num_blocks


def test_a_reset_pool_hands_out_consecutive_blocks_again():
    """Frees leave the free list out of order; a reset (only with no block in use) restores a fresh
    pool's order, so a lone sequence again sits on consecutive blocks (read in place by decode)."""
    bm = BlockManager(8, BS, 0)
    seqs = [Sequence(i, list(range(10 * i, 10 * i + 9)), 1) for i in range(2)]
    for seq in seqs:
        bm.allocate(seq)
    for seq in seqs:
        bm.free(seq)
    lone = Sequence(9, list(range(100, 109)), 1)
    bm.allocate(lone)
    assert lone.block_table != [0, 1, 2]
    bm.free(lone)
    bm.reset_prefix_cache()
    bm.allocate(lone)
    assert lone.block_table == [0, 1, 2]
