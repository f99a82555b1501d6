"""A real writer process for the store tests: ``python -m tests.storage.writer_child MODE ...``.

Modes (each prints one line per batch on stdout, flushed, only after ``append`` returned):
  load ROOT WRITER SIZE       append SIZE-event batches over 2 dates x 2 branches, forever
  count ROOT WRITER N SIZE    append N such batches, close the log, exit
  crash ROOT WRITER N SIZE    append N such batches and exit without closing (like a crash)
  ondemand ROOT WRITER        append one event stamped with time.time() per line read on stdin
  fsize ROOT WRITER LIMIT N   with files capped at LIMIT bytes, append N-event batches until one
                              fails, print "failed K", lift the cap, append batch "after", close
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from pathlib import Path

from netmon.storage.eventlog import EventLog
from netmon.storage.segments import StoreError
from tests.storage.helpers import DAY, T0, flow

BRANCHES = ("main", "lab")


def batch(writer: str, number: int, size: int) -> list:  # type: ignore[type-arg]
    """Events ``WRITER:BATCH:I`` over 2 dates and 2 branches, so one batch spans 4 segments."""
    return [
        flow(
            f"{writer}:{number}:{i}",
            ts=T0 + 60 + (i % 2) * DAY,
            branch=BRANCHES[(i // 2) % 2],
            src_ip=f"10.{number % 250}.{i % 250}.1",
        )
        for i in range(size)
    ]


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(mode: str, root: str, writer: str, *args: str) -> None:
    log = EventLog(Path(root), writer)
    if mode == "load":
        size, number = int(args[0]), 0
        while True:
            log.append(batch(writer, number, size))
            report(str(number))
            number += 1
    if mode in ("count", "crash"):
        for number in range(int(args[0])):
            log.append(batch(writer, number, int(args[1])))
            report(str(number))
        if mode == "crash":
            os._exit(0)
        log.close()
        return
    if mode == "ondemand":
        for number, _ in enumerate(sys.stdin):
            log.append([flow(f"{writer}:{number}", ts=time.time())])
            report(str(number))
        log.close()
        return
    if mode == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap then fails: EFBIG
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(args[0]), hard))
        number = 0
        while True:
            try:
                log.append(batch(writer, number, int(args[1])))
            except StoreError as error:
                report(f"failed {number} {error}")
                break
            report(str(number))
            number += 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        log.append(batch("after", 0, int(args[1])))
        log.close()
        return
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
