"""Password guessing: many short login-shaped sessions from one source to an auth service.

Zeek counts SSH authentication failures from encrypted packet sizes; Netmon's agent does not
decode the login exchange, so a guess is a session with the shape of a failed login: to a
listed authentication port, opened by the source, carrying a little data both ways, short, and
closed rather than left open (see ``looks_like_login``). One failed session per guess is what
sshpass does; hydra packs several guesses into a session, which the weight estimates from the
client's packets. Past ``guess_attempts`` guesses within ``guess_window_s`` the rule fires
(between fail2ban's 5 in 10 minutes and Zeek's 30 in 30 minutes).
"""

from __future__ import annotations

import msgspec

from netmon.app.analysis.behaviour.findings import MAX_SAMPLE_IDS, Finding
from netmon.app.analysis.behaviour.probes import is_established_session
from netmon.app.analysis.behaviour.tracked import TrackedDetector
from netmon.app.detection_settings import Thresholds
from netmon.storage.contract.events import AlertEvidence, FlowObserved

SERVICES = {21: "FTP", 22: "SSH", 23: "Telnet", 139: "SMB", 445: "SMB", 1433: "MSSQL",
            3306: "MySQL", 3389: "RDP", 5432: "PostgreSQL", 5900: "VNC"}  # fmt: skip
MAX_LOGIN_CLIENT_BYTES = 8 * 1024  # a login sends little: keys, a name, a password or two
MAX_LOGIN_SERVER_BYTES = 16 * 1024  # banners, key exchange, prompts
MAX_STARTS = 4096  # attempt times kept per pair (far above any threshold)


class GuessTracker(msgspec.Struct, kw_only=True):
    """One (source, server, port): start times of its login-shaped sessions in the window."""

    branch: str
    source: str
    server: str
    port: int
    starts: list[float] = []
    guesses: int = 0
    first: float = 0.0
    last: float = 0.0
    fired: bool = False
    succeeded: bool = False  # a login succeeded after the rule fired
    new_ids: list[str] = []


class GuessState(msgspec.Struct):
    """Every tracked (source, server, port)."""

    pairs: dict[str, GuessTracker] = {}


def looks_like_login(flow: FlowObserved, th: Thresholds) -> bool:
    """A short session to an authentication port that carried only a login's worth of data."""
    return (
        flow.dst_port in th.guess_ports
        and is_established_session(flow)
        and flow.last_seen - flow.first_seen <= th.guess_max_session_s
        and flow.end_reason in ("fin", "rst")
        and flow.src2dst_payload_bytes <= MAX_LOGIN_CLIENT_BYTES
        and flow.dst2src_payload_bytes <= MAX_LOGIN_SERVER_BYTES
    )


class GuessDetector(TrackedDetector[GuessTracker]):
    """Counts login-shaped sessions per (source, server, port) in a sliding window."""

    rules: tuple[str, ...] = ("auth_guess",)

    def __init__(self, max_tracked: int, state: GuessState | None = None) -> None:
        self.state = state or GuessState()
        super().__init__(max_tracked, self.state.pairs)

    def observe(self, flow: FlowObserved, th: Thresholds) -> None:
        """Count the flow's refused logins (the agent's verdict, else the session's shape)."""
        if flow.protocol != 6 or flow.dst_port not in th.guess_ports:
            return
        if flow.auth_success and not flow.auth_failures:
            self._succeeded(flow)
            return
        guesses = flow.auth_failures or (1 if looks_like_login(flow, th) else 0)
        if not guesses:
            return
        self._count(flow, guesses, th)
        if flow.auth_success:  # refused, refused... then in: the session that found it
            self._succeeded(flow)

    def _count(self, flow: FlowObserved, guesses: int, th: Thresholds) -> None:
        key = f"{flow.src_ip}|{flow.dst_ip}|{flow.dst_port}"
        t = self.table.touch(
            key,
            lambda: GuessTracker(
                branch=flow.branch,
                source=flow.src_ip,
                server=flow.dst_ip,
                port=flow.dst_port,
                first=flow.first_seen,
            ),
        )
        when = flow.first_seen
        t.starts.extend([when] * min(guesses, MAX_STARTS))
        t.starts = [s for s in t.starts if s > when - th.guess_window_s][-MAX_STARTS:]
        t.guesses += guesses
        t.last = max(t.last, flow.last_seen)
        if len(t.new_ids) < MAX_SAMPLE_IDS:
            t.new_ids.append(flow.id)
        if not t.fired and len(t.starts) >= th.guess_attempts:
            t.fired = True
            t.first = t.starts[0]
            t.guesses = len(t.starts)
        if t.fired:
            self.dirty.add(key)

    def _succeeded(self, flow: FlowObserved) -> None:
        """A login that worked: nothing to count, unless this source was guessing here."""
        key = f"{flow.src_ip}|{flow.dst_ip}|{flow.dst_port}"
        t = self.table.get(key)
        if t is not None and t.fired and not t.succeeded:
            t.succeeded = True
            t.last = max(t.last, flow.last_seen)
            t.new_ids.append(flow.id)
            self.dirty.add(key)

    def finding(self, key: str, t: GuessTracker, th: Thresholds) -> Finding | None:
        """The finding about a guessing pair that had new attempts (or a success)."""
        service = SERVICES.get(t.port, f"port {t.port}")
        then = " - then a login succeeded" if t.succeeded else ""
        return Finding(
            rule="auth_guess",
            entity=t.source,
            branch=t.branch,
            ts=t.last,
            severity="critical" if t.succeeded else "high",
            title=(
                f"{t.source}: {t.guesses} failed {service} logins to {t.server}"
                f" in {max(t.last - t.first, 0):.0f} s{then}"
            ),
            evidence=AlertEvidence(
                count=t.guesses,
                first_seen=t.first,
                last_seen=t.last,
                distinct_targets=1,
                distinct_ports=1,
                targets=(t.server,),
                ports=(t.port,),
            ),
            evidence_ids=tuple(t.new_ids),
            tags=("login succeeded",) if t.succeeded else (),
            threshold=th.guess_attempts,
        )
