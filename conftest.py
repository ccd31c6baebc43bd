# The suite's pytest plugin. Installed (`pip install`, `make setup`), it comes by its `pytest11` entry
# point; in a bare checkout this loads it instead.
from importlib.metadata import entry_points

if not any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["harness.pytest_plugin"]
