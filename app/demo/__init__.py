"""``netmon demo``: process supervisor, demo agent and generated traffic (docs/operations.md)."""
