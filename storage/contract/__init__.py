"""The contract shared by agents and the server: events (events.py) and wire messages (wire.py).

It imports nothing of Netmon's own, so an agent-only install needs nothing else of the server;
tests/test_architecture.py holds that.
"""
