-- agentspool schema, version 4: each tool execution carries its session's agent, model
-- and start day, kept by the database itself, so that `agentspool stats --by agent`,
-- `--by model` and `--by day` walk an index instead of joining and sorting.
-- compatible_from: 2
-- (Read by agentspool.worker.migrations: the columns are nullable and the triggers
-- fill them whatever the writer, so a worker that knows version 2 or 3, which never
-- names these columns, may go on writing to a database at this version.)
--
-- Why: the per-group tool percentiles (p50, p95 of the durations of an agent's calls)
-- need each group's durations in order. Joined from the sessions, 500,000 calls took
-- SQLite 0.4 s to gather and group and 1.0 s to rank (bench/stats.py); along an index
-- on (group, duration) a rank is a walk of ~0.03 s.
--
-- The copies: session_agent = sessions.agent, session_model = sessions.model,
-- session_day = the UTC day the session started (substr(started_at, 1, 10)). They are
-- NULL while the session's row is missing (a tool row can be written before it: the
-- sync's batch writes tool rows first), and set when it arrives. Version 5 fills the
-- rows that existed before this version.
--
-- The triggers fire on the rows' changes only: a tool row's insert, a session row's
-- insert, and an update of a session's agent, model or start day (the sync's upsert
-- keeps the earliest start and the first model named). A trigger body's inner
-- statement ends on the line of its END: migrations split this file at a ';' that
-- ends a line.

ALTER TABLE tool_executions ADD COLUMN session_agent TEXT;
ALTER TABLE tool_executions ADD COLUMN session_model TEXT;
ALTER TABLE tool_executions ADD COLUMN session_day TEXT;

-- (group, duration, status): the walk to a rank, and each group's calls, errors and
-- known durations counted from the index alone. The model's holds session_day too:
-- a NULL model is a group of its own (sessions that named none), and session_day,
-- never NULL once the session row is there, tells those calls from the ones whose
-- session row has not arrived.
CREATE INDEX IF NOT EXISTS tool_executions_by_session_agent
    ON tool_executions (session_agent, duration_ms, status);
CREATE INDEX IF NOT EXISTS tool_executions_by_session_model
    ON tool_executions (session_model, duration_ms, status, session_day);
CREATE INDEX IF NOT EXISTS tool_executions_by_session_day
    ON tool_executions (session_day, duration_ms, status);

CREATE TRIGGER IF NOT EXISTS tool_executions_copy_session AFTER INSERT ON tool_executions
WHEN NEW.session_agent IS NULL BEGIN
    UPDATE tool_executions SET (session_agent, session_model, session_day) =
        (SELECT agent, model, substr(started_at, 1, 10) FROM sessions WHERE id = NEW.session_id)
    WHERE rowid = NEW.rowid AND EXISTS (SELECT 1 FROM sessions WHERE id = NEW.session_id); END;

CREATE TRIGGER IF NOT EXISTS sessions_copy_to_tools_on_insert AFTER INSERT ON sessions BEGIN
    UPDATE tool_executions
    SET (session_agent, session_model, session_day) = (NEW.agent, NEW.model, substr(NEW.started_at, 1, 10))
    WHERE session_id = NEW.id AND (session_agent IS NOT NEW.agent OR session_model IS NOT NEW.model
        OR session_day IS NOT substr(NEW.started_at, 1, 10)); END;

CREATE TRIGGER IF NOT EXISTS sessions_copy_to_tools_on_update
AFTER UPDATE OF agent, model, started_at ON sessions
WHEN OLD.agent IS NOT NEW.agent OR OLD.model IS NOT NEW.model
    OR substr(OLD.started_at, 1, 10) IS NOT substr(NEW.started_at, 1, 10) BEGIN
    UPDATE tool_executions
    SET (session_agent, session_model, session_day) = (NEW.agent, NEW.model, substr(NEW.started_at, 1, 10))
    WHERE session_id = NEW.id; END;
