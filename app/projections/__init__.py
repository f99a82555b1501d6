"""Projections: read models derived from the event log, each a pure function of the events.

Every projection module exposes a mutable msgspec ``State`` and ``apply(state, event)``; the state
after a sequence of events does not depend on how the sequence was cut into batches, and (below
the documented caps) not on the interleaving of writers either, so ``netmon projections rebuild``
reproduces what the incremental run built. ``runner.ProjectionRunner`` saves every state together
with the log position it reflects, in one atomically replaced snapshot file per replica.
"""

from __future__ import annotations
