"""Names that become parts of file paths (branches, writers) are validated here, once."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class InvalidNameError(ValueError):
    """A branch or writer name that could escape its folder or break partition parsing."""


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it matches ``[a-z0-9][a-z0-9_-]{0,63}``, else raise InvalidNameError."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidNameError(
            f"invalid {kind} name {name!r}: use 1-64 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name
