"""The serving workloads: the registry, each kind's requests, the shipped lengths file, and that a
prefix cache starts cold every round (a warm one would make later rounds less work than the first)."""

import hashlib
import tomllib
from importlib import resources
from pathlib import Path

import mutants
import pytest

from harness.cases import SERVING
from harness.correctness import OutputChecker
from harness.data import make_conversation_lengths as gen
from harness.engines import EngineConfig
from harness.engines.paged.engine import PagedEngine
from harness.errors import UnknownNameError
from harness.specs import get_spec
from harness.workloads import WORKLOADS, LengthsFileWorkload, SharedPrefixWorkload, Workload, read_lengths

ROOT = Path(__file__).resolve().parents[1]
# sha256 (first 16 hex digits) of each request's fields, vocab 256, computed with the code before
# Workload became a base class: stored baselines match these cases by id, so the requests must not move
MIXED_DIGESTS = {"mixed16": "fb4824283fe23271", "mixed32": "4588d86b4c583b9a", "mixed64": "214c5deb9a40503d"}
MIXED16_LENGTHS = [
    (112, 46), (87, 42), (73, 43), (46, 61), (50, 29), (20, 55), (24, 48), (17, 16),
    (35, 35), (107, 58), (89, 43), (119, 17), (72, 53), (84, 51), (125, 57), (98, 24),
]  # fmt: skip


def digest(requests) -> str:
    h = hashlib.sha256()
    for r in requests:
        h.update(repr((r.prompt_ids, r.max_new_tokens, r.priority, r.request_id, r.arrival_offset_s)).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", list(MIXED_DIGESTS))
def test_mixed_workloads_keep_their_requests(name):
    assert digest(WORKLOADS[name].requests(256)) == MIXED_DIGESTS[name]


def test_mixed16_lengths_and_tokens_unchanged():
    reqs = WORKLOADS["mixed16"].requests(256)
    assert [(len(r.prompt_ids), r.max_new_tokens) for r in reqs] == MIXED16_LENGTHS
    assert reqs[0].prompt_ids[:8] == (23, 221, 6, 139, 21, 77, 123, 108)
    assert reqs[-1].prompt_ids[-4:] == (30, 118, 75, 193)


def test_the_registry():
    token_ids = ["mixed16", "mixed32", "mixed64", "prefix16", "conv16"]
    assert list(WORKLOADS) == [*token_ids, *(f"text-{n}" for n in ("mixed16", "prefix16", "conv16"))]
    assert [n for n, w in WORKLOADS.items() if not w.needs_tokenizer] == token_ids
    assert all(isinstance(w, Workload) and w.name == n for n, w in WORKLOADS.items())
    with pytest.raises(TypeError):
        WORKLOADS["mine"] = WORKLOADS["mixed16"]  # a read-only registry: no module-level mutable state
    with pytest.raises(TypeError):
        Workload()  # the base class only says what a workload provides


@pytest.mark.parametrize("name", [n for n, w in WORKLOADS.items() if not w.needs_tokenizer])
@pytest.mark.parametrize("spec", ["tiny", "small"])
def test_every_workload_fits_the_test_models_and_is_seeded(name, spec):
    s = get_spec(spec)
    reqs = WORKLOADS[name].requests(s.vocab_size)
    assert max(len(r.prompt_ids) + r.max_new_tokens for r in reqs) <= s.max_position
    assert all(0 < t < s.vocab_size for r in reqs for t in r.prompt_ids)
    assert [r.request_id for r in reqs] == list(range(len(reqs)))
    assert reqs == WORKLOADS[name].requests(s.vocab_size)


@pytest.mark.parametrize("name", [n for n, w in WORKLOADS.items() if w.needs_tokenizer])
def test_a_text_workload_without_a_tokenizer_is_a_clear_error(name):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the model's tokenizer"):
        WORKLOADS[name].requests(get_spec("small").vocab_size)


def test_prefix16_is_four_interleaved_groups_of_four():
    w = WORKLOADS["prefix16"]
    assert isinstance(w, SharedPrefixWorkload)
    reqs = w.requests(512)
    assert len(reqs) == 16
    prefixes = [r.prompt_ids[:100] for r in reqs]
    assert len(set(prefixes)) == 4
    assert all(prefixes[i] == prefixes[i % 4] for i in range(16))  # groups take turns in arrival order
    assert len({r.prompt_ids[100:101] for r in reqs}) > 4  # suffixes differ from the first token on
    assert all(8 <= len(r.prompt_ids) - 100 <= 32 and 16 <= r.max_new_tokens <= 48 for r in reqs)


def test_conv16_draws_distinct_rows_of_the_shipped_file():
    w = WORKLOADS["conv16"]
    assert isinstance(w, LengthsFileWorkload)
    rows = read_lengths(w.file_name)
    reqs = w.requests(512)
    assert len(reqs) == 16
    picked = [(len(r.prompt_ids), r.max_new_tokens) for r in reqs]
    assert all(p in rows for p in picked)
    assert len(set(picked)) > 12  # drawn without replacement (a few rows repeat in the file)


def test_the_lengths_file_is_what_its_seeded_generator_writes():
    text = resources.files("harness.data").joinpath("conversation_lengths.csv").read_text()
    assert text == gen.render(gen.draw())
    rows = read_lengths("conversation_lengths.csv")
    assert len(rows) == gen.ROWS
    assert max(p + o for p, o in rows) <= gen.CONTEXT // gen.SCALE + 2  # each length rounded up
    # scaled back up, the sample's means are within 5% of the published ShareGPT means
    assert sum(p for p, _ in rows) / len(rows) * gen.SCALE == pytest.approx(gen.INPUT_MEAN, rel=0.05)
    assert sum(o for _, o in rows) / len(rows) * gen.SCALE == pytest.approx(gen.OUTPUT_MEAN, rel=0.05)
    assert "SYNTHETIC" in text.splitlines()[0]


def test_the_lengths_file_is_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.csv" in config["tool"]["setuptools"]["package-data"]["harness.data"]


def test_serving_cases_take_the_new_workloads_and_only_the_full_tier_runs_them_by_default():
    cases = SERVING.cases("quick", "tiny", ["paged"], None, workloads=["prefix16", "conv16"])
    assert [c.id for c in cases] == ["tiny-paged-prefix16", "tiny-paged-conv16"]
    assert not {"prefix16", "conv16"} & {w for t in ("quick", "default") for w in SERVING.matrix[t]["workloads"]}
    assert SERVING.matrix["full"]["workloads"] == ["mixed64", "prefix16", "conv16"]  # appended after mixed64
    with pytest.raises(UnknownNameError, match="prefix16"):
        SERVING.cases("quick", "tiny", ["paged"], None, workloads=["prefix17"])


# --- the prefix cache starts cold every round ---------------------------------------------------


def warm_cache_problem(engine, requests, rounds: int = 2) -> str | None:
    """What is wrong with an engine's prefix-cache hits over `rounds` calls of the same requests: none
    within a round (the workload does not exercise the cache), or a round that hits more than the
    first (it read prefixes a previous round cached: less work than the first round)."""
    hits = [engine.generate(requests).metrics["prefix_cache_hit_tokens"] for _ in range(rounds)]
    if hits[0] <= 0:
        return f"engine {engine.name}: no prefix-cache hits within a round"
    if any(h != hits[0] for h in hits[1:]):
        return f"engine {engine.name}: prefix-cache hit tokens per round {hits}; every round must start cold"
    return None


def test_paged_hits_shared_prefixes_within_a_round_and_starts_cold_every_round(tiny):
    reqs = WORKLOADS["prefix16"].requests(tiny.spec.vocab_size)
    engine = PagedEngine(tiny, EngineConfig())
    first = engine.generate(reqs)
    # each group's 3 later requests share its first one's 6 full 16-token blocks (the prefix is 100 tokens)
    assert first.metrics["prefix_cache_hit_tokens"] == 4 * 3 * 96
    assert warm_cache_problem(engine, reqs, rounds=3) is None
    # HF greedy's tokens, near-ties accepted as the suite accepts them (cached and fresh attention
    # differ in float rounding)
    assert OutputChecker(tiny).tokens_problem(engine.name, reqs, first.outputs, "prefix16") is None


def test_an_engine_that_keeps_its_prefix_cache_across_rounds_is_refused(tiny):
    reqs = WORKLOADS["prefix16"].requests(tiny.spec.vocab_size)
    problem = warm_cache_problem(mutants.WarmPrefixCachePaged(tiny, EngineConfig()), reqs)
    assert problem is not None
    assert "mutant-warm-prefix-cache" in problem
    assert "every round must start cold" in problem
