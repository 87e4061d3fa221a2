"""agentspool's worker: drains the spool into per-session replicas and syncs them.

Run it with ``agentspool worker run``. The worker's own process never imports
libsql: remote calls run in the sync child (see sync_child.py).
"""
