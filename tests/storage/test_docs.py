"""docs/events.md documents every field of every event and record in storage/contract/events.py."""

from __future__ import annotations

import re

import msgspec
import pytest

from netmon.storage.contract.events import (
    EVENT_TYPES,
    AlertEvidence,
    Detection,
    Event,
    FlowFeatures,
    Talker,
)
from tests.conftest import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "events.md").read_text(encoding="utf-8")
COMMON = {field.name for field in msgspec.structs.fields(Event)}


def documented_fields(section: str) -> set[str]:
    """Field names in the first column of the table under ``### section`` (or ``## section``)."""
    match = re.search(rf"^##+ {re.escape(section)}\n(.*?)(?=^##)", DOC, re.M | re.S)
    assert match, f"docs/events.md has no section for {section}"
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", match.group(1), re.M))


@pytest.mark.parametrize(
    "kind",
    [*EVENT_TYPES, Detection, Talker, FlowFeatures, AlertEvidence],
    ids=lambda kind: kind.__name__,
)
def test_every_field_is_documented(kind: type[msgspec.Struct]) -> None:
    fields = {field.name for field in msgspec.structs.fields(kind)}
    own = fields - COMMON if issubclass(kind, Event) else fields
    assert own - documented_fields(kind.__name__) == set()


def test_common_fields_are_documented() -> None:
    assert COMMON | {"type"} <= documented_fields("Common fields")
