"""Claude Code transcripts, read incrementally into normalized records.

Claude Code writes each session to ``~/.claude/projects/<project>/<session>.jsonl``, one
JSON record a line, and each subagent run to ``<session>/subagents/agent-<id>.jsonl``
(records with ``isSidechain: true`` and ``agentId``) beside ``agent-<id>.meta.json``.
The format is internal and changes between versions, so this reads it defensively:
a line that is not a JSON object is counted and skipped, unknown record types are
skipped, missing fields become None.

What comes out, in file order:

- ``UserPrompt``: a user record whose content is text (not tool results, not
  ``isMeta``); ``source`` tells a typed prompt (``sdk``/``cli``) from one Claude Code
  made itself (``system``: a subagent's task notification, …);
- ``AssistantResponse``: ONE per model response. Claude Code writes a response as one
  record per content block, all sharing ``message.id`` and each repeating the whole
  ``message.usage`` and ``message.model``: the blocks are joined here (texts in order,
  the intermediate ones included; thinking apart; tool calls with ids) and the usage is
  taken once, from the response's last record;
- ``ToolResult``: one per ``tool_result`` block (``tool_use_id``, ``content``,
  ``is_error``).

Reading resumes from a byte offset (``read_transcript(path, offset)`` returns the next
one). A partial last line is not consumed, and neither is a response that may still
be growing: a response is complete only when a later record of its conversation (a
user or system record, or another response) shows it ended, so the returned offset
stops at the start of the first response still open and the next read takes it up
whole. Pass ``final=True`` when the writer is done (the session ended, an import) to
flush the open responses too.

Standard library only (the producer's rule); the worker's collector reads with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

# Records of the conversation; everything else (queue operations, request bookkeeping,
# "last-prompt", attachments, …) is neither emitted nor ends a response.
ENDS_A_RESPONSE = frozenset({"user", "assistant", "system"})


@dataclass(frozen=True)
class UserPrompt:
    text: str
    uuid: str | None
    timestamp: str | None
    prompt_id: str | None
    source: str | None  # promptSource: "sdk" (claude -p), "system" (made by Claude Code), …
    is_sidechain: bool
    agent_id: str | None


@dataclass(frozen=True)
class ToolUse:
    id: str
    name: str
    input: Any


@dataclass
class AssistantResponse:
    message_id: str
    model: str | None
    request_id: str | None
    texts: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    tool_uses: list[ToolUse] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)  # counted once per response
    stop_reason: str | None = None
    started_at: str | None = None  # the first and last record's timestamps
    ended_at: str | None = None
    uuids: list[str] = field(default_factory=list)  # one per content-block record
    is_sidechain: bool = False
    agent_id: str | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(t for t in self.texts if t)


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    content: Any  # a string, or a list of content blocks
    is_error: bool
    uuid: str | None
    timestamp: str | None
    is_sidechain: bool
    agent_id: str | None


Record = UserPrompt | AssistantResponse | ToolResult


@dataclass
class TranscriptRead:
    records: list[Record]
    offset: int  # where the next read starts
    bad_lines: int  # lines in the consumed part that were not JSON objects


@dataclass
class SubagentTranscript:
    agent_id: str
    path: Path
    meta: dict[str, Any]  # agent-<id>.meta.json: agentType, description, toolUseId, …


MAX_READ_BYTES = 16 << 20  # read per call; a longer rest is read by the next call


class NotATranscript(OSError):
    """A ``transcript_path`` that is not a regular file (a FIFO, a device, a folder)."""


def read_transcript(
    path: str | os.PathLike[str],
    offset: int = 0,
    *,
    final: bool = False,
    max_bytes: int = MAX_READ_BYTES,
) -> TranscriptRead:
    """The complete records after ``offset``; see the module docstring. Only a regular
    file is read (opened without blocking and checked first: a FIFO or a device given
    as the path must not hang or flood the reader), at most ``max_bytes`` per call;
    ``final`` takes effect only once the read reaches the file's end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        stat = os.fstat(fd)
        if not S_ISREG(stat.st_mode):
            raise NotATranscript(f"{os.fspath(path)!r} is not a regular file: not read")
        data = os.pread(fd, max_bytes, offset)
        at_end = offset + len(data) >= stat.st_size
    finally:
        os.close(fd)
    return parse_transcript(data, offset, final=final and at_end)


def read_chunks(
    path: str | os.PathLike[str], offset: int = 0, *, final: bool = False
) -> Iterator[TranscriptRead]:
    """``read_transcript`` on from ``offset``, a chunk at a time, until a read adds
    nothing (the end, or a line still being written); each chunk's ``offset`` is where
    the next one starts. Only one chunk is in memory at a time."""
    while True:
        read = read_transcript(path, offset, final=final)
        if read.offset == offset:
            return
        yield read
        offset = read.offset


def parse_transcript(data: bytes, offset: int = 0, *, final: bool = False) -> TranscriptRead:
    """``read_transcript`` on bytes that start at ``offset`` of the file."""
    items: list[tuple[int, Record]] = []  # (start offset, record), in file order
    bad: list[int] = []  # end offsets of bad lines
    open_responses: dict[tuple[bool, str | None], tuple[int, AssistantResponse]] = {}
    end_of_lines = offset
    for line in _complete_lines(data):  # a last line without its newline is being written
        start, end_of_lines = end_of_lines, end_of_lines + len(line)
        position = end_of_lines
        entry = _entry(line)
        if entry is None:
            if line.strip():
                bad.append(position)
            continue
        kind = entry.get("type")
        if kind not in ENDS_A_RESPONSE:
            continue
        lineage = (entry.get("isSidechain") is True, _str(entry.get("agentId")))
        message = entry.get("message")
        message = message if isinstance(message, dict) else {}
        current = open_responses.get(lineage)
        if kind == "assistant" and isinstance(message.get("id"), str):
            if current is not None and current[1].message_id == message["id"]:
                _add_blocks(current[1], entry, message)
                continue
            response = _new_response(entry, message, lineage)
            _add_blocks(response, entry, message)
            open_responses[lineage] = (start, response)
            items.append((start, response))
            continue
        open_responses.pop(lineage, None)  # a later record of the conversation: it ended
        if kind == "user" and not entry.get("isMeta"):
            items.extend((start, record) for record in _user_records(entry, message, lineage))
    cut = end_of_lines
    if open_responses and not final:
        cut = min(start for start, _ in open_responses.values())
    return TranscriptRead(
        records=[record for start, record in items if start < cut],
        offset=cut,
        bad_lines=sum(1 for end in bad if end <= cut),
    )


def subagent_transcripts(main: str | os.PathLike[str]) -> list[SubagentTranscript]:
    """The subagent transcripts of the session whose transcript is ``main``, by agent id."""
    folder = Path(main).with_suffix("") / "subagents"
    found = []
    for path in sorted(folder.glob("agent-*.jsonl")):
        agent_id = path.stem[len("agent-") :]
        meta: dict[str, Any] = {}
        try:
            value = json.loads(path.with_suffix(".meta.json").read_bytes())
            meta = value if isinstance(value, dict) else {}
        except (OSError, ValueError, RecursionError):
            pass
        found.append(SubagentTranscript(agent_id, path, meta))
    return found


def _complete_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return [line + b"\n" for line in lines[:-1]]  # the piece after the last newline waits


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _new_response(
    entry: dict[str, Any], message: dict[str, Any], lineage: tuple[bool, str | None]
) -> AssistantResponse:
    return AssistantResponse(
        message_id=message["id"],
        model=_str(message.get("model")),
        request_id=_str(entry.get("requestId")),
        started_at=_str(entry.get("timestamp")),
        is_sidechain=lineage[0],
        agent_id=lineage[1],
    )


def _add_blocks(
    response: AssistantResponse, entry: dict[str, Any], message: dict[str, Any]
) -> None:
    content = message.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            response.texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            response.thinking.append(block["thinking"])
        elif kind == "tool_use" and isinstance(block.get("id"), str):
            response.tool_uses.append(
                ToolUse(block["id"], str(block.get("name") or "unknown"), block.get("input"))
            )
    usage = message.get("usage")
    if isinstance(usage, dict):  # every record repeats it: the last one stands
        response.usage = {
            k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)
        }
    response.model = _str(message.get("model")) or response.model
    response.request_id = _str(entry.get("requestId")) or response.request_id
    response.stop_reason = _str(message.get("stop_reason")) or response.stop_reason
    response.ended_at = _str(entry.get("timestamp")) or response.ended_at
    if isinstance(entry.get("uuid"), str):
        response.uuids.append(entry["uuid"])


def _user_records(
    entry: dict[str, Any], message: dict[str, Any], lineage: tuple[bool, str | None]
) -> list[Record]:
    uuid, timestamp = _str(entry.get("uuid")), _str(entry.get("timestamp"))
    content = message.get("content")
    if isinstance(content, str):
        texts = [content]
        results: list[Record] = []
    elif isinstance(content, list):
        blocks = [b for b in content if isinstance(b, dict)]
        texts = [
            b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        results = [
            ToolResult(
                tool_use_id=b["tool_use_id"],
                content=b.get("content"),
                is_error=b.get("is_error") is True,
                uuid=uuid,
                timestamp=timestamp,
                is_sidechain=lineage[0],
                agent_id=lineage[1],
            )
            for b in blocks
            if b.get("type") == "tool_result" and isinstance(b.get("tool_use_id"), str)
        ]
    else:
        return []
    if results or not any(texts):
        return results  # text beside tool results is Claude Code's, not a prompt
    prompt = UserPrompt(
        text="\n\n".join(t for t in texts if t),
        uuid=uuid,
        timestamp=timestamp,
        prompt_id=_str(entry.get("promptId")),
        source=_str(entry.get("promptSource")),
        is_sidechain=lineage[0],
        agent_id=lineage[1],
    )
    return [prompt]
