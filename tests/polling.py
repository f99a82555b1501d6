"""Waiting for a real condition: the one ``wait_until`` (and its async twin) every test uses.

Tests wait for something that can be observed (a file, a count, a port that answers), never for a
fixed time; these poll it and fail naming what they waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, what: str = "", interval: float = 0.02
) -> T:
    """Poll ``condition`` until it returns a truthy value (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], object], within: float, what: str, interval: float = 0.01
) -> float:
    """Await ``condition`` without blocking the loop; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start
