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
    batched = rl.serving_cost(QWEN, "bfloat16", lengths, max_batch=4)
    w = rl.weight_bytes(QWEN, "bfloat16")
    # alone: 5 + 9 forwards; batched: 1 prefill pass + ceil(12 decode tokens / 4) = 4 forwards
    assert alone.bytes - batched.bytes == w * (14 - 4)
    assert batched.flops == alone.flops


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
