"""Behaviour detectors: conclusions about entities (a scanner, a guesser, a beacon) drawn from
many flows, as ``Finding``s the alert engine turns into aggregated alerts (docs/analysis.md)."""
