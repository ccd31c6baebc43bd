# The suite's pytest plugin: options (--models, --engines, ...), fixtures and hooks.
pytest_plugins = ["harness.pytest_plugin"]
