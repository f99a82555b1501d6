"""Driving real client programs inside a host's namespace: nmap, curl, dig, ssh, telnet.

Each helper runs one bounded program (a timeout on every run) and returns what the scenario
needs for its ground truth: the exact command line and what the tool reported. ``paced`` runs
an action on a schedule with jitter drawn from a seeded generator, so a rerun makes the same
schedule.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shlex
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec

from tests.data.capture_net import Host, in_ns, run
from tests.data.captures import Expected

SSH_OPTIONS = (
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
)


class ToolFailed(Exception):
    """A client program did not do what its scenario needs."""


class Run(msgspec.Struct, frozen=True):
    """What one scenario did, for its ground truth."""

    command: str
    targets: tuple[str, ...]
    target_ports: str
    expected: Expected
    notes: str = ""


def command_line(args: list[str]) -> str:
    """args as one shell-quoted line, the way the truth records commands."""
    return shlex.join(args)


def checked(host: Host, args: list[str], timeout: float = 120.0, cwd: str | None = None) -> str:
    """Run args in host's namespace; its stdout, or ToolFailed naming the error."""
    result = run(host.ns, args, timeout=timeout, cwd=cwd)
    if result.returncode != 0:
        raise ToolFailed(f"{command_line(args)}: exit {result.returncode}: {result.stderr[-300:]}")
    return result.stdout


class NmapReport(msgspec.Struct, frozen=True):
    """What nmap reported in its XML output."""

    ports_probed: int  # per host, from <scaninfo numservices>
    hosts_up: int
    open_ports: tuple[int, ...]  # across hosts, sorted, distinct
    services: str  # the ports probed, in nmap syntax (what --top-ports chose), from <scaninfo>


def nmap(host: Host, args: list[str], timeout: float = 300.0) -> tuple[str, NmapReport]:
    """nmap with args (XML report to stdout): the command line and its report."""
    full = ["nmap", *args]
    xml = checked(host, [*full, "-oX", "-"], timeout=timeout)
    root = ElementTree.fromstring(xml)
    probed = sum(int(info.get("numservices", "0")) for info in root.iter("scaninfo"))
    up = root.find("runstats/hosts")
    open_ports = {
        int(port.get("portid", "0"))
        for port in root.iter("port")
        if (state := port.find("state")) is not None and state.get("state") == "open"
    }
    report = NmapReport(
        ports_probed=probed,
        hosts_up=int(up.get("up", "0")) if up is not None else 0,
        open_ports=tuple(sorted(open_ports)),
        services=",".join(info.get("services", "") for info in root.iter("scaninfo")),
    )
    return command_line(full), report


def paced(
    count: int,
    period: float,
    jitter: float,
    rng: random.Random,
    action: Callable[[int], object],
) -> list[float]:
    """Call action(i) count times, period +- jitter*period apart (uniform); the start times.

    The gaps are drawn between starts and kept on a running schedule, so a slow action does not
    stretch the period.
    """
    starts: list[float] = []
    due = time.time()
    for index in range(count):
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)  # pacing the traffic itself, not waiting for a condition
        starts.append(time.time())
        action(index)
        due += period * (1 + rng.uniform(-jitter, jitter))
    return starts


def ssh(host: Host, key: Path, target: str, user: str, remote: str) -> list[str]:
    """The ssh command line that logs in with key and runs remote."""
    return ["ssh", *SSH_OPTIONS, "-o", "BatchMode=yes", "-i", str(key), f"{user}@{target}", remote]


def curl(url: str, *extra: str) -> list[str]:
    """A quiet, bounded curl command line fetching url to nowhere."""
    return ["curl", "-s", "-o", "/dev/null", "--max-time", "10", *extra, url]


def dig(server: str, name: str, qtype: str = "A", *extra: str) -> list[str]:
    """One dig lookup, one try."""
    return ["dig", f"@{server}", "+tries=1", "+time=3", *extra, name, qtype]


@contextlib.contextmanager
def _telnet(host: Host, target: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The real telnet client connected to target, on a pseudo-terminal: (its fd, the process)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        in_ns(host.ns, ["telnet", target]),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        yield master, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def telnet_session(host: Host, target: str, user: str, password: str, command: str) -> str:
    """Log in with the real telnet client on a pseudo-terminal, run command, log out.

    Returns what the session printed; raises ToolFailed when a prompt does not come.
    """
    seen = bytearray()
    with _telnet(host, target) as (master, proc):
        try:
            for prompt, answer in (
                (b"login: ", user),
                (b"Password:", password),
                (b"$ ", command),
                (b"$ ", "exit"),
            ):
                _expect(master, seen, prompt, 20.0)
                os.write(master, answer.encode() + b"\r\n")
                del seen[:]
            proc.wait(20)
            return seen.decode(errors="replace")
        except (subprocess.TimeoutExpired, OSError) as error:
            raise ToolFailed(f"telnet {target}: {error}: {seen[-200:]!r}") from None


TELNET_ESCAPE = b"\x1d"  # ^]: the client's own command prompt


def telnet_guesses(host: Host, target: str, user: str, passwords: Sequence[str]) -> int:
    """One telnet connection that types user and each password in turn at login(1)'s prompts.

    After the last refusal the client closes the connection itself (^] quit), as a guesser
    moving on would. Returns the refusals the server printed; ToolFailed if a prompt does not
    come or a password is accepted.
    """
    seen = bytearray()
    refused = 0
    with _telnet(host, target) as (master, proc):
        try:
            for password in passwords:
                for prompt, answer in ((b"login: ", user), (b"Password:", password)):
                    _expect(master, seen, prompt, 20.0)
                    os.write(master, answer.encode() + b"\r\n")
                    del seen[:]
                # login(1) waits 3 s (pam_faildelay) before it answers and prompts again
                _expect(master, seen, b"login: ", 20.0)
                if b"Login incorrect" not in seen:
                    raise ToolFailed(f"telnet {target}: {password!r} was not refused: {seen!r}")
                refused += 1
            os.write(master, TELNET_ESCAPE)
            _expect(master, seen, b"telnet> ", 20.0)
            os.write(master, b"quit\r\n")
            proc.wait(20)
        except (subprocess.TimeoutExpired, OSError) as error:
            raise ToolFailed(f"telnet {target}: {error}: {seen[-200:]!r}") from None
    return refused


def _expect(fd: int, seen: bytearray, prompt: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while prompt not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ToolFailed(
                f"telnet: no {prompt!r} within {timeout} s; saw {bytes(seen[-200:])!r}"
            )
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            seen += os.read(fd, 4096)
