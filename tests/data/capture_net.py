"""The capture network: one bridge in its own namespace, every host a namespace on a veth pair.

Every namespace this makes is named ``nmcap-*``. ``Lan`` builds the bridge and the hosts on
entry and removes them on exit; it also removes what a crashed run left behind before it
starts, so the script can be run again at any time. Processes still running inside one of our
namespaces are ended by pid (``ip netns pids``) before the namespace goes: they are ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import msgspec

log = logging.getLogger(__name__)

PREFIX = "nmcap-"
LAN_NS = f"{PREFIX}lan"
BRIDGE = "br0"
PREFIX_LEN_V4, PREFIX_LEN_V6 = 16, 64  # every host on one link: 10.20.0.0/16, fd00:20::/64
# The bridge itself owns this address: the recorder's flush marker is sent to it (capture_record).
SENTINEL_IP = "10.20.255.254"


class Host(msgspec.Struct, frozen=True):
    """One machine of the capture network: a namespace with its addresses."""

    name: str  # the namespace is PREFIX + name
    ipv4: str
    ipv6: str
    extra_ipv4: tuple[str, ...] = ()  # more addresses on the same interface (scan targets)

    @property
    def ns(self) -> str:
        return PREFIX + self.name

    @property
    def addresses(self) -> list[str]:
        return [self.ipv4, self.ipv6]


def in_ns(ns: str, args: Sequence[str]) -> list[str]:
    """The command line that runs args inside namespace ns."""
    return ["ip", "netns", "exec", ns, *args]


def run(
    ns: str, args: Sequence[str], timeout: float = 60.0, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run args inside ns to completion; output captured as text, never raises on exit status."""
    return subprocess.run(
        in_ns(ns, args), capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _sysctl(ns: str, *settings: str) -> None:
    subprocess.run(in_ns(ns, ["sysctl", "-q", "-w", *settings]), check=True, capture_output=True)


def our_namespaces() -> list[str]:
    """Every namespace named nmcap-* that exists now."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = (line.split()[0] for line in listing.stdout.splitlines() if line.strip())
    return [name for name in names if name.startswith(PREFIX)]


def end_processes(ns: str) -> None:
    """SIGKILL every process left inside ns (only our servers and tools ever run there)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def remove_all() -> None:
    """Delete every nmcap-* namespace, ending what still runs inside."""
    for ns in our_namespaces():
        end_processes(ns)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _add_host(host: Host, port: str) -> None:
    """A namespace for host, wired to the bridge by a veth pair: eth0 inside, port on the bridge."""
    _ip("netns", "add", host.ns)
    # No router solicitations: nobody routes here, they would only add link noise to the capture.
    _sysctl(host.ns, "net.ipv6.conf.default.router_solicitations=0")
    _ip(
        "link",
        "add",
        port,
        "netns",
        LAN_NS,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        host.ns,
    )
    # One segment per packet: without this the veth hands 64 kB TSO super-frames to the bridge and
    # the capture would hold packets no real wire carries.
    _ip("-n", host.ns, "link", "set", "eth0", "gso_max_segs", "1")
    _ip("-n", LAN_NS, "link", "set", port, "gso_max_segs", "1", "master", BRIDGE, "up")
    _ip("-n", host.ns, "link", "set", "lo", "up")
    _ip("-n", host.ns, "addr", "add", f"{host.ipv4}/{PREFIX_LEN_V4}", "dev", "eth0")
    for extra in host.extra_ipv4:
        _ip("-n", host.ns, "addr", "add", f"{extra}/{PREFIX_LEN_V4}", "dev", "eth0")
    # nodad: usable at once, so no host waits for duplicate address detection
    _ip("-n", host.ns, "addr", "add", f"{host.ipv6}/{PREFIX_LEN_V6}", "dev", "eth0", "nodad")
    _ip("-n", host.ns, "link", "set", "eth0", "up")


class Lan:
    """The bridge namespace and one namespace per host, removed again on exit."""

    def __init__(self, hosts: Sequence[Host]):
        self.hosts = list(hosts)

    def __enter__(self) -> Lan:
        remove_all()
        try:
            _ip("netns", "add", LAN_NS)
            _ip("-n", LAN_NS, "link", "set", "lo", "up")
            _ip("-n", LAN_NS, "link", "add", BRIDGE, "type", "bridge")
            # Forward at once: the default 15 s of listening/learning would drop the first frames.
            _ip("-n", LAN_NS, "link", "set", BRIDGE, "type", "bridge", "forward_delay", "0")
            _ip("-n", LAN_NS, "addr", "add", f"{SENTINEL_IP}/{PREFIX_LEN_V4}", "dev", BRIDGE)
            _ip("-n", LAN_NS, "link", "set", BRIDGE, "up")
            for index, host in enumerate(self.hosts):
                _add_host(host, f"p{index}")
        except BaseException:
            remove_all()
            raise
        log.info("network up: %d hosts on %s in %s", len(self.hosts), BRIDGE, LAN_NS)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        remove_all()


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after grace seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
