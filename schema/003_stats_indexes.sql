-- agentspool schema, version 3: indexes for `agentspool stats` on the remote database.
-- compatible_from: 2
-- (Read by agentspool.worker.migrations: only indexes are added, so a worker that
-- knows version 2 may go on writing to a database at this version.)
--
-- Tool duration percentiles are nearest-rank: the duration at one rank of the sorted
-- durations. Sorting 500,000 tool calls took SQLite ~0.9 s per percentile query; with
-- these indexes a rank is a walk along the index (0.05 s for p50 and p95 of all calls,
-- 0.03 s for p50 and p95 of each of 12 tools; bench/stats.py, docs/PERFORMANCE.md).
-- The second also covers the per-tool counts (calls, errors). Replicas drop them
-- (intake/replica_schema.py): a replica holds one session.

CREATE INDEX IF NOT EXISTS tool_executions_by_duration ON tool_executions (duration_ms);
CREATE INDEX IF NOT EXISTS tool_executions_by_name_duration ON tool_executions (name, duration_ms, status);
