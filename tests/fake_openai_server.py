"""A small OpenAI-compatible server for the `openai` engine's tests: /v1/models, streamed
/v1/completions with token ids and usage, /reset_prefix_cache. Its tokens come from the suite's
manual engine (HF greedy) on the same model, one chunk per token, `gap_s` apart; its faults are the
broken servers the engine's checks must refuse (tests/test_openai_engine.py)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.engines.base import EngineConfig
from harness.engines.manual import ManualEngine
from harness.workloads import Request

FAULTS = ("none", "wrong-token", "no-ids", "usage-mismatch", "cut-stream", "cut-chunk", "garbage", "bad-prompt-count")


class FakeServer:
    def __init__(self, loaded, fault: str = "none", gap_s: float = 0.005, max_prompt: int = 10_000) -> None:
        assert fault in FAULTS
        self.engine = ManualEngine(loaded, EngineConfig())
        self.fault, self.gap_s, self.max_prompt = fault, gap_s, max_prompt
        self.lock = threading.Lock()  # one forward at a time through the shared model
        self.resets = 0
        self.received: dict[tuple[int, ...], float] = {}  # prompt -> when its request came in (perf_counter)
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.base_url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.http.shutdown()
        self.http.server_close()

    def tokens(self, prompt: list[int], max_tokens: int) -> list[int]:
        with self.lock:
            out = self.engine.generate([Request(tuple(prompt), max_tokens)]).outputs[0].token_ids
        if self.fault == "wrong-token":
            out[len(out) // 2] += 1
        return out

    def chunks(self, body: dict):
        tokens = self.tokens(body["prompt"], body["max_tokens"])
        for i, token in enumerate(tokens):
            if self.fault == "cut-stream" and i == len(tokens) - 1:
                return
            choice = {"index": 0, "text": f"<{token}>", "finish_reason": "length" if i == len(tokens) - 1 else None}
            if self.fault != "no-ids":
                choice["token_ids"] = [token]
            yield {"choices": [choice]}
        used = len(tokens) + (1 if self.fault == "usage-mismatch" else 0)
        prompt = len(body["prompt"]) + (1 if self.fault == "bad-prompt-count" else 0)
        yield {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": used}}


def _handler(server: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _json(self, status: int, doc: dict) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if isinstance(body.get("prompt"), list):
                server.received[tuple(body["prompt"])] = time.perf_counter()
            if self.path == "/reset_prefix_cache":
                server.resets += 1
                return self._json(200, {})
            if len(body.get("prompt", [])) > server.max_prompt:
                return self._json(400, {"error": {"message": "This model's maximum context length is exceeded"}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")  # as uvicorn streams (vLLM's server)
            self.end_headers()
            for i, chunk in enumerate(server.chunks(body)):
                time.sleep(server.gap_s)
                if server.fault == "garbage" and i == 1:
                    self._chunk(b"data: {not json\n\n")
                    continue
                if server.fault == "cut-chunk" and i == 1:  # the server dies mid-chunk
                    self.wfile.write(b"400\r\ndata: {")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def _chunk(self, raw: bytes) -> None:
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

    return Handler
