"""Intake: queue files in, per-session replicas out.

Drains each producer's queue file (``drain``), validates events and applies them
idempotently to the session's replica (``replica``), sets aside what cannot be
applied (``deadletters``, ``quarantine``), tells live producers from gone ones
(``producers``), turns outside JSON into events (``ingest``) and drops the events of
sessions deleted on request (``tombstones``).
"""
