import pytest
import torch

from harness.correctness.sensitivity import context_sensitivity
from harness.engines import EngineConfig
from harness.engines.manual import ManualEngine
from harness.errors import PerfSuiteError
from harness.models import build_model, load_model
from harness.specs import ModelSpec, get_spec
from harness.workloads import fixed_requests


def test_a_saved_checkpoint_loads_back_with_the_same_shape_and_tokens(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert ModelSpec.from_pretrained(tmp_path).num_layers == tiny.spec.num_layers
    assert loaded.spec.hidden_size == tiny.spec.hidden_size
    assert loaded.spec.qk_norm
    for a, b in zip(tiny.model.state_dict().values(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    reqs = fixed_requests(2, 9, 7, tiny.spec.vocab_size, seed=3)
    ours = ManualEngine(tiny, EngineConfig()).generate(reqs)
    theirs = ManualEngine(loaded, EngineConfig()).generate(reqs)
    assert [o.token_ids for o in ours.outputs] == [o.token_ids for o in theirs.outputs]


def test_a_folder_without_a_config_names_the_file(tmp_path):
    with pytest.raises(PerfSuiteError, match="config.json"):
        load_model(str(tmp_path))


LLAMA_MINI = ModelSpec("llama-mini", "llama", 4, 256, 8, 4, 32, 768, 32000, rope_theta=10000.0, rms_norm_eps=1e-5)


@pytest.mark.parametrize(
    "spec",
    [get_spec("tiny"), pytest.param(get_spec("small"), marks=pytest.mark.slow), LLAMA_MINI],
    ids=["tiny", "small", "llama-mini"],
)
def test_built_in_models_depend_on_their_context(spec):
    """One early prompt token changes later generated tokens for most prompts, the output is not one
    token repeated, and zeroing attention changes the output: a token check can see attention and KV."""
    s = context_sensitivity(build_model(spec, seed=0), prompts=8, new_tokens=24)
    assert s.changed >= 6
    assert s.dependence >= 0.5
    assert s.distinct >= 0.5
    assert s.zero_attention_changed >= 6


def test_the_sensitivity_check_fails_on_transformers_default_init():
    s = context_sensitivity(build_model(get_spec("tiny"), seed=0, context_sensitive=False), prompts=8, new_tokens=24)
    assert s.changed <= 2
    assert s.distinct < 0.2
