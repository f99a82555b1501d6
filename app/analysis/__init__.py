"""The analysis pipeline: classify flows, summarise 5-minute windows, raise alerts, notify.

Everything here reads the event log and appends derived events (FlowClassified,
WindowSummarized, Alert*) under its own writer name; see docs/analysis.md.
"""
