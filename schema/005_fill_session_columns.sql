-- agentspool schema, version 5: version 4's session columns filled on the tool rows
-- that existed before it.
-- compatible_from: 2
-- repeat: until it changes no row
-- (Read by agentspool.worker.migrations. The "repeat" line makes this a migration run
-- in steps: the statement runs again and again, each time on its own, until it
-- changes no row, and only then is version 5 recorded. A database at version 5 has
-- every tool row's copies filled. Each step rewrites at most 2,000 rows, so no single
-- transaction grows with the database: Turso gives one 5 s. A worker stopped halfway
-- goes on where the rows say, at its next start.)
--
-- A tool row whose session row does not exist keeps NULL copies and is skipped.

UPDATE tool_executions
SET (session_agent, session_model, session_day, session_started_at) =
    (SELECT agent, model, substr(started_at, 1, 10), started_at FROM sessions
     WHERE id = tool_executions.session_id)
WHERE rowid IN (
    SELECT t.rowid FROM tool_executions t INDEXED BY tool_executions_by_session_agent
    WHERE t.session_agent IS NULL AND t.session_id IN (SELECT id FROM sessions)
    LIMIT 2000
);
