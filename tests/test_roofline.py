"""Roofline formulas against values computed by hand for Qwen3-0.6B."""

import pytest

from harness import roofline as rl
from harness.report.tables import roofline_tables
from harness.specs import get_spec

QWEN = get_spec("qwen3-0.6b")
# One layer: q,o 1024x2048 each; k,v 1024x1024 each; MLP 3 x 1024x3072 -> 15,728,640 matmul weights,
# norms 2 x 1024 + q/k norms 2 x 128 = 2,304.
LAYER_MATMUL = 15_728_640


def test_layer_and_streamed_weights():
    assert rl.layer_matmul_params(QWEN) == LAYER_MATMUL
    assert rl.layer_norm_params(QWEN) == 2_304
    # tied: the embedding is gathered, the same matrix streamed once as the output projection
    assert rl.streamed_weight_params(QWEN) == 28 * (LAYER_MATMUL + 2_304) + 1_024 + 151_936 * 1_024 == 596_049_920
    assert rl.weight_bytes(QWEN, "bfloat16") == 1_192_099_840


def test_kv_bytes_per_token_is_112_kib_in_bf16():
    assert rl.kv_bytes_per_token(QWEN, "bfloat16") == 2 * 28 * 8 * 128 * 2 == 112 * 1024


def test_decode_step_by_hand():
    cost = rl.decode_cost(QWEN, "bfloat16", batch_size=1, context_len=100)
    # matmuls 2*28*15,728,640 + lm_head 2*151,936*1,024 + attention 4*28*16*128*101
    assert cost.flops == 880_803_840 + 311_164_928 + 23_166_976
    # weights + KV read (100 tokens) + KV write (1 token) + one embedding row
    assert cost.bytes == 1_192_099_840 + 11_468_800 + 114_688 + 2_048


def test_prefill_by_hand():
    cost = rl.prefill_cost(QWEN, "float32", batch_size=2, prompt_len=10)
    # 20 tokens through the matmuls, logits for 2 rows, 2 * 10*11/2 = 110 causal (query, key) pairs
    assert cost.flops == 2 * 28 * LAYER_MATMUL * 20 + 2 * 151_936 * 1_024 * 2 + 4 * 28 * 16 * 128 * 110
    assert cost.bytes == 596_049_920 * 4 + 20 * 229_376 + 20 * 1_024 * 4


def test_generation_is_prefill_plus_decode_steps():
    gen = rl.generation_cost(QWEN, "bfloat16", prompt_len=8, new_tokens=3)
    parts = (
        rl.prefill_cost(QWEN, "bfloat16", 1, 8)
        + rl.decode_cost(QWEN, "bfloat16", 1, 8)
        + rl.decode_cost(QWEN, "bfloat16", 1, 9)
    )
    assert gen == parts


def test_serving_bound_counts_weights_once_per_batched_step():
    lengths = [(10, 5), (20, 9)]
    alone = rl.requests_cost(QWEN, "bfloat16", lengths)
    batched = rl.serving_cost(QWEN, "bfloat16", lengths, max_seqs=4)
    w = rl.weight_bytes(QWEN, "bfloat16")
    # alone: 5 + 9 forwards. Batched: 1 prefill pass (30 prompt tokens), then decode steps: 12 decode
    # tokens / 4 per step = 3, but the 9-token request alone needs 8 steps in a row: 1 + 8 = 9 forwards
    assert rl.serving_weight_streams(lengths, 4, 4096) == 9
    assert alone.bytes - batched.bytes == w * (14 - 9)
    assert batched.flops == alone.flops


def test_serving_weight_streams_by_hand():
    # many short requests, few sequences per step: the step limit binds. 10 requests of 3 new tokens:
    # 20 decode tokens / 4 per step = 5 steps (> the 2 any one request needs); 10 x 100 prompt tokens
    # in passes of 256 = 4 passes (ceil 1000 / 256)
    assert rl.serving_weight_streams([(100, 3)] * 10, 4, 256) == 5 + 4
    # one long request among short ones: its own decode steps bind (61 new -> 60 steps)
    assert rl.serving_weight_streams([(16, 61)] + [(16, 2)] * 15, 256, 4096) == 60 + 1
    # a prompt longer than the budget takes a pass of its own, not a fraction of one
    assert rl.serving_weight_streams([(5000, 1)], 8, 4096) == 0 + 1
    assert rl.serving_weight_streams([], 8, 4096) == 0


def test_serving_bound_on_the_suites_workloads():
    """The issue's figures: mixed16's longest request needs 61 new tokens, mixed64's 256, so the bound
    streams the weights at least that often (the old formula counted 4 and 36)."""
    from harness.cases import WORKLOADS

    for name, longest in (("mixed16", 61), ("mixed64", 256)):
        reqs = WORKLOADS[name].requests(32000)
        lengths = [(len(r.prompt_ids), r.max_new_tokens) for r in reqs]
        assert max(n for _, n in lengths) == longest
        assert rl.serving_weight_streams(lengths, 256, 4096) >= longest


def test_bound_and_utilisation():
    peaks = rl.Peaks(bw_bytes_s=1e12, flops_s=1e15, bw_source="nvml", flops_source="table")
    cost = rl.decode_cost(QWEN, "bfloat16", 1, 100)
    point = rl.bound(cost, peaks)
    assert point.bound == "memory"
    assert point.roofline_s == pytest.approx(cost.bytes / 1e12)
    u = rl.utilisation(cost, peaks, measured_s=2 * point.roofline_s)
    assert u["pct_of_roofline"] == pytest.approx(0.5)
    assert u["mbu"] == pytest.approx(0.5)
    assert u["mfu"] == pytest.approx(cost.flops / (2 * point.roofline_s) / 1e15)
    big_prefill = rl.prefill_cost(QWEN, "bfloat16", 8, 2048)
    assert rl.bound(big_prefill, peaks).bound == "compute"


def test_tokens_per_s_is_the_one_definition():
    assert rl.tokens_per_s(300, 1.5) == 200


def test_simple_tables_reproduce_the_tutorial():
    text = "\n".join(roofline_tables("qwen3-0.6b", None, "float32", 6, simple=True))
    assert "7.15" in text
    assert "1.19" in text
    assert "2.38" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert rows["prefill"][-1] == "3.0"
    assert rows["decode"][-1] == "0.5"
    assert rows["0.6B"][1:] == ["1.2", "0.6", "1667"]
    assert rows["7B"][1:] == ["14.0", "7.0", "143"]
    assert rows["13B"][1:] == ["26.0", "13.0", "77"]
    assert rows["70B"][1:] == ["140.0", "70.0", "14"]


def test_detailed_table_for_a_gpu_we_do_not_have():
    text = "\n".join(roofline_tables("qwen3-0.6b", "h100-sxm", "float32", 6, simple=False))
    assert "3.35 TB/s" in text
    assert "llama-70b" in text


def test_a_case_over_its_roofline_is_explained():
    peaks = rl.Peaks(bw_bytes_s=20e9, flops_s=1e11, bw_source="measured read", flops_source="measured")
    assert rl.over_roofline_note(0.99, "memory", 100 << 20, 32 << 20, peaks) is None
    fits = rl.over_roofline_note(1.2, "memory", 10 << 20, 32 << 20, peaks)
    assert "fits in the last-level cache" in fits
    partly = rl.over_roofline_note(1.015, "memory", 128 << 20, 32 << 20, peaks)
    assert "up to 25% of its working set" in partly
    compute = rl.over_roofline_note(1.1, "compute", 1 << 30, 32 << 20, peaks)
    assert "measured FLOP/s peak" in compute


def test_working_set_is_weights_plus_held_kv():
    assert rl.working_set_bytes(QWEN, "bfloat16", 1000) == rl.weight_bytes(QWEN, "bfloat16") + 1000 * 112 * 1024
