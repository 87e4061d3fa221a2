"""Sync: replicas out to the database, in atomic batches of many sessions.

``batch`` builds batches from the replicas' change logs; ``hrana`` speaks libSQL's
HTTP protocol; ``database`` is the one interface over sqld/Turso and the embedded
file; ``senders`` are the threads that wait on it; ``engine`` schedules batches,
checkpoints open sessions and handles failures; ``remote_delete`` deletes whole
sessions from the database (retention, ``delete --remote``). The schema itself (applied to
replicas too) is ``agentspool.worker.migrations``.
"""
