"""Reports: read-only views of a spool for people and scripts.

Status and health checks (``status``, ``health``), integrity checks (``verify``),
transcripts of sessions (``transcript``), queue inspection (``queues``) and sessions as
JSON Lines (``export``).
"""
