"""llm-perf-suite: a pytest-based performance regression suite for LLM inference."""

__version__ = "0.1.0"
