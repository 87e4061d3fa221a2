"""Row 17: `agentspool import claude-code`, transcript entries per second into the spool.

Synthetic transcripts shaped as Claude Code 2.1.332 writes them (tests/integrations/
test_claude_code_cli.py holds the reader to the real ones): per turn a prompt, a
response of three records (a text block, a second text, a tool_use, each repeating the
response's id, model and usage), a tool result, and a closing response. The rate counts
transcript lines (entries) from the start of the import to its last fsync. A second
import of the same files (everything already there) is measured beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.common import Config, Row

GROUP = "claude_import"
TARGET_ENTRIES_PER_S = 20_000.0  # issue 20
TURNS = 10  # per session: 6 lines each


def run(cfg: Config) -> list[Row]:
    from agentspool.integrations.claude_code.importer import find_transcripts, import_transcripts

    sessions = cfg.size(400, 20)
    projects = cfg.workdir("claude-projects")
    entries = sum(_write_session(projects / "proj", f"s-{n:05d}") for n in range(sessions))
    spool = cfg.workdir("claude-import-spool")
    transcripts = find_transcripts([projects])
    started = time.perf_counter()
    first = import_transcripts(str(spool), transcripts)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    again = import_transcripts(str(spool), transcripts)
    again_s = time.perf_counter() - started
    if first.sessions != sessions or first.bad_lines or again.messages:
        raise AssertionError(f"unexpected import: {first} then {again}")
    note = (f"{sessions} sessions, {entries} entries: {first.messages} messages and"
            f" {first.tools} tool calls in {first_s:.2f} s")  # fmt: skip
    return [
        Row(GROUP, "claude_import.entries_per_s",
            "17. import claude-code: transcript entries per second into the spool",
            entries / first_s, "/s", higher_is_better=True, target=TARGET_ENTRIES_PER_S,
            note=note),
        Row(GROUP, "claude_import.again_entries_per_s",
            "17. import claude-code again (all already there): entries per second",
            entries / again_s, "/s", higher_is_better=True),
    ]  # fmt: skip


def _write_session(folder: Path, session_id: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    at = "2026-12-06T10:00:00.000Z"
    usage = {"input_tokens": 12, "cache_read_input_tokens": 9000,
             "cache_creation_input_tokens": 300, "output_tokens": 80}  # fmt: skip

    def record(kind: str, **fields: object) -> None:
        lines.append(json.dumps({"type": kind, "sessionId": session_id, "isSidechain": False,
                                 "timestamp": at, "cwd": "/work/project", **fields}))  # fmt: skip

    def response(message_id: str, blocks: list[dict[str, object]]) -> None:
        for n, block in enumerate(blocks):
            record("assistant", uuid=f"{message_id}-{n}", requestId=f"req-{message_id}",
                   message={"id": message_id, "model": "claude-x", "role": "assistant",
                            "content": [block], "usage": usage})  # fmt: skip

    for t in range(TURNS):
        record(
            "user",
            uuid=f"{session_id}-u{t}",
            promptId=f"p{t}",
            message={"role": "user", "content": f"step {t}: look at the failing test"},
        )
        call = f"toolu_{session_id}_{t}"
        response(f"msg_{session_id}_{t}a", [
            {"type": "text", "text": "Let me look at the test first. " * 8},
            {"type": "text", "text": "Running it."},
            {"type": "tool_use", "id": call, "name": "Bash", "input": {"command": "pytest -x"}},
        ])  # fmt: skip
        record(
            "user",
            uuid=f"{session_id}-r{t}",
            message={
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call, "content": "1 failed " * 40}
                ],
            },
        )
        response(f"msg_{session_id}_{t}b", [{"type": "text", "text": "Fixed."}])
    (folder / f"{session_id}.jsonl").write_text("\n".join(lines) + "\n")
    return len(lines)
