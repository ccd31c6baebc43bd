"""`openai`: any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp server...), over HTTP.

How a deployment that spans several GPUs or machines is measured: through its API, as its users
meet it. Every request is one streamed `/v1/completions` call (harness/engines/openai_client.py),
sent by a client thread at its arrival time (harness/arrivals.py; --max-concurrency caps the calls
in flight), so TTFT, ITL and E2EL are what a client on this machine sees, network included.

- Prompts go as token ids (`--perf-openai-prompt ids`, the default; vLLM and SGLang take them), or as text
  decoded with the tokenizer of the local checkpoint given by --perf-model-path (`--perf-openai-prompt text`).
- Tokens: the chunks' `token_ids` where the server returns them (vLLM's `return_token_ids`), checked
  against the server's usage count; then the suite's output check holds the server to HF greedy like
  any engine. A server that returns no ids gives placeholders to its usage count: run it with
  --perf-no-parity.
- The server must serve the weights the suite builds (`python -m harness save-model` writes a spec's
  seeded model to a folder a server can load); the parity check catches any other model.
- Before every call it asks the server to reset its prefix cache (vLLM: POST /reset_prefix_cache,
  served when the server runs with VLLM_SERVER_DEV_MODE=1), so every round does the same work; a
  server that cannot is recorded (prefix_cache_reset = 0).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from harness.arrivals import ArrivalQueue
from harness.engines.base import BaseEngine, EngineConfig, GenerateResult, RequestOutput
from harness.engines.openai_client import Endpoint, StreamedCompletion, completion_body, stream_completion
from harness.errors import ConfigError, UnknownNameError
from harness.models import LoadedModel
from harness.workloads import Request

PROMPT_FORMATS = ("ids", "text")


class OpenAIEngine(BaseEngine):
    name = "openai"
    takes_arrivals = True
    own_forward = False  # the server's speed is not this machine's reference forward's: never corrected by it

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        super().__init__(loaded, config)
        if not config.openai_base_url:
            raise ConfigError("the openai engine needs --perf-openai-base-url, e.g. http://127.0.0.1:8000/v1")
        if config.openai_prompt not in PROMPT_FORMATS:
            raise UnknownNameError("--perf-openai-prompt", config.openai_prompt, list(PROMPT_FORMATS))
        self.endpoint = Endpoint(config.openai_base_url)
        served = self.endpoint.served_models()
        if config.openai_model and config.openai_model not in served:
            raise UnknownNameError(f"model served at {self.endpoint.base_url}", config.openai_model, served)
        if not served and not config.openai_model:
            raise ConfigError(f"{self.endpoint.base_url}/models lists no model: give --perf-openai-model")
        self.served_model = config.openai_model or served[0]
        self.tokenizer = self._tokenizer(loaded) if config.openai_prompt == "text" else None

    @staticmethod
    def _tokenizer(loaded: LoadedModel):
        from harness.text_workloads import tokenizer_at

        tokenizer = tokenizer_at(loaded.spec.path)
        if tokenizer is None:
            raise ConfigError(
                "--perf-openai-prompt text needs a model with a tokenizer: a trained spec (smollm2-135m) or "
                "--perf-model-path"
            )
        return tokenizer

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        """Each request is sent by its own client thread when it arrives; returns when all have answered."""
        reset = self.endpoint.post("/reset_prefix_cache", root=True) == 200
        start = time.perf_counter()
        run = _Calls(self, requests, start)
        run.drive()
        metrics = {"prefix_cache_reset": float(reset), "max_in_flight": float(run.most)}
        return GenerateResult(run.outputs, time.perf_counter() - start, metrics=metrics)

    def body(self, req: Request) -> dict:
        prompt = self.tokenizer.decode(list(req.prompt_ids)) if self.tokenizer else list(req.prompt_ids)
        return completion_body(self.served_model, prompt, req.max_new_tokens, self.config.ignore_eos)


class _Calls:
    """One generate() call: the arrival loop on this thread, one client thread per request."""

    def __init__(self, engine: OpenAIEngine, requests: Sequence[Request], start: float) -> None:
        self.engine, self.requests = engine, requests
        self.arrivals = ArrivalQueue(requests, engine.config.max_concurrency, start)
        self.outputs: list[RequestOutput] = [RequestOutput(r.request_id, len(r.prompt_ids)) for r in requests]
        self.done = threading.Condition()
        self.in_flight = self.most = 0

    def drive(self) -> None:
        threads = []
        while True:
            with self.done:
                if not self.arrivals and not self.in_flight:
                    break
                for i, req, t in self.arrivals.admit(self.in_flight):
                    self.outputs[i].arrival_s = t
                    self.in_flight += 1
                    threads.append(threading.Thread(target=self._call, args=(i, req), daemon=True))
                    threads[-1].start()
                self.most = max(self.most, self.in_flight)
                self.done.wait(self._until_next_arrival())
        for thread in threads:
            thread.join()

    def _until_next_arrival(self) -> float | None:
        """How long to wait: until the next arrival, or, once it is due, not at all (room under the cap)
        or until a call finishes (notify: the cap is full, and the request counts from when it is let
        in). Re-reads the clock, so a request that came due since admit() looked is never missed."""
        if not self.arrivals.pending:
            return None
        wait = self.arrivals.pending[0][2] - time.perf_counter()
        if wait > 0:
            return wait
        return 0.0 if self.in_flight < self.arrivals.cap else None

    def _call(self, i: int, req: Request) -> None:
        """One request, start to end; whatever goes wrong becomes its error, and it always counts as done."""
        out = self.outputs[i]
        try:
            got = stream_completion(self.engine.endpoint, self.engine.body(req))
            _fill(out, got, req, prompt_ids=self.engine.tokenizer is None)
        except Exception as exc:  # noqa: BLE001 - one request's failure must not hang the round
            out.error = f"request {req.request_id}: {type(exc).__name__}: {exc}"
        finally:
            with self.done:
                self.in_flight -= 1
                self.done.notify()


def _fill(out: RequestOutput, got: StreamedCompletion, req: Request, prompt_ids: bool = True) -> None:
    """The streamed answer as a RequestOutput; a server error, or a usage count the stream (or, for
    prompts sent as ids, the prompt) disagrees with, becomes this request's error (the others go on)."""
    out.token_ids, out.token_times, out.finish_s = got.token_ids, got.token_times, got.finish_s
    out.first_token_s = got.token_times[0] if got.token_times else None
    if got.error:
        out.error = f"request {req.request_id}: the server answered {got.error}"
    elif got.ids_known and got.completion_tokens is not None and got.completion_tokens != len(got.token_ids):
        out.error = (
            f"request {req.request_id}: usage says {got.completion_tokens} tokens, the stream carried "
            f"{len(got.token_ids)}"
        )
    elif prompt_ids and got.prompt_tokens is not None and got.prompt_tokens != len(req.prompt_ids):
        sent = len(req.prompt_ids)
        out.error = f"request {req.request_id}: usage says a {got.prompt_tokens}-token prompt; {sent} were sent"
