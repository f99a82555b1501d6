"""Fixtures: one real server per test module (users seeded), plus a viewer-level WebSocket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.websockets import WebSocket

from netmon.app.access import SecuredWebSocketRoute
from tests.app.auth.live import LiveServer, live_server


async def echo_socket(websocket: WebSocket) -> None:
    """Accept, say who the caller is, close: enough to see whether a handshake got through."""
    await websocket.accept()
    principal = websocket.state.principal
    await websocket.send_text(principal.username if principal else "")
    await websocket.close()


ECHO_ROUTE = SecuredWebSocketRoute("/ws/test-echo", echo_socket, access="viewer")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server shared by the tests of one module (each module gets a fresh database)."""
    with live_server(tmp_path_factory.mktemp("netmon"), extra_routes=(ECHO_ROUTE,)) as running:
        yield running
