import pytest

from harness.models import build_model
from harness.specs import get_spec


@pytest.fixture(scope="session")
def tiny():
    return build_model(get_spec("tiny"), seed=0)
