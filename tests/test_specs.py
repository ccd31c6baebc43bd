import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.errors import ModelTooLargeError, UnknownNameError
from harness.models import build_model, hf_config
from harness.roofline import param_count
from harness.specs import MODEL_SPECS, ModelSpec, get_spec


def hf_param_count(spec: ModelSpec) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(spec))
    return sum(p.numel() for p in model.parameters())


def test_qwen3_0_6b_has_the_published_parameter_count():
    spec = get_spec("qwen3-0.6b")
    assert param_count(spec) == 596_049_920
    assert hf_param_count(spec) == 596_049_920


@pytest.mark.parametrize("name", list(MODEL_SPECS))
def test_formula_matches_the_transformers_model(name):
    assert param_count(get_spec(name)) == hf_param_count(get_spec(name))


def test_llama_shapes_match_their_published_sizes():
    assert param_count(get_spec("llama-7b")) == 6_738_415_616
    assert param_count(get_spec("llama-13b")) == 13_015_864_320
    assert param_count(get_spec("llama-70b")) == 68_976_648_192


def test_small_is_in_the_promised_range():
    assert 25e6 <= param_count(get_spec("small")) <= 60e6


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as info:
        get_spec("nope")
    message = str(info.value)
    assert "nope" in message
    for name in MODEL_SPECS:
        assert name in message


def test_a_model_that_does_not_fit_is_a_clear_error():
    with pytest.raises(ModelTooLargeError, match="llama-70b.*GiB"):
        build_model(get_spec("llama-70b"))


def test_spec_validation():
    with pytest.raises(ValueError, match="multiple"):
        ModelSpec("bad", "qwen3", 1, 64, 4, 3, 16, 64, 10)
    with pytest.raises(UnknownNameError, match="qwen3"):
        ModelSpec("bad", "gpt9", 1, 64, 4, 2, 16, 64, 10)


def test_built_weights_are_seeded(tiny):
    again = build_model(get_spec("tiny"), seed=0)
    other = build_model(get_spec("tiny"), seed=1)
    w0 = tiny.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w0, again.model.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(w0, other.model.model.layers[0].mlp.up_proj.weight)
