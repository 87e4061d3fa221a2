"""Claude Code -> agentspool events: the rules, in one place.

Two sources describe one Claude Code session, and each is the better one for part of it:
- the hook payloads (inbox.py): the session's start and end, the owner process, and
  every tool call with Claude Code's own ``duration_ms``, at the moment it happens;
- the transcript (transcript.py): every user prompt and every model response -- all
  its text blocks, the intermediate ones too, its thinking, its model and its usage,
  counted once per response.

So messages come from the transcript and tool executions from the hooks; a prompt
the hook reports before the transcript has it is logged from the hook and recognized
later by its ``prompt_id``. Whatever is logged is marked with a key in the session's
shared-queue transaction (``u:`` prompt, ``r:`` response, ``t:``/``f:`` a tool call's
start/finish), and nothing marked is logged again: a hook and the transcript line
that repeats it, a ``--resume`` that re-reads the file, or ``agentspool import
claude-code`` over a session the hooks captured live. Tool calls are taken from the
transcript only when the hooks did not report them (an import, a hook that did not
run), once the transcript is read for the last time.

Sessions: one Claude Code session is one agentspool session (id = Claude Code's
``session_id``, agent ``claude-code``); each subagent run is a session of its own,
``<session_id>-agent-<agent_id>``, whose ``parent_id`` is the main session.

Standard library only.
"""

from __future__ import annotations

from datetime import datetime

from . import AGENT
from .transcript import AssistantResponse, Record, ToolResult, UserPrompt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Session(Protocol):
        session_id: str
        known: bool
        state: dict[str, Any]
        at: float | None

        def add(self, kind: str, **fields: Any) -> dict[str, Any]: ...
        def seen(self, key: str) -> bool: ...
        def mark(self, key: str) -> None: ...


HOOK_ROLE = "hook"  # messages that record a hook event with no message of its own
TOOL_EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure")
# Events the settings register (--print-settings): those that carry something worth
# keeping. MessageDisplay and PostToolBatch repeat what the transcript and the tool
# hooks already give; the others (config, worktrees, files, ...) are not about the
# conversation. An event not listed that reaches the hook anyway is kept as a ``hook``
# message.
HOOK_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    *TOOL_EVENTS,
    "PermissionDenied",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "Notification",
    "PreCompact",
    "PostCompact",
    "SessionEnd",
)
# Fields every event has; kept once, in the session's metadata.
COMMON_FIELDS = frozenset(
    {"session_id", "transcript_path", "cwd", "permission_mode", "hook_event_name"}
)
# Fields each event's mapping uses or that repeat what is recorded elsewhere: a hook
# message is written only for an event's other fields, and for events kept whole.
KNOWN_FIELDS = {
    "UserPromptSubmit": {"prompt", "prompt_id"},
    "PreToolUse": {"tool_name", "tool_input", "tool_use_id", "prompt_id", "effort",
                   "agent_id", "agent_type"},
    "PostToolUse": {"tool_name", "tool_input", "tool_use_id", "tool_response", "duration_ms",
                    "prompt_id", "effort", "agent_id", "agent_type"},
    "PostToolUseFailure": {"tool_name", "tool_input", "tool_use_id", "error", "is_interrupt",
                           "duration_ms", "prompt_id", "effort", "agent_id", "agent_type"},
    "Stop": {"last_assistant_message", "stop_hook_active", "background_tasks",
             "session_crons", "effort", "prompt_id"},
    "SubagentStart": {"agent_id", "agent_type", "prompt_id"},
    "SubagentStop": {"agent_id", "agent_type", "agent_transcript_path",
                     "last_assistant_message", "stop_hook_active", "background_tasks",
                     "session_crons", "effort", "prompt_id"},
}  # fmt: skip
START_FIELDS = ("cwd", "model", "permission_mode", "source", "transcript_path")
UNFINISHED_TOOL = "the session ended before the tool finished"


def subagent_session_id(session_id: str, agent_id: str) -> str:
    return f"{session_id}-agent-{agent_id}"


# ---- hook payloads -------------------------------------------------------------------


def start(session: Session, payload: dict[str, Any], owner: dict[str, Any] | None) -> None:
    """The session's ``session_start`` (once), from its first payload."""
    if _started(session):
        return
    name = payload.get("hook_event_name")
    metadata = {key: payload[key] for key in START_FIELDS if payload.get(key) is not None}
    if name == "SessionStart":
        metadata.update(_extras(payload, ("source", "model")))
    else:  # installed mid-session, or the SessionStart hook did not run
        metadata["first_event"] = name
    fields: dict[str, Any] = {"metadata": metadata}
    if isinstance(payload.get("model"), str):
        fields["model"] = payload["model"]
    _add_start(session, fields, owner)


def start_subagent(
    session: Session, parent_id: str, agent_id: str, agent_type: Any, owner: dict[str, Any] | None
) -> None:
    if _started(session):
        return
    metadata = {"agent_id": agent_id}
    if isinstance(agent_type, str):
        metadata["agent_type"] = agent_type
    _add_start(session, {"metadata": metadata, "parent_id": parent_id}, owner)


def _started(session: Session) -> bool:
    return session.known or bool(session.state.get("started"))


def _add_start(session: Session, fields: dict[str, Any], owner: dict[str, Any] | None) -> None:
    """``session_start`` with ``fields``; the owner (the Claude Code process) is its
    ``host`` and ``pid``, and is kept in the state to tell when it is gone."""
    if owner:
        fields.update(host=owner["host"], pid=owner["pid"])
        session.state["owner"] = owner
    session.add("session_start", agent=AGENT, **fields)
    session.state["started"] = True


def hook_event(session: Session, payload: dict[str, Any]) -> None:
    """Map one payload (after ``start``) into the session it belongs to. An event this
    version does not map is kept whole as a ``hook`` message; a mapped event's fields
    that the mapping does not know (a newer Claude Code's) are kept the same way."""
    name = payload["hook_event_name"]
    known = KNOWN_FIELDS.get(name)
    if name == "UserPromptSubmit":
        _prompt_from_hook(session, payload)
    elif name in TOOL_EVENTS:
        tool_event(session, name, payload)
    elif name == "SessionStart":
        if session.state.get("hooked_start"):  # resume, clear, compact: it goes on
            _hook_message(session, payload)
        session.state["hooked_start"] = True
    elif known is None and name != "SessionEnd":
        _hook_message(session, payload)  # Notification, PreCompact, an unknown event, ...
    extras = {} if known is None else _extras(payload, known)
    if extras:
        call = payload.get("tool_use_id")
        _hook_message(session, payload, {"tool_use_id": call, **extras} if call else extras)


def _prompt_from_hook(session: Session, payload: dict[str, Any]) -> None:
    prompt_id = payload.get("prompt_id")
    key = f"u:{prompt_id}" if isinstance(prompt_id, str) else None
    if key is not None and session.seen(key):
        return
    session.add("message", role="user", content=payload.get("prompt"),
                metadata=_extras(payload, ("prompt", "prompt_id")) or None)  # fmt: skip
    if key is not None:
        session.mark(key)


def tool_event(session: Session, name: str, payload: dict[str, Any]) -> None:
    """A tool call, keyed by ``tool_use_id``, with Claude Code's own ``duration_ms``."""
    call_id = payload.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        return  # Claude Code 2.x always sends it; nothing to key the call by otherwise
    at = session.at
    if not session.seen(f"t:{call_id}"):
        session.add("tool_started", call_id=call_id, name=str(payload.get("tool_name") or "?"),
                    input=payload.get("tool_input"), started_at=at)  # fmt: skip
        session.mark(f"t:{call_id}")
        session.state.setdefault("open_tools", []).append(call_id)
    if name == "PreToolUse" or session.seen(f"f:{call_id}"):
        return
    error = None
    if name == "PostToolUseFailure":
        error = payload.get("error")
        error = error if isinstance(error, str) and error else "the tool failed"
        if payload.get("is_interrupt"):
            error = f"interrupted: {error}"
    duration = payload.get("duration_ms")
    duration = duration if isinstance(duration, int | float) and duration >= 0 else None
    session.add("tool_finished", call_id=call_id, output=payload.get("tool_response"),
                error=error, duration_ms=duration, ended_at=at)  # fmt: skip
    session.mark(f"f:{call_id}")
    _closed(session, call_id)


def end(session: Session, payload: dict[str, Any] | None, status: str = "completed") -> None:
    """The session's end: its open tool calls closed, then ``session_end`` (each end
    of a resumed session ends it again: the worker keeps the last)."""
    for call_id in session.state.pop("open_tools", []):  # their PostToolUse never came
        session.add("tool_finished", call_id=call_id, error=UNFINISHED_TOOL)
        session.mark(f"f:{call_id}")
    fields: dict[str, Any] = {"status": status}
    reason = None if payload is None else payload.get("reason")
    if isinstance(reason, str):
        fields["metadata"] = {"end_reason": reason}
    session.add("session_end", **fields)
    session.state["ended"] = True


def _closed(session: Session, call_id: str) -> None:
    open_tools = session.state.get("open_tools")
    if isinstance(open_tools, list) and call_id in open_tools:
        open_tools.remove(call_id)


def _hook_message(
    session: Session, payload: dict[str, Any], fields: dict[str, Any] | None = None
) -> None:
    """A ``hook`` message: the event's name, its fields (or ``fields``) as metadata."""
    metadata = _extras(payload, ()) if fields is None else fields
    session.add("message", role=HOOK_ROLE, content=payload["hook_event_name"],
                metadata=metadata or None)  # fmt: skip


def _extras(payload: dict[str, Any], used: tuple[str, ...] | set[str]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in COMMON_FIELDS and k not in used}


# ---- transcript records --------------------------------------------------------------


def transcript_records(session: Session, records: list[Record], *, final: bool) -> int:
    """Log the records not logged before; returns how many events that added. Tool
    calls come from here only with ``final`` (the hooks report them otherwise)."""
    added = 0
    for record in records:
        if isinstance(record, UserPrompt):
            added += _prompt(session, record)
        elif isinstance(record, AssistantResponse):
            added += _response(session, record, final=final)
        elif isinstance(record, ToolResult) and final:
            added += _tool_result(session, record)
    return added


def _prompt(session: Session, prompt: UserPrompt) -> int:
    keys = [f"u:{k}" for k in (prompt.prompt_id, prompt.uuid) if k]
    if not keys or any(session.seen(k) for k in keys):
        return 0
    metadata = {"source": prompt.source} if prompt.source not in (None, "sdk", "cli") else None
    session.add("message", role="user", content=prompt.text, metadata=metadata,
                ts=epoch(prompt.timestamp))  # fmt: skip
    for key in keys:
        session.mark(key)
    return 1


def _response(session: Session, response: AssistantResponse, *, final: bool) -> int:
    key = f"r:{response.message_id}"
    added = 0
    if not session.seen(key):
        metadata: dict[str, Any] = {"message_id": response.message_id}
        for name, value in (("model", response.model), ("usage", response.usage or None),
                            ("request_id", response.request_id),
                            ("stop_reason", response.stop_reason)):  # fmt: skip
            if value is not None:
                metadata[name] = value
        if response.thinking:  # kept apart from the reply's text
            metadata["thinking"] = response.thinking
        if response.tool_uses:
            metadata["tool_calls"] = [
                {"id": t.id, "name": t.name, "input": t.input} for t in response.tool_uses
            ]
        session.add("message", role="assistant", content=response.text or None,
                    metadata=metadata, ts=epoch(response.started_at))  # fmt: skip
        session.mark(key)
        added += 1
    if final:
        for tool in response.tool_uses:
            if not session.seen(f"t:{tool.id}"):
                session.add("tool_started", call_id=tool.id, name=tool.name, input=tool.input,
                            started_at=epoch(response.ended_at))  # fmt: skip
                session.mark(f"t:{tool.id}")
                added += 1
    return added


def _tool_result(session: Session, result: ToolResult) -> int:
    if session.seen(f"f:{result.tool_use_id}"):
        return 0
    error = None
    if result.is_error:
        error = result.content if isinstance(result.content, str) else "the tool failed"
    session.add("tool_finished", call_id=result.tool_use_id,
                output=None if result.is_error else result.content, error=error,
                ended_at=epoch(result.timestamp))  # fmt: skip
    session.mark(f"f:{result.tool_use_id}")
    _closed(session, result.tool_use_id)
    return 1


def epoch(timestamp: str | None) -> float | None:
    """A transcript's ISO-8601 time ('2026-12-06T16:45:02.123Z') in seconds since 1970."""
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
