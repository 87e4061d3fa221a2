"""agentspool's worker: drains the spool into per-session replicas and syncs them.

Run it with ``agentspool worker run``. Subpackages by stage, in the order an event
flows: ``intake`` (queue files -> replicas), ``sync`` (replicas -> the database),
``daemon`` (the service loop that schedules both), ``reports`` (status, verify,
transcripts) and ``cli`` (the click commands). Settings, the worker's state store
and the spool's security check sit at the top.
"""
