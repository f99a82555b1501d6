"""``/metrics``: Prometheus text format from a per-app CollectorRegistry (no global registry).

Every figure is read at scrape time from where it already lives, so nothing on the hot path
pays for metrics beyond a counter increment:

- ingest (this replica): ``Ingestor.counts`` / ``Ingestor.rejected`` (app/ingest/ingestor.py);
- live feed (this replica): ``LiveHub`` clients and dropped items (app/live.py);
- projections: the follower's offsets against the log's segment sizes (bytes not yet applied);
- agents (all replicas, from the log): connected agents and the spool backlog their last
  heartbeat reported (app/projections/agents.py);
- analysis worker (its own process): its checkpoint's offsets against the log, as above;
- archive manager (its own process): runs recorded in ``DATA/metrics/archive-runs.json`` by
  ``record_archive_run``.

Access: with ``server.metrics_token`` set, a scrape must send ``Authorization: Bearer TOKEN``;
without it, only direct loopback clients may scrape (a Prometheus on the same host, or a
sidecar); a request that came through a proxy (X-Forwarded-For / Forwarded) needs the token.
The route is "public" in the access matrix because this guard, not a user session, decides.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from netmon.app.access import SecuredRoute
from netmon.app.projections.agents import is_connected
from netmon.app.state import ServerState, server_state
from netmon.storage.contract.files import write_atomically

log = logging.getLogger(__name__)

ARCHIVE_RUNS_FILE = Path("metrics") / "archive-runs.json"


class ArchiveRuns(msgspec.Struct):
    """What the archive manager has done since the data dir was created."""

    runs: int = 0
    failed: int = 0
    last_run: float = 0.0
    events_archived: int = 0


def record_archive_run(data_dir: Path, ok: bool, events_archived: int = 0) -> None:
    """Count one archive run in DATA/metrics/archive-runs.json (atomic replace)."""
    path = data_dir / ARCHIVE_RUNS_FILE
    runs = read_archive_runs(data_dir)
    runs.runs += 1
    runs.failed += 0 if ok else 1
    runs.last_run = time.time()
    runs.events_archived += events_archived
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, msgspec.json.encode(runs))
    except OSError as error:  # a metrics file must never stop archiving
        log.warning("metrics: cannot record the archive run in %s: %s", path, error)


def read_archive_runs(data_dir: Path) -> ArchiveRuns:
    """The recorded archive runs (zeros when none, or when the file is unreadable: logged)."""
    path = data_dir / ARCHIVE_RUNS_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=ArchiveRuns)
    except FileNotFoundError:
        return ArchiveRuns()
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        log.warning("metrics: cannot read %s: %s", path, error)
        return ArchiveRuns()


def log_lag_bytes(data_dir: Path, offsets: dict[str, int]) -> int:
    """Bytes of the live log's segments beyond ``offsets`` (archived segments are not counted)."""
    root = data_dir / "events"
    lag = 0
    for segment in root.glob("date=*/branch=*/*.jsonl"):
        try:
            size = segment.stat().st_size
        except FileNotFoundError:
            continue  # archived while we looked
        lag += max(0, size - offsets.get(segment.relative_to(root).as_posix(), 0))
    return lag


class NetmonCollector(Collector):
    """Reads the app's state at scrape time and turns it into metric families."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._live()
        yield from self._agents_and_lag()
        yield from self._archive()

    def _ingest(self) -> Iterator[Metric]:
        ingestor = self.state.ingestor
        counts = dict(ingestor.counts) if ingestor is not None else {}
        rejected = dict(ingestor.rejected) if ingestor is not None else {}
        for name, key, text in (
            ("netmon_ingest_events", "events", "Events stored from agent batches"),
            ("netmon_ingest_batches", "batches", "Agent batches stored"),
            ("netmon_ingest_bytes", "bytes", "Bytes of agent batch frames received"),
            ("netmon_ingest_dedup_drops", "duplicates", "Replayed batches dropped as duplicates"),
        ):
            yield CounterMetricFamily(name, text, value=counts.get(key, 0))
        family = CounterMetricFamily(
            "netmon_ingest_batches_rejected", "Agent frames refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(rejected.items()):
            family.add_metric([reason], count)
        yield family

    def _live(self) -> Iterator[Metric]:
        service = self.state.live
        hub = service.hub if service is not None else None
        clients = list(hub.clients) if hub is not None else []
        yield GaugeMetricFamily(
            "netmon_live_clients", "Dashboard connections to this replica's live feed",
            value=len(clients),
        )  # fmt: skip
        dropped = (hub.dropped_closed if hub is not None else 0) + sum(c.dropped for c in clients)
        yield CounterMetricFamily(
            "netmon_live_dropped_messages", "Live items dropped for slow clients (resynced)",
            value=dropped,
        )  # fmt: skip

    def _agents_and_lag(self) -> Iterator[Metric]:
        settings = self.state.settings
        service = self.state.live
        runner = service.runner if service is not None else None
        connected = GaugeMetricFamily(
            "netmon_agents_connected", "Agents heard from within live.agent_timeout_s"
        )
        backlog = GaugeMetricFamily(
            "netmon_agent_spool_batches", "Spooled batches, as the agent's last heartbeat said",
            labels=["agent"],
        )  # fmt: skip
        backlog_bytes = GaugeMetricFamily(
            "netmon_agent_spool_bytes", "Spooled bytes, as the agent's last heartbeat said",
            labels=["agent"],
        )  # fmt: skip
        agents = dict(runner.state.agents.agents) if runner is not None else {}
        now = time.time()
        timeout = settings.live.agent_timeout_s
        connected.add_metric([], sum(is_connected(a, now, timeout) for a in agents.values()))
        for agent_id, agent in sorted(agents.items()):
            backlog.add_metric([agent_id], agent.spool_batches)
            backlog_bytes.add_metric([agent_id], agent.spool_bytes)
        yield from (connected, backlog, backlog_bytes)
        data_dir = settings.data_dir
        if runner is not None:
            yield GaugeMetricFamily(
                "netmon_projection_lag_bytes", "Log bytes this replica's projections lack",
                value=log_lag_bytes(data_dir, runner.state.offsets),
            )  # fmt: skip
        projector = service.projector if service is not None else None
        if projector is not None:
            yield GaugeMetricFamily(
                "netmon_projector_lag_bytes",
                "Log bytes the top lists (the projector's last snapshot) lack",
                value=log_lag_bytes(data_dir, projector.offsets),
            )
            yield CounterMetricFamily(
                "netmon_projector_restarts", "Times this replica restarted its projector",
                value=projector.restarts,
            )  # fmt: skip
        analysis = _analysis_offsets(data_dir, settings.analysis.writer)
        if analysis is not None:
            yield GaugeMetricFamily(
                "netmon_analysis_lag_bytes", "Log bytes the analysis worker has not checkpointed",
                value=log_lag_bytes(data_dir, analysis),
            )  # fmt: skip

    def _archive(self) -> Iterator[Metric]:
        runs = read_archive_runs(self.state.settings.data_dir)
        yield CounterMetricFamily("netmon_archive_runs", "Archive manager runs", value=runs.runs)
        yield CounterMetricFamily(
            "netmon_archive_runs_failed", "Archive manager runs that failed", value=runs.failed
        )
        yield GaugeMetricFamily(
            "netmon_archive_last_run_timestamp_seconds", "When the archive manager last ran",
            value=runs.last_run,
        )  # fmt: skip


def _analysis_offsets(data_dir: Path, writer: str) -> dict[str, int] | None:
    """The analysis worker's checkpointed offsets; None before its first checkpoint."""
    # Deferred: the worker's module loads numpy and joblib, which the server never needs else.
    from netmon.app.analysis.worker import load_checkpoint

    path = data_dir / "analysis" / f"{writer}.checkpoint.json"
    if not path.exists():
        return None
    try:
        return dict(load_checkpoint(path).position.offsets)
    except (RuntimeError, OSError) as error:  # damaged: logged by load_checkpoint
        log.warning("metrics: analysis lag unknown: %s", error)
        return None


def build_registry(state: ServerState) -> CollectorRegistry:
    """The app's own registry: netmon figures plus this process's CPU/memory/fds."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(NetmonCollector(state))
    ProcessCollector(registry=registry)
    return registry


def _loopback(request: Request) -> bool:
    """A direct local scrape. A proxied request is never one: behind nginx, uvicorn takes the
    client address from X-Forwarded-For, which a remote caller can seed with 127.0.0.1."""
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _authorized(request: Request) -> bool:
    token = server_state(request).settings.server.metrics_token
    if not token:
        return _loopback(request)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


async def metrics(request: Request, *, registry: CollectorRegistry) -> Response:
    """Prometheus scrape: bearer token when server.metrics_token is set, else loopback only."""
    if not _authorized(request):
        host = request.client.host if request.client else "?"
        log.warning("metrics: refused a scrape from %s (no or wrong bearer token)", host)
        return JSONResponse(
            {"error": "metrics need the bearer token (server.metrics_token) or a loopback client"},
            status_code=403,
        )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def metrics_routes(registry: CollectorRegistry) -> list[SecuredRoute]:
    """``/metrics`` over ``registry`` (guarded by token or loopback in the handler; see the
    module docstring)."""
    scrape = functools.partial(metrics, registry=registry)
    return [SecuredRoute("/metrics", scrape, access="public", methods=["GET"])]
