-- agentspool schema, version 1. Applied to every session replica and to the remote
-- database by agentspool.worker.migrations, in one transaction with its
-- schema_version row. One statement per ';' at the end of a line.
-- Timestamps are ISO-8601 UTC text with milliseconds ('2026-11-26T05:34:30.123Z').
-- JSON values (metadata, tool input/output, structured message content) are text.

CREATE TABLE IF NOT EXISTS sessions (
    id            TEXT PRIMARY KEY,
    agent         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'error', 'abandoned')),
    started_at    TEXT NOT NULL,
    ended_at      TEXT,
    error         TEXT,
    metadata      TEXT,
    host          TEXT,
    pid           INTEGER,
    producer_id   TEXT,
    event_count   INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    tool_count    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT,
    created_at TEXT NOT NULL,
    metadata   TEXT,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE IF NOT EXISTS tool_executions (
    session_id  TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    input       TEXT,
    output      TEXT,
    status      TEXT NOT NULL CHECK (status IN ('running', 'completed', 'error')),
    error       TEXT,
    started_at  TEXT,
    ended_at    TEXT,
    duration_ms REAL,
    PRIMARY KEY (session_id, call_id)
);

CREATE INDEX IF NOT EXISTS sessions_by_agent_started ON sessions (agent, started_at);
CREATE INDEX IF NOT EXISTS sessions_by_status_started ON sessions (status, started_at);
CREATE INDEX IF NOT EXISTS sessions_by_started ON sessions (started_at);
CREATE INDEX IF NOT EXISTS messages_by_created ON messages (created_at);
CREATE INDEX IF NOT EXISTS tool_executions_by_session_started ON tool_executions (session_id, started_at);
CREATE INDEX IF NOT EXISTS tool_executions_by_name_started ON tool_executions (name, started_at);
CREATE INDEX IF NOT EXISTS tool_executions_by_status ON tool_executions (status, started_at);
