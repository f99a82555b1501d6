"""The victim's internal HTTP service (ports 8081 and 8080): health pages, an upload endpoint.

Run by capture_servers inside the victim's namespace as a script (standard library only, no
checkout on its path): ``python capture_service.py PORT DIRECTORY``. GET serves the files of
DIRECTORY, like ``python -m http.server`` on port 80; PUT and POST read the whole body and
drop it, answering 201, so a client can upload a backup the way curl ``-T`` does. The port-80
server cannot take uploads (http.server answers 501 to PUT and POST before the body arrives).
"""

from __future__ import annotations

import functools
import socket
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024


class ServiceHandler(SimpleHTTPRequestHandler):
    """Files on GET; PUT and POST bodies read to the end and dropped."""

    def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
        self._drain_upload()

    def do_POST(self) -> None:  # noqa: N802
        self._drain_upload()

    def _drain_upload(self) -> None:
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
        body = b"stored\n"
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the capture is the record; a log per request would only fill the server's log


class DualStackServer(ThreadingHTTPServer):
    """One socket for IPv4 and IPv6 (every address of the victim, extra ones included)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main(argv: list[str]) -> int:
    port, directory = int(argv[0]), argv[1]
    handler = functools.partial(ServiceHandler, directory=directory)
    with DualStackServer(("::", port), handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
