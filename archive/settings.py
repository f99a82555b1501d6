"""The archive manager's settings: the ``[archive]`` section of the server's configuration.

They live here, with the code they configure, so the archive imports nothing of the app; the
app composes them into its ``Settings`` (app/settings.py), which loads every section.
"""

from __future__ import annotations

import msgspec


class ArchiveSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The archive manager (``netmon archive run``); see docs/archive.md."""

    # A date partition is sealed into a ZIP once its UTC date is more than after_days days old
    # and each of its segments has gone unmodified for grace_s seconds.
    after_days: int = 7
    grace_s: float = 3600.0
    # Archives whose date is more than retain_days days old are deleted; 0 keeps them forever.
    retain_days: int = 365
    # Disk guard: while free space on the data dir's filesystem is under min_free_bytes or under
    # min_free_percent of the filesystem, the oldest archives are deleted (0 turns a limit off).
    min_free_bytes: int = 1024 * 1024 * 1024
    min_free_percent: float = 5.0
    interval_s: float = 3600.0  # pause between two runs of the service loop
    compress_level: int = 6  # deflate level of archive members, 0-9
