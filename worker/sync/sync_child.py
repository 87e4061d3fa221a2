"""The sync child: the only process that talks to the remote database.

Started by ``syncer.SyncRunner`` as ``python -m agentspool.worker.sync.sync_child`` (a
fresh interpreter, never a fork: libsql is not fork-safe). It reads one JSON request
per line on stdin and answers one JSON line per request on its protocol pipe. The
parent enforces a deadline on every request by killing this process, because a
libsql call to a hung server never returns.

The remote URL and token arrive in the environment (``TURSO_DATABASE_URL``,
``TURSO_AUTH_TOKEN``), never on the command line where ``ps`` would show them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agentspool.worker.intake.replica import open_readonly, read_session_rows
from agentspool.worker.sync import migrations, remote


def main() -> int:
    # The Rust core may print to stdout; keep the protocol on its own descriptor
    # and send everything else to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    url = os.environ["TURSO_DATABASE_URL"]
    token = os.environ.pop("TURSO_AUTH_TOKEN", None) or None
    conn: Any = None
    for line in sys.stdin:
        request = json.loads(line)
        started = time.monotonic()
        try:
            op = request.get("op", "sync")
            if op != "sync":  # `agentspool migrate`: look, then maybe apply
                answer = {"id": request["id"], "ok": True, **_schema_op(op, url, token)}
                protocol.write(json.dumps(answer) + "\n")
                continue
            if conn is None:
                conn = remote.connect(url, token)
                remote.ensure_schema(conn)
            replica = open_readonly(Path(request["replica"]))
            try:
                rows = read_session_rows(replica, request["session_id"])
            finally:
                replica.close()
            result = remote.push_session(conn, rows)
            reply: dict[str, Any] = {
                "id": request["id"],
                "ok": True,
                "statements": result.statements,
                "rows": result.rows,
                "seconds": round(time.monotonic() - started, 4),
            }
        except Exception as exc:
            kind, message = remote.classify(exc)
            if isinstance(exc, FileNotFoundError | LookupError):
                kind = remote.PERMANENT
            if token:
                message = message.replace(token, "***")
            reply = {"id": request["id"], "ok": False, "kind": kind, "error": message}
            conn = None  # reconnect next time: the stream may be broken
        protocol.write(json.dumps(reply) + "\n")
    return 0


def _schema_op(op: str, url: str, token: str | None) -> dict[str, Any]:
    conn = remote.connect(url, token)
    if op == "plan":
        pending = migrations.pending_migrations(conn)
        return {
            "applied": sorted(migrations.applied_versions(conn)),
            "pending": [
                {"version": m.version, "name": m.name, "statements": m.statements} for m in pending
            ],  # fmt: skip
        }
    if op == "migrate":
        return {"applied_now": remote.ensure_schema(conn)}
    raise ValueError(f"unknown operation {op!r}")


if __name__ == "__main__":
    sys.exit(main())
