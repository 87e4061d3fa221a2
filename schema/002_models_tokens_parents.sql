-- agentspool schema, version 2: which model ran, what it used, who started whom.
-- compatible_from: 1
-- (The line above is read by agentspool.worker.migrations: a worker that knows
-- schema version 1 or newer may go on writing to a database at this version, because
-- this migration only adds nullable columns and an index. See docs/DESIGN.md, "Schema
-- versions".)
--
-- Token columns, on messages and sessions, hold counts with one meaning whatever the
-- provider (agentspool.producer.usage): input_tokens counts every input token, cached
-- ones included; cache_read_tokens and cache_write_tokens break out the cached part;
-- output_tokens counts every output token. NULL means unknown, never 0. One assistant
-- message per model response carries that response's usage, counted once; a session's
-- columns are the sums over its own messages (not its children's).

ALTER TABLE sessions ADD COLUMN parent_id TEXT;
ALTER TABLE sessions ADD COLUMN model TEXT;
ALTER TABLE sessions ADD COLUMN input_tokens INTEGER;
ALTER TABLE sessions ADD COLUMN output_tokens INTEGER;
ALTER TABLE sessions ADD COLUMN cache_read_tokens INTEGER;
ALTER TABLE sessions ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE sessions ADD COLUMN cost_usd REAL;

ALTER TABLE messages ADD COLUMN model TEXT;
ALTER TABLE messages ADD COLUMN input_tokens INTEGER;
ALTER TABLE messages ADD COLUMN output_tokens INTEGER;
ALTER TABLE messages ADD COLUMN cache_read_tokens INTEGER;
ALTER TABLE messages ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE messages ADD COLUMN cost_usd REAL;

-- Which oldest schema version a worker must know to write a database at this version
-- (NULL: this version itself). Version 1's row predates the column.
ALTER TABLE schema_version ADD COLUMN compatible_from INTEGER;

CREATE INDEX IF NOT EXISTS sessions_by_parent ON sessions (parent_id);
CREATE INDEX IF NOT EXISTS sessions_by_model_started ON sessions (model, started_at);
