"""The analysis worker (`netmon analyze`): follow the log, classify, window, alert, notify.

Exactly-once without a transaction spanning two files: the worker appends its output events
first and saves its checkpoint (log position + window and alert state, one atomic file) second.
A crash between the two leaves outputs in the log that the checkpoint does not know about, so
on start the worker reads the log from the checkpoint to its end and collects what is already
done (classified flow ids, summarised windows, opened/recovered alert ids); replaying from the
checkpoint then recomputes the same state and emits only what is missing. Alert ids are
derived from their trigger, so a replayed alert is recognised.

The behaviour detectors (app/analysis/behaviour) see every flow after it is classified; their
findings become aggregated alerts. Their state can be large (one tracker per probing source), so
it is saved in its own file every ``behaviour_save_s`` and when the worker stops, not with every
checkpoint: after a crash, counting resumes from that save (a few seconds of flows may be
missing from a scan's counts; alerts already open stay open, and are recognised on replay by
their ids and update numbers).

Window summaries run as tasks (bounded by the provider timeout): the worker keeps reading while
a model thinks; closed windows wait in the checkpoint's ``pending`` list until summarised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from netmon.app.analysis.behaviour.engine import BehaviourEngine, BehaviourState
from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.notify import Notifier
from netmon.app.analysis.rules import RECOVERED_BY, AlertEngine, AlertsState
from netmon.app.analysis.summaries import Summarizer
from netmon.app.analysis.windows import WindowAggregator, WindowsState, WindowState, window_key
from netmon.app.detection_settings import FileDetectionSource
from netmon.app.settings import Settings
from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertEscalated,
    AlertOpened,
    AlertResolved,
    AlertSuppressed,
    AlertUpdated,
    AnyEvent,
    DetectionRaised,
    Event,
    FlowClassified,
    FlowObserved,
    WindowSummarized,
)
from netmon.storage.contract.files import write_atomically
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position

log = logging.getLogger(__name__)


class Checkpoint(msgspec.Struct, kw_only=True):
    """Everything the worker needs to resume: saved atomically after each appended batch."""

    position: Position = msgspec.field(default_factory=Position)
    windows: WindowsState = msgspec.field(default_factory=WindowsState)
    alerts: AlertsState = msgspec.field(default_factory=AlertsState)
    pending: list[WindowSummarized] = []  # closed windows whose summary is not in the log yet


class Done(msgspec.Struct):
    """Outputs already in the log after the checkpoint (found on start)."""

    flows: dict[str, tuple[str, str]] = {}  # flow_id -> (label, attack_type)
    windows: set[str] = set()
    opened: set[str] = set()
    recovered: set[str] = set()
    updated: set[tuple[str, int]] = set()  # (alert_id, seq) of AlertUpdated events
    # "rule|entity" -> alert id of the alerts opened: a replay cut into other batches may open
    # the same alert at another evidence time, hence another id; it takes the stored one.
    opened_keys: dict[str, str] = {}
    unnotified: list[AlertOpened] = []  # opened alerts whose notification may not have gone out


class WorkerStats(msgspec.Struct):
    """Counters for logs and tests."""

    events_read: int = 0
    flows_classified: int = 0
    duplicates_skipped: int = 0
    windows_summarized: int = 0
    alerts_opened: int = 0
    alerts_updated: int = 0
    findings: int = 0
    behaviour_s: float = 0.0  # wall-clock seconds in the behaviour detectors
    lag_s: float = 0.0  # now - ts of the newest event processed
    # Wall-clock seconds spent per phase: where the time goes when the worker falls behind.
    read_s: float = 0.0
    classify_s: float = 0.0
    append_s: float = 0.0
    checkpoint_s: float = 0.0


class AnalysisWorker:
    """One worker per data dir (its writer name is locked by the store)."""

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier,
        summarizer: Summarizer,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.a = settings.analysis
        self.classifier, self.summarizer, self.notifier, self.clock = (
            classifier,
            summarizer,
            notifier,
            clock,
        )
        data_dir = settings.data_dir
        self.checkpoint_path = data_dir / "analysis" / f"{self.a.writer}.checkpoint.json"
        checkpoint = load_checkpoint(self.checkpoint_path)  # before taking the writer's lock
        # follow_forward: _read always hands back the position the reader returned last (or, on
        # start-up, the checkpoint's, which costs one full pass over the manifests)
        self.reader = EventLogReader(data_dir, follow_forward=True)
        self.writer = EventLog(
            data_dir,
            self.a.writer,
            durability=settings.store.durability,
            segment_max_bytes=settings.store.segment_max_bytes,
        )
        self.stats = WorkerStats()
        self._own_segment = re.compile(re.escape(self.a.writer) + r"-\d+\.jsonl")
        self.windows = WindowAggregator(self.a.window_s, self.a.window_grace_s, self.a.top_n)
        detection = settings.detection
        self.alerts = AlertEngine(self.a, detection.update_every_s, detection.escalate_factor)
        self.behaviour_path = data_dir / "analysis" / f"{self.a.writer}.behaviour.msgpack"
        override = Path(detection.override_file or data_dir / "config" / "detection.toml")
        self.behaviour = BehaviourEngine(
            FileDetectionSource(detection, override),
            load_behaviour(self.behaviour_path, checkpoint.position),
        )
        self._behaviour_saved = time.monotonic()
        self.position = checkpoint.position
        self.windows.restore(checkpoint.windows)
        self.alerts.state = checkpoint.alerts
        self.pending: dict[str, WindowSummarized] = {
            window_key(w.branch, w.window_start): w for w in checkpoint.pending
        }
        self.done = self._already_done()
        self._summaries: dict[str, asyncio.Task[dict[str, str]]] = {}

    # --- start-up ------------------------------------------------------------------------------

    def _already_done(self) -> Done:
        """Scan the log from the checkpoint to its end for outputs the checkpoint missed."""
        done = Done()
        position = self.position
        while True:
            events, position = self.reader.read_new(position, 50_000)
            if not events:
                break
            for event in events:
                if isinstance(event, FlowClassified):
                    done.flows[event.flow_id] = (event.label, event.attack_type)
                elif isinstance(event, WindowSummarized):
                    done.windows.add(window_key(event.branch, event.window_start))
                elif isinstance(event, AlertOpened):
                    done.opened.add(event.alert_id)
                    done.opened_keys[f"{event.rule}|{event.entity}"] = event.alert_id
                    done.unnotified.append(event)
                elif isinstance(event, AlertUpdated):
                    done.updated.add((event.alert_id, event.seq))
                elif isinstance(event, AlertResolved) and event.by == RECOVERED_BY:
                    done.recovered.add(event.alert_id)
        if done.flows or done.windows or done.opened:
            log.info(
                "resuming: %d classifications, %d windows, %d alerts already in the log",
                len(done.flows),
                len(done.windows),
                len(done.opened),
            )
        return done

    # --- main loop -----------------------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event | None = None, *, once: bool = False, poll_s: float = 0.05
    ) -> None:
        """Process the log until ``stop`` is set (or, with ``once``, until caught up)."""
        stop = stop or asyncio.Event()
        if self.notifier is not None:
            self.notifier.start()
            for opened in self.done.unnotified:  # appended before a crash, maybe never sent
                self.notifier.notify(opened)
            self.done.unnotified = []
        for key, draft in self.pending.items():
            self._start_summary(key, draft)
        try:
            while not stop.is_set():
                caught_up = await self.step()
                if caught_up and once and not self._summaries:
                    break
                if caught_up:
                    waiters = [asyncio.ensure_future(stop.wait())] + list(self._summaries.values())
                    await asyncio.wait(waiters, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
                    waiters[0].cancel()
        finally:
            for task in self._summaries.values():
                task.cancel()  # their windows stay pending in the checkpoint
            if self.notifier is not None:
                with contextlib.suppress(TimeoutError):
                    await self.notifier.drain(5.0)  # give queued notifications a chance
                await self.notifier.close()
            await asyncio.to_thread(
                save_behaviour, self.behaviour_path, self.behaviour.state, self.position
            )
            self.writer.close()

    async def step(self) -> bool:
        """Read one batch, emit what follows from it; return True when caught up."""
        started = time.perf_counter()
        events, position = await asyncio.to_thread(self._read, self.position)
        self.stats.read_s += time.perf_counter() - started
        outputs: list[Event] = []
        if events:
            outputs += await self._process(events)
        caught_up = len(events) < self.a.batch_size
        for window in self.windows.due(self.clock() if caught_up else None):
            outputs += self._close(window)
        if caught_up:  # a quiet log: held-back alert updates go out on the wall clock
            outputs += self.alerts.flush(self.clock())
        outputs += self._finished_summaries()
        if outputs or position != self.position:
            await self._commit(outputs, position)
        return caught_up

    def _read(self, position: Position) -> tuple[list[AnyEvent], Position]:
        """The next batch of other writers' events (runs in a thread)."""
        # Our own segments are marked read to their end first: decoding our outputs back would
        # cost as much as the inputs, and only the start-up scan needs them.
        position = self.reader.skipped_to_end(position, self._is_own)
        return self.reader.read_new(position, self.a.batch_size)

    def _is_own(self, segment: str) -> bool:
        return self._own_segment.fullmatch(segment.rpartition("/")[2]) is not None

    async def _process(self, events: list[AnyEvent]) -> list[Event]:
        self.stats.events_read += len(events)
        outputs: list[Event] = []
        flows: list[FlowObserved] = []
        for event in events:
            if isinstance(event, FlowObserved):
                flows.append(event)
                if event.severity == "critical":  # the common case skips the rules entirely
                    outputs += self.alerts.on_flow(event)
            elif isinstance(event, DetectionRaised):
                self.windows.add_detection(event)
                outputs += self.alerts.on_detection(event)
            elif isinstance(
                event, AlertAcknowledged | AlertSuppressed | AlertResolved | AlertEscalated
            ):
                self.alerts.apply(event)
        if not flows:
            return outputs
        fresh = [f for f in flows if f.id not in self.done.flows]
        self.stats.duplicates_skipped += len(flows) - len(fresh)
        started = time.perf_counter()
        verdicts = await asyncio.to_thread(self.classifier.classify, fresh, self.clock())
        self.stats.classify_s += time.perf_counter() - started
        self.stats.flows_classified += len(verdicts)
        labels = {v.flow_id: (v.label, v.attack_type) for v in verdicts}
        for flow in flows:
            label, kind = labels.get(flow.id) or self.done.flows[flow.id]
            self.windows.add_flow(flow, label, kind)
        self.stats.lag_s = max(0.0, self.clock() - flows[-1].ts)
        return [*verdicts, *outputs, *self._behaviour(flows)]

    def _behaviour(self, flows: list[FlowObserved]) -> list[Event]:
        """Run the detectors over the batch; their findings open or update alerts."""
        started = time.perf_counter()
        findings = self.behaviour.observe(flows)
        outputs: list[Event] = []
        for finding in findings:
            outputs += self.alerts.on_finding(finding)
        outputs += self.alerts.flush(max(flow.ts for flow in flows))
        self.stats.findings += len(findings)
        self.stats.behaviour_s += time.perf_counter() - started
        return outputs

    def _close(self, window: WindowState) -> list[Event]:
        draft = self.windows.summarized(window, self.clock())
        key = window_key(draft.branch, draft.window_start)
        outputs = self.alerts.on_window(draft)  # judged at close, in window order, every time
        if key not in self.done.windows:
            self.pending[key] = draft
            self._start_summary(key, draft)
        return outputs

    def _start_summary(self, key: str, draft: WindowSummarized) -> None:
        if key in self.done.windows:
            self.pending.pop(key, None)
            return
        self._summaries[key] = asyncio.create_task(
            self.summarizer.summarize(draft), name=f"summary {key}"
        )

    def _finished_summaries(self) -> list[Event]:
        outputs: list[Event] = []
        for key, task in list(self._summaries.items()):
            if not task.done():
                continue
            del self._summaries[key]
            draft = self.pending.pop(key)
            try:
                fields = task.result()
            except Exception as error:  # a bug must not lose the window: store the template
                log.exception("summary of window %s failed", key)
                fields = Summarizer.fallback(draft, f"summary failed: {error}")
            outputs.append(msgspec.structs.replace(draft, **fields))
            self.stats.windows_summarized += 1
        return outputs

    async def _commit(self, outputs: list[Event], position: Position) -> None:
        """Append outputs (minus those already in the log), then save the checkpoint."""
        outputs = self._adopt_stored_ids(outputs)
        fresh = [e for e in outputs if not self._already_emitted(e)]
        started = time.perf_counter()
        if fresh:
            await asyncio.to_thread(self.writer.append, fresh)
        self.stats.append_s += time.perf_counter() - started
        self.position = position
        checkpoint = Checkpoint(
            position=position,
            windows=self.windows.state,
            alerts=self.alerts.state,
            pending=list(self.pending.values()),
        )
        started = time.perf_counter()
        await asyncio.to_thread(save_checkpoint, self.checkpoint_path, checkpoint)
        self.stats.checkpoint_s += time.perf_counter() - started
        if time.monotonic() - self._behaviour_saved >= self.a.behaviour_save_s:
            self._behaviour_saved = time.monotonic()
            await asyncio.to_thread(
                save_behaviour, self.behaviour_path, self.behaviour.state, position
            )
        for event in fresh:
            if isinstance(event, AlertOpened):
                self.stats.alerts_opened += 1
                if self.notifier is not None:
                    self.notifier.notify(event)
            elif isinstance(event, AlertUpdated):
                self.stats.alerts_updated += 1
                if event.severity != "none" and self.notifier is not None:
                    self._notify_escalation(event)

    def _notify_escalation(self, update: AlertUpdated) -> None:
        """An open alert's severity rose: its notification (the notifier applies the threshold)."""
        alert = self.alerts.find(update.alert_id)
        if alert is None or self.notifier is None:
            return  # closed in the meantime
        self.notifier.notify_escalation(
            alert_id=update.alert_id,
            rule=alert.rule,
            entity=alert.entity,
            title=alert.title or alert.rule,
            severity=update.severity,
            ts=update.ts,
            branch=update.branch,
            reason=update.reason,
            evidence_ids=update.evidence_ids,
        )

    def _adopt_stored_ids(self, outputs: list[Event]) -> list[Event]:
        """Replayed alerts opened under another id than the stored one take the stored id
        (their AlertOpened is then recognised as written, their updates by seq)."""
        if not self.done.opened_keys:
            return outputs
        renamed: dict[str, str] = {}
        for event in outputs:
            if isinstance(event, AlertOpened) and event.alert_id not in self.done.opened:
                stored = self.done.opened_keys.get(f"{event.rule}|{event.entity}")
                if stored is not None:
                    renamed[event.alert_id] = stored
                    self.alerts.rename(event.alert_id, stored)
        if not renamed:
            return outputs
        log.info("replay: %d alert(s) take the id already in the log", len(renamed))
        return [
            msgspec.structs.replace(e, alert_id=renamed[e.alert_id])
            if isinstance(e, AlertOpened | AlertUpdated) and e.alert_id in renamed
            else e
            for e in outputs
        ]

    def _already_emitted(self, event: Event) -> bool:
        if isinstance(event, AlertOpened):
            return event.alert_id in self.done.opened
        if isinstance(event, AlertUpdated):
            return (event.alert_id, event.seq) in self.done.updated
        if isinstance(event, AlertResolved):
            return event.alert_id in self.done.recovered
        if isinstance(event, WindowSummarized):
            return window_key(event.branch, event.window_start) in self.done.windows
        return False


def load_checkpoint(path: Path) -> Checkpoint:
    """The saved checkpoint, or a fresh one (start of the log) when there is none."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Checkpoint)
    except FileNotFoundError:
        return Checkpoint()
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        # Never silently restart from zero over a damaged file: the operator decides.
        log.error("checkpoint %s is damaged: %s", path, error)
        raise RuntimeError(
            f"checkpoint {path} is damaged ({error}); move it away to reprocess the log"
        ) from None


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically (``write_atomically``: durable once this returns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, msgspec.json.encode(checkpoint))


class BehaviourSnapshot(msgspec.Struct):
    """The detectors' state and the log position it reflects."""

    position: Position
    state: BehaviourState


_behaviour_encoder = msgspec.msgpack.Encoder()
_behaviour_decoder = msgspec.msgpack.Decoder(BehaviourSnapshot)


def load_behaviour(path: Path, checkpoint: Position) -> BehaviourState:
    """The detectors' saved state, if it is not ahead of the checkpoint (flows it has counted
    would be counted twice on replay); empty otherwise, or when there is none or it cannot be
    read: the detectors then count afresh (evidence is lost, never an alert already open)."""
    try:
        snapshot = _behaviour_decoder.decode(path.read_bytes())
    except FileNotFoundError:
        return BehaviourState()
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        log.error("behaviour state %s unreadable, counting afresh: %s", path, error)
        return BehaviourState()
    ahead = [
        segment
        for segment, offset in snapshot.position.offsets.items()
        if offset > checkpoint.offsets.get(segment, 0)
    ]
    if ahead:
        log.warning("behaviour state %s is ahead of the checkpoint, counting afresh", path)
        return BehaviourState()
    return snapshot.state


def save_behaviour(path: Path, state: BehaviourState, position: Position) -> None:
    """Write the detectors' state and its position atomically (msgpack: many trackers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, _behaviour_encoder.encode(BehaviourSnapshot(position, state)))
