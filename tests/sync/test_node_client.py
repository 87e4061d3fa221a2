"""The TypeScript app's client, Node's @libsql/client, reads what the worker synced:
every table and column of schema version 2, with the values the worker wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agentspool import Spool
from agentspool.worker import migrations
from tests.clients.npm import installed
from tests.helpers import run_cli, worker_env
from tests.sqld import Sqld

LIBSQL_CLIENT = "@libsql/client@0.18.0"

READ_ALL = """
const { createClient } = require("@libsql/client");
(async () => {
  const client = createClient({ url: process.argv[2] });
  const out = {};
  for (const table of ["sessions", "messages", "tool_executions", "schema_version"]) {
    const result = await client.execute(`SELECT * FROM ${table} ORDER BY rowid`);
    out[table] = result.rows.map((row) =>
      Object.fromEntries(result.columns.map((c) => [c, typeof row[c] === "bigint" ? Number(row[c]) : row[c]])));
  }
  client.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_node_libsql_client_reads_the_version_2_columns(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    producer = Spool(spool)
    with producer.session("planner", session_id="p", model="m-main") as parent:
        parent.message(
            "assistant",
            "hi",
            model="m1",
            usage={"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 90},
            cost_usd=0.5,
        )
        parent.tool_call("grep", {"q": "x"}, output="found")
        with producer.session("sub", session_id="c", parent_id="p") as child:
            child.message("assistant", "sub", usage={"prompt_tokens": 5, "completion_tokens": 1})
    producer.close()
    result = run_cli("worker", "run", "--burst", env=worker_env(spool, sqld.url), timeout=180)
    assert result.returncode == 0, result.stderr

    script = tmp_path / "read.js"
    script.write_text(READ_ALL)
    node = subprocess.run(
        ["node", str(script), sqld.url],
        cwd=installed(LIBSQL_CLIENT),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NODE_PATH": str(installed(LIBSQL_CLIENT) / "node_modules")},
    )
    assert node.returncode == 0, node.stderr
    read = json.loads(node.stdout)

    # What Node reads is what the database holds, column for column.
    for table in ("sessions", "messages", "tool_executions", "schema_version"):
        columns = [r[1] for r in sqld.query(f"PRAGMA table_info({table})")]
        select = f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid"  # noqa: S608 - names from PRAGMA
        held = sqld.query(select)
        assert [list(row.values()) for row in read[table]] == held, table
        assert all(list(row) == columns for row in read[table]), table
    sessions = {row["id"]: row for row in read["sessions"]}
    assert sessions["p"]["model"] == "m-main" and sessions["p"]["cost_usd"] == 0.5
    assert (sessions["p"]["input_tokens"], sessions["p"]["cache_read_tokens"]) == (97, 90)
    assert sessions["c"]["parent_id"] == "p" and sessions["c"]["input_tokens"] == 5
    assert [row["version"] for row in read["schema_version"]] == list(
        range(1, migrations.latest_version() + 1)
    )
