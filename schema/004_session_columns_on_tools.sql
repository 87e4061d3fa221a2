-- agentspool schema, version 4: each tool execution carries its session's agent, model,
-- start time and start day, kept by the database itself, so that `agentspool stats`
-- per agent, model or day, and with `--since` or `--agent`, walks an index instead of
-- joining the sessions and sorting their calls.
-- compatible_from: 2
-- (Read by agentspool.worker.migrations: the columns are nullable and the triggers
-- fill them whatever the writer, so a worker that knows version 2 or 3, which never
-- names these columns, may go on writing to a database at this version.)
--
-- Why: the per-group tool percentiles (p50, p95 of the durations of an agent's calls)
-- need each group's durations in order. Joined from the sessions, 500,000 calls took
-- SQLite 0.4 s to gather and group and 1.0 s to rank (bench/stats.py); along an index
-- on (group, duration) a rank is a walk of ~0.03 s. Each index ends with the session's
-- start, so a walk for `--since` skips the calls of older sessions without leaving
-- the index: its cost is bounded by the index, whatever share of it matches.
--
-- The copies: session_agent = sessions.agent, session_model = sessions.model,
-- session_started_at = sessions.started_at, session_day = the UTC day the session
-- started (substr(started_at, 1, 10)). They are NULL while the session's row is
-- missing (a tool row can be written before it: the sync's batch writes tool rows
-- first), and set when it arrives. Version 5 fills the rows that existed before this
-- version.
--
-- The triggers fire on the rows' changes only: a tool row's insert, a session row's
-- insert, and an update of a session's agent, model or start (the sync's upsert
-- keeps the earliest start and the first model named). A trigger body's inner
-- statement ends on the line of its END: migrations split this file at a ';' that
-- ends a line.

ALTER TABLE tool_executions ADD COLUMN session_agent TEXT;
ALTER TABLE tool_executions ADD COLUMN session_model TEXT;
ALTER TABLE tool_executions ADD COLUMN session_day TEXT;
ALTER TABLE tool_executions ADD COLUMN session_started_at TEXT;

-- (group, duration, status, session start): the walk to a rank, and each group's
-- calls, errors and known durations counted from the index alone, for every call or
-- for the sessions started since a time. session_started_at, never NULL once the
-- session row is there, tells a NULL model (sessions that named none) from calls whose
-- session row has not arrived. Version 3's two indexes are replaced by wider ones.
DROP INDEX IF EXISTS tool_executions_by_duration;
DROP INDEX IF EXISTS tool_executions_by_name_duration;
CREATE INDEX IF NOT EXISTS tool_executions_by_duration_start
    ON tool_executions (duration_ms, status, session_started_at);
CREATE INDEX IF NOT EXISTS tool_executions_by_name_duration_start
    ON tool_executions (name, duration_ms, status, session_started_at);
CREATE INDEX IF NOT EXISTS tool_executions_by_session_agent
    ON tool_executions (session_agent, duration_ms, status, session_started_at);
CREATE INDEX IF NOT EXISTS tool_executions_by_session_model
    ON tool_executions (session_model, duration_ms, status, session_started_at);
CREATE INDEX IF NOT EXISTS tool_executions_by_session_day
    ON tool_executions (session_day, duration_ms, status, session_started_at);

CREATE TRIGGER IF NOT EXISTS tool_executions_copy_session AFTER INSERT ON tool_executions
WHEN NEW.session_started_at IS NULL BEGIN
    UPDATE tool_executions
    SET (session_agent, session_model, session_day, session_started_at) =
        (SELECT agent, model, substr(started_at, 1, 10), started_at FROM sessions
         WHERE id = NEW.session_id)
    WHERE rowid = NEW.rowid AND EXISTS (SELECT 1 FROM sessions WHERE id = NEW.session_id); END;

CREATE TRIGGER IF NOT EXISTS sessions_copy_to_tools_on_insert AFTER INSERT ON sessions BEGIN
    UPDATE tool_executions
    SET (session_agent, session_model, session_day, session_started_at) =
        (NEW.agent, NEW.model, substr(NEW.started_at, 1, 10), NEW.started_at)
    WHERE session_id = NEW.id AND (session_agent IS NOT NEW.agent OR session_model IS NOT NEW.model
        OR session_started_at IS NOT NEW.started_at); END;

CREATE TRIGGER IF NOT EXISTS sessions_copy_to_tools_on_update
AFTER UPDATE OF agent, model, started_at ON sessions
WHEN OLD.agent IS NOT NEW.agent OR OLD.model IS NOT NEW.model
    OR OLD.started_at IS NOT NEW.started_at BEGIN
    UPDATE tool_executions
    SET (session_agent, session_model, session_day, session_started_at) =
        (NEW.agent, NEW.model, substr(NEW.started_at, 1, 10), NEW.started_at)
    WHERE session_id = NEW.id; END;
