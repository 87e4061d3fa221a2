"""Reports: read-only views of a spool for people and scripts.

Status and health checks (``status``, ``health``), integrity checks (``verify``),
transcripts of sessions (``transcript``) and queue inspection (``queues``).
"""
