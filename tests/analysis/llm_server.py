"""A real HTTP server on loopback speaking the Ollama, OpenAI and Anthropic chat APIs.

Its behaviour is switched per test: "good" answers with a summary built from the facts it was
sent (citing a real talker and the flow count), "lying" cites an IP the window does not hold,
"slow" holds the request until released, "error" answers 500, "invalid" sends a body that is
not JSON. Every request is recorded, so tests can count calls and check headers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LlmServer:
    def __init__(self) -> None:
        self.mode = "good"
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.received = threading.Event()  # set when a request arrives
        self.release = threading.Event()  # lets a "slow" request finish
        self.url = ""

    def answer(self, prompt: str) -> str:
        facts = json.loads(prompt)
        if self.mode == "lying":
            return json.dumps(
                {"summary": "Traffic from 203.0.113.66 dominated.", "cited_ips": ["203.0.113.66"]}
            )
        talker = facts["top_talkers"][0]["key"]
        text = f"{facts['flows']} flows on {facts['branch']}; the busiest host was {talker}."
        return json.dumps(
            {"summary": text, "cited_ips": [talker], "cited_counts": {"flows": facts["flows"]}}
        )


def _handler(server: LlmServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            server.requests.append((self.path, dict(self.headers), body))
            server.received.set()
            if server.mode == "slow":
                server.release.wait(30)
            if server.mode == "error":
                return self._send(500, b'{"error": "model crashed"}')
            if server.mode == "invalid":
                return self._send(200, b"{this is not json")
            if self.path == "/api/chat":
                prompt = body["messages"][-1]["content"]
                reply = {
                    "model": body["model"],
                    "created_at": "2026-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": server.answer(prompt)},
                    "done": True,
                }
            elif self.path == "/v1/chat/completions":
                content = server.answer(body["messages"][-1]["content"])
                reply = {
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]
                }
            elif self.path == "/v1/messages":
                content = server.answer(body["messages"][-1]["content"])
                reply = {"content": [{"type": "text", "text": content}], "role": "assistant"}
            else:
                return self._send(404, b"{}")
            return self._send(200, json.dumps(reply).encode())

        def _send(self, status: int, data: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer

    return Handler


@contextmanager
def llm_server() -> Iterator[LlmServer]:
    """Serve on 127.0.0.1 (a free port) until the block ends."""
    state = LlmServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
