"""Server side of the agent transport: the ``/ws/agent`` WebSocket and the archive upload, which
share one batch pipeline. Protocol and guarantees: docs/transport.md.

A batch goes: size check -> Fernet decrypt with the agent's keys -> bounded inflate (zstd when the
decrypted bytes start with the zstd frame magic, else zlib, as agents before zstd sent) ->
msgspec validation (agent event types only) -> branch stamped from the registry -> dedup claim
-> ``EventLog.append`` (durable) -> claim marked done -> Ack. Any refusal happens before the
claim, so a bad batch never touches the store; each refusal is an ``Error`` to that agent and a
log line. A frame the agent's keys do not authenticate closes that connection (4410).

Modules, in import order (each imports only those above it):
- ``refusals``: the coded refusals (``FrameRejected`` and its kinds) an agent is sent;
- ``sessions``: ``AgentSession``, made by checking an agent's Hello against the registry;
- ``frames``: decoding one frame into a ``DecodedBatch`` (size, keys, codec, validation, branch);
- ``ingestor``: the replica's ``Ingestor``: counters, and each batch stored exactly once;
- ``endpoint``: the ``/ws/agent`` WebSocket (challenge, hello, frame loop);
- ``uploads``: ``POST /api/v1/ingest/archive``, an agent's offline archive;
- ``wiring``: the routes and the lifespan part (``ingest_routes``, ``open_ingest``).
"""
