import pytest
import torch

from harness.engines import EngineConfig
from harness.engines.manual import ManualEngine
from harness.errors import PerfSuiteError
from harness.models import load_model
from harness.specs import ModelSpec
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
