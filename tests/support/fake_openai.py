"""A local HTTP server that speaks the parts of OpenAI's API the pipeline uses.

The real `openai` client talks to it through OPENAI_BASE_URL, so request building, retries and
error mapping are the client's own. The server records every request (parsed) for the tests to
check shapes, and can be told to answer the next N requests to a path with an error status.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import math
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-pipeline"
EMBEDDING_DIMENSION = 256
TRANSCRIPT = "Introducing Sparkle Cola. The crisp taste of summer. Buy Sparkle Cola today."
ANALYSIS = {
    "brand": "Sparkle Cola",
    "product": "cola soft drink",
    "category": "soft drinks",
    "tone": "upbeat",
    "claims": ["the crisp taste of summer"],
    "call_to_action": "Buy Sparkle Cola today",
    "target_audience": None,
    "language": "en",
    "summary": "A short upbeat advert for Sparkle Cola.",
}


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)


def fake_vector(text: str) -> list[float]:
    """A deterministic unit vector per text (the fake's stand-in for a model)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] + i * 31) % 255) / 255.0 - 0.5 for i in range(EMBEDDING_DIMENSION)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._failures: dict[str, deque[int]] = defaultdict(deque)
        self.analysis_content: str = json.dumps(ANALYSIS)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self.analysis_content = json.dumps(ANALYSIS)

    def fail(self, path: str, *statuses: int) -> None:
        """Answer the next len(statuses) requests to path (e.g. "/v1/embeddings") with these."""
        with self._lock:
            self._failures[path].extend(statuses)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def _next_failure(self, path: str) -> int | None:
        with self._lock:
            queue = self._failures.get(path)
            return queue.popleft() if queue else None

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = Recorded(path=self.path, headers=headers)
                content_type = headers.get("content-type", "")
                if content_type.startswith("application/json"):
                    recorded.json = json.loads(body)
                elif content_type.startswith("multipart/form-data"):
                    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                        f"Content-Type: {content_type}\r\n\r\n".encode() + body
                    )
                    for part in message.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        payload: bytes = part.get_payload(decode=True)  # type: ignore[assignment]
                        filename = part.get_filename()
                        recorded.form[str(name)] = (
                            {"filename": filename, "bytes": payload}
                            if filename
                            else payload.decode()
                        )
                fake._record(recorded)

                if headers.get("authorization") != f"Bearer {API_KEY}":
                    self._send(401, {"error": {"message": "Incorrect API key", "type": "auth"}})
                    return
                failure = fake._next_failure(self.path)
                if failure is not None:
                    # retry-after-ms keeps the client's own retries fast in tests.
                    self._send(
                        failure,
                        {"error": {"message": f"injected {failure}", "type": "test"}},
                        {"retry-after-ms": "10"},
                    )
                    return
                if self.path == "/v1/audio/transcriptions":
                    self._send(
                        200,
                        {
                            "task": "transcribe",
                            "text": TRANSCRIPT,
                            "language": "english",
                            "duration": 7.0,
                            "segments": [
                                {"id": 0, "start": 0.0, "end": 3.5, "text": TRANSCRIPT[:40]},
                                {"id": 1, "start": 3.5, "end": 7.0, "text": TRANSCRIPT[40:]},
                            ],
                        },
                    )
                elif self.path == "/v1/chat/completions":
                    self._send(
                        200,
                        {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "created": 0,
                            "model": recorded.json["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {
                                        "role": "assistant",
                                        "content": fake.analysis_content,
                                        "refusal": None,
                                    },
                                }
                            ],
                        },
                    )
                elif self.path == "/v1/embeddings":
                    texts = recorded.json["input"]
                    self._send(
                        200,
                        {
                            "object": "list",
                            "model": recorded.json["model"],
                            "data": [
                                {"object": "embedding", "index": i, "embedding": fake_vector(t)}
                                for i, t in enumerate(texts)
                            ],
                            "usage": {"prompt_tokens": 1, "total_tokens": 1},
                        },
                    )
                else:
                    self._send(404, {"error": {"message": "no such route", "type": "test"}})

        return Handler
