"""Real notification receivers on 127.0.0.1 for the notify and outbox tests: a webhook server
that fails its first requests on demand, and a raw TCP receiver whose answer a test scripts
byte for byte (one that never answers, one that answers 500 with an endless body)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from netmon.storage.contract.events import Detection, DetectionRaised, new_event_id

SECRET = "test-webhook-secret-0123456789"
NOTE_ID = re.compile(rb"^x-netmon-notification-id:\s*(\S+)\r?$", re.IGNORECASE | re.MULTILINE)


class Webhook:
    """A real HTTP receiver: answers 500 to the first ``fail_first`` requests, then 204."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []  # the requests it took
        self.arrivals: list[tuple[float, str, int]] = []  # (monotonic, notification id, status)
        self.fail_first = 0
        self.url = ""

    def ids(self) -> list[str]:
        """Notification ids of every request, taken or not, in arrival order."""
        return [note_id for _, note_id, _ in self.arrivals]


@contextlib.contextmanager
def serve_webhook() -> Iterator[Webhook]:
    """A running ``Webhook`` until the block ends."""
    state = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            status = 500 if state.fail_first > 0 else 204
            state.fail_first -= 1
            note_id = self.headers.get("x-netmon-notification-id", "")
            state.arrivals.append((time.monotonic(), note_id, status))
            if status == 204:
                state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


Answer = Callable[["RawReceiver", socket.socket, int], None]


class RawReceiver:
    """A TCP receiver: reads each HTTP request whole, then lets ``answer`` write (or not)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[str] = []  # notification id of each request, in arrival order
        self.sent_bytes = 0  # what the answers managed to write
        self.answered = 0  # requests whose answer has ended
        self.done = threading.Event()  # set at teardown: a hanging answer ends then
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> RawReceiver:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join(10)
        self._server.close()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            number = len(self.requests)
            thread = threading.Thread(target=self._handle, args=(connection, number), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _handle(self, connection: socket.socket, number: int) -> None:
        with connection:
            connection.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                head += chunk
            header, _, body = head.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length:\s*(\d+)", header, re.I).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += connection.recv(65536)
            found = NOTE_ID.search(header)
            self.requests.append(found.group(1).decode() if found else "")
            self.answer(self, connection, number)
            self.answered += 1


def hang_first_then_take(receiver: RawReceiver, connection: socket.socket, number: int) -> None:
    """The first request never gets an answer (the receiver took it, its answer was lost);
    later ones get 204."""
    if number == 0:
        receiver.done.wait(60)
        return
    connection.sendall(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")


def error_with_endless_body(receiver: RawReceiver, connection: socket.socket, number: int) -> None:
    """500 announcing a 1 GiB body, then bytes for as long as the client reads."""
    connection.sendall(b"HTTP/1.1 500 Oops\r\ncontent-length: 1073741824\r\n\r\n")
    block = b"<html>" + b"x" * 65530
    with contextlib.suppress(OSError):  # the client hung up: what it read was bounded
        while receiver.sent_bytes < 1 << 30 and not receiver.done.is_set():
            connection.sendall(block)
            receiver.sent_bytes += len(block)


def critical_detection(server: str) -> DetectionRaised:
    """An agent's critical finding (RDP to ``server``): the worker opens an alert about that
    server at once (critical-port alerts are one per server)."""
    return DetectionRaised(
        id=new_event_id(),
        ts=time.time(),
        branch="b",
        agent_id="a",
        flow_id=new_event_id(),
        src_ip="203.0.113.7",
        src_port=4000,
        dst_ip=server,
        dst_port=3389,
        protocol=6,
        detection=Detection(kind="critical_port", detail="RDP (3389/tcp)", severity="critical"),
    )
