"""A streaming client for an OpenAI-compatible `/v1/completions` endpoint (standard library only).

One `stream_completion` call sends one request with `stream: true` and reads its server-sent events
as they arrive, stamping each chunk on time.perf_counter's clock: the stamps a client of the server
sees, which is what TTFT, ITL and E2EL mean for a served engine. Tokens come from the chunks'
`token_ids` where the server returns them (vLLM does with `return_token_ids`); otherwise the count
comes from the final `usage` chunk (`stream_options.include_usage`) and the ids are unknown.

Nothing here imports torch: the bookkeeping is tested with a fake server (tests/test_openai_engine.py).
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from harness.errors import ConfigError

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # one request under heavy load can wait minutes for its first token


@dataclass
class StreamedCompletion:
    """What came back for one request: token ids (where sent), one stamp per token, usage, error."""

    token_ids: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    ids_known: bool = True  # False: the server sent no token ids; token_ids are -1 placeholders
    completion_tokens: int | None = None  # the server's usage count
    prompt_tokens: int | None = None
    finish_s: float | None = None
    error: str | None = None


class Endpoint:
    """host, port and path prefix of a base URL like http://127.0.0.1:8000/v1."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        try:
            port = parts.port
        except ValueError:  # out of range or not a number
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ConfigError(f"--perf-openai-base-url must look like http://HOST:PORT/v1, got {base_url!r}")
        self.base_url, self.https = base_url.rstrip("/"), parts.scheme == "https"
        self.host, self.port = parts.hostname, port or (443 if self.https else 80)
        self.prefix = parts.path if parts.path.endswith("/v1") else parts.path + "/v1"

    def connect(self, timeout: float = READ_TIMEOUT_S) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def get_json(self, path: str) -> dict:
        """GET base/path as JSON; a clear ConfigError when the server cannot be reached or answers badly."""
        conn = self.connect(CONNECT_TIMEOUT_S)
        try:
            conn.request("GET", self.prefix + path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise ConfigError(f"cannot reach the OpenAI-compatible server at {self.base_url}: {exc!r}") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise ConfigError(f"{self.base_url}{path}: HTTP {resp.status}: {body[:200]}")
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise ConfigError(f"{self.base_url}{path}: not JSON: {body[:200]!r}") from None

    def post(self, path: str, root: bool = False) -> int:
        """POST with no body (e.g. vLLM's /reset_prefix_cache, at the server root): the status, 0 if unreachable."""
        conn = self.connect(CONNECT_TIMEOUT_S)
        try:
            conn.request("POST", (self.prefix.removesuffix("/v1") if root else self.prefix) + path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return 0
        finally:
            conn.close()

    def served_models(self) -> list[str]:
        doc = self.get_json("/models")
        try:
            return [m["id"] for m in doc.get("data", [])]
        except (AttributeError, KeyError, TypeError):
            raise ConfigError(f"{self.base_url}/models: not an OpenAI model list: {str(doc)[:200]}") from None


def completion_body(model: str, prompt: list[int] | str, max_tokens: int, ignore_eos: bool) -> dict:
    """Greedy, streamed, with usage and token ids asked for (servers ignore what they do not know)."""
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,  # vLLM: token_ids in every chunk
        "ignore_eos": ignore_eos,  # vLLM, SGLang, llama.cpp: exactly max_tokens, as the suite's engines
    }


def stream_completion(endpoint: Endpoint, body: dict) -> StreamedCompletion:
    """Send one streamed completion and read it to the end; an HTTP or network error is recorded, not raised."""
    out = StreamedCompletion()
    conn = endpoint.connect()
    try:
        conn.request("POST", endpoint.prefix + "/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            out.error = f"HTTP {resp.status}: {_error_text(resp.read())}"
            return out
        _read_events(resp, out)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # a cut chunk, a bad line, a non-HTTP port
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return out


def _read_events(resp: http.client.HTTPResponse, out: StreamedCompletion) -> None:
    while line := resp.readline():
        t = time.perf_counter()
        text = line.decode(errors="replace").strip()
        if not text.startswith("data:"):
            continue  # blank separators, comments, event names
        data = text[len("data:") :].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError(f"a data line that is not a JSON object: {data[:80]!r}")
        _take_chunk(chunk, t, out)
        if out.error:
            break
    if out.error is None and out.finish_s is None:
        out.error = "the stream ended before a finish_reason"
    _fill_unknown_ids(out)


def _take_chunk(chunk: dict, t: float, out: StreamedCompletion) -> None:
    if "error" in chunk:
        out.error = _error_text(json.dumps(chunk["error"]).encode())
        return
    if chunk.get("usage"):
        out.completion_tokens = chunk["usage"].get("completion_tokens")
        out.prompt_tokens = chunk["usage"].get("prompt_tokens")
    for choice in chunk.get("choices") or []:
        ids = choice.get("token_ids")
        if ids is None:  # no ids from this server: a chunk with text is (at least) one token
            out.ids_known = False
            ids = [-1] if choice.get("text") else []
        out.token_ids += ids
        out.token_times += [t] * len(ids)  # tokens that arrive in one chunk share its stamp
        if choice.get("finish_reason") is not None:
            out.finish_s = t


def _fill_unknown_ids(out: StreamedCompletion) -> None:
    """Without ids, the usage count is the truth: placeholders to that count, stamped at the finish."""
    if out.ids_known or out.completion_tokens is None:
        return
    missing = out.completion_tokens - len(out.token_ids)
    if missing > 0:
        out.token_ids += [-1] * missing
        out.token_times += [out.finish_s or time.perf_counter()] * missing
    del out.token_ids[out.completion_tokens :], out.token_times[out.completion_tokens :]


def _error_text(raw: bytes) -> str:
    """The server's message from an OpenAI-style error body, or the body's start."""
    text = raw.decode(errors="replace")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return text[:300]
    err = doc.get("error", doc) if isinstance(doc, dict) else doc
    return str(err.get("message", err) if isinstance(err, dict) else err)[:300]
