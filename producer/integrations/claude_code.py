"""Claude Code hooks -> agentspool: the logic of ``agentspool hook claude-code``.

Claude Code runs the command once per hook event, as a new process, with one JSON
document on stdin, and reads the process's stdout as an answer. So this prints
nothing on stdout, ever, and exits 0 whatever happens (bad input, an unusable
spool: one line on stderr then). It is on the user's critical path, so it imports
only the standard library and two small producer modules (no click, no worker).

Mapping (one Claude Code session = one agentspool session, ``id`` = ``session_id``,
agent ``claude-code``):

- the session's first event (normally ``SessionStart``) -> ``session_start`` with
  metadata ``cwd``, ``model``, ``permission_mode``, ``source``, ``transcript_path``;
- ``UserPromptSubmit`` -> a ``user`` message (``prompt``);
- ``Stop`` -> an ``assistant`` message: ``last_assistant_message`` when the event has
  it, else the last assistant text at the end of ``transcript_path`` (never both;
  a transcript entry already logged is not logged again);
- ``PreToolUse`` / ``PostToolUse`` / ``PostToolUseFailure`` -> a tool execution keyed
  by ``tool_use_id``: started, then ``completed`` with ``tool_response`` as output, or
  ``error`` with the error text;
- ``SessionEnd`` -> a ``hook`` message with its ``reason``, tool calls still open
  marked ``error``, then ``session_end`` ``completed`` (only the first one: a session resumed after it ended goes on in the
  same session, whose status stays ``completed``);
- anything else (``SessionStart`` again on resume/clear/compact, ``Notification``,
  ``PreCompact``, ``SubagentStop``, events this version does not know) -> a ``hook``
  message, content = the event name, metadata = its fields. Fields a mapping does not
  use are kept in the message's metadata; nothing is an error.

All processes of all sessions append to one shared queue file per spool
(``sharedqueue.py``), which keeps each session's sequence and this module's small
per-session state (open tool calls, the last logged reply) in the same transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time

from agentspool.producer import events, layout
from agentspool.producer.sharedqueue import SessionAppend, SharedQueue

from .claude_code_transcript import transcript_reply

TYPE_CHECKING = False  # typing costs milliseconds to import; mypy reads this block
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO, Any

AGENT = "claude-code"
HOOK_ROLE = "hook"  # messages that record a hook event with no message of its own
TOOL_EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure")
# Every event the settings block registers (--print-settings); others still work.
HOOK_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    *TOOL_EVENTS,
    "Stop",
    "SubagentStop",
    "PreCompact",
    "Notification",
    "SessionEnd",
)
# Fields every event has; kept once (session metadata), not in every message.
COMMON_FIELDS = frozenset(
    {"session_id", "transcript_path", "cwd", "permission_mode", "hook_event_name"}
)
# Context that may change during a session: repeated in a message's metadata when it did.
CONTEXT_FIELDS = ("cwd", "permission_mode")
# How long a hook waits for the shared queue's write lock (held for milliseconds by
# each writer) before it defers its event: long enough for a burst of parallel hooks
# on a slow disk, well inside Claude Code's 60 s hook timeout.
LOCK_WAIT_S = 20.0
MAX_SESSION_ID = 200
UNFINISHED_TOOL = "the session ended before the tool finished"


class BadEvent(ValueError):
    """Hook input that is not one Claude Code event; the message says why."""


def run_hook(stdin: IO[bytes] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Record the hook event on stdin. Returns 0 whatever happens (Claude Code would
    read another exit status as a verdict on its own action); a failure is one line
    on stderr. Nothing is ever written to stdout."""
    spool_dir = None
    try:
        stream = stdin if stdin is not None else sys.stdin.buffer
        if stdin is None and os.isatty(0):
            raise BadEvent("expects one Claude Code hook event (JSON) on stdin")
        payload = parse_event(stream.read())
        spool_dir = layout.spool_path(environ)
        record(payload, spool_dir, lock_wait(environ))
    except BadEvent as exc:
        _say(f"ignored bad input: {_one_line(exc)}")
    except Exception as exc:  # never a traceback, never a non-zero exit
        where = f" in the spool {spool_dir}" if spool_dir else ""
        _say(f"cannot record the event{where}: {_one_line(exc)}")
    return 0


def parse_event(data: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadEvent(f"stdin is not a JSON object: {_one_line(exc)}") from None
    if not isinstance(payload, dict):
        raise BadEvent(f"stdin is a JSON {type(payload).__name__}, not an object")
    session_id = payload.get("session_id")
    if not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_SESSION_ID:
        raise BadEvent("the event has no session_id (a string of 1 to 200 characters)")
    if events.session_id_problem(session_id) is not None:
        raise BadEvent("the event's session_id is not valid UTF-8 text")
    if not isinstance(payload.get("hook_event_name"), str):
        raise BadEvent("the event has no hook_event_name")
    return payload


def lock_wait(environ: Mapping[str, str] | None = None) -> float:
    """How long a hook waits for the shared queue's write lock before it defers its
    event (``AGENTSPOOL_HOOK_LOCK_WAIT`` seconds; default ``LOCK_WAIT_S``)."""
    env = os.environ if environ is None else environ
    try:
        value = float(env.get("AGENTSPOOL_HOOK_LOCK_WAIT") or LOCK_WAIT_S)
    except ValueError:
        return LOCK_WAIT_S
    return value if value > 0 else LOCK_WAIT_S


def record(payload: dict[str, Any], spool_dir: str, lock_wait_s: float = LOCK_WAIT_S) -> None:
    """Append the events for one hook call, durably, in the session's order.

    Everything the mapping reads besides the queue (the transcript) is read first:
    the write lock is held only for the queue's own reads and writes. A hook that
    cannot get the lock in ``lock_wait_s`` (a process holds it and hangs) leaves its
    event in a deferred file, which the session's next hook or the worker replays."""
    reply = prefetch_reply(payload)
    held = {"payload": payload, "reply": reply, "at": time.time()}
    session_id = payload["session_id"]
    queue = SharedQueue(spool_dir, AGENT)
    try:
        if queue.deferred(session_id):  # earlier events of this session come first
            queue.replay_deferred(apply_held, session_id, lock_wait_s)
        with queue.session(session_id, lock_wait_s) as session:
            map_event(payload, session, reply)
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        path = queue.defer(session_id, held)
        _say(
            f"the shared queue stayed locked for {lock_wait_s:g}s; the event is kept"
            f" in {path} and the worker adds it"
        )


def apply_held(session: SessionAppend, held: dict[str, Any]) -> None:
    """Map a deferred hook call (``record``'s ``held``), with the time it was made."""
    at = held.get("at")
    session.at = float(at) if isinstance(at, int | float) else None
    reply = held.get("reply")
    map_event(held["payload"], session, tuple(reply) if isinstance(reply, list) else None)


def replay_deferred(spool_dir: str, lock_wait_s: float = 0.5) -> int:
    """The worker's part: add the hook calls that were deferred (any session)."""
    queue = SharedQueue(spool_dir, AGENT)
    if not queue.deferred():
        return 0
    return queue.replay_deferred(apply_held, None, lock_wait_s)


def prefetch_reply(payload: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """For a ``Stop`` without ``last_assistant_message``: the transcript's last reply
    (``transcript_reply``), read before any lock is taken. None for other events."""
    if payload.get("hook_event_name") != "Stop":
        return None
    if isinstance(payload.get("last_assistant_message"), str):
        return None
    return transcript_reply(payload.get("transcript_path"), _say)


def map_event(
    payload: dict[str, Any],
    session: SessionAppend,
    reply: tuple[str | None, str | None] | None = None,
) -> None:
    """Add the events of one hook call; ``reply`` is ``prefetch_reply``'s answer
    (read here when not given: a caller without a lock to care about)."""
    name = payload["hook_event_name"]
    state = session.state
    if not session.known:
        _start_session(payload, session)
    elif name == "SessionStart":
        _hook_message(payload, session)  # resume, clear, compact: the same session goes on
    if name == "UserPromptSubmit":
        session.add(
            "message",
            role="user",
            content=payload.get("prompt"),
            metadata=_metadata(payload, state, ("prompt",)),
        )
    elif name == "Stop":
        _reply(payload, session, prefetch_reply(payload) if reply is None else reply)
    elif name in TOOL_EVENTS:
        _tool_event(name, payload, session)
    elif name == "SessionEnd":
        _hook_message(payload, session)  # keeps the reason
        for call_id in state.pop("tools", {}):  # their PostToolUse will never come
            session.add("tool_finished", call_id=call_id, error=UNFINISHED_TOOL)
        if not state.get("ended"):
            reason = payload.get("reason")
            end = {"metadata": {"end_reason": reason}} if isinstance(reason, str) else {}
            session.add("session_end", status="completed", **end)
            state["ended"] = True
    elif name != "SessionStart":
        _hook_message(payload, session)


def _start_session(payload: dict[str, Any], session: SessionAppend) -> None:
    name = payload["hook_event_name"]
    metadata = {
        key: payload[key]
        for key in ("cwd", "model", "permission_mode", "source", "transcript_path")
        if payload.get(key) is not None
    }
    if name == "SessionStart":
        metadata.update(_extras(payload, ("model", "source")))
    else:  # the hook was installed mid-session, or the SessionStart call failed
        metadata["first_event"] = name
    session.add(
        "session_start",
        agent=AGENT,
        metadata=metadata,
        host=os.uname().nodename,
    )
    for key in CONTEXT_FIELDS:
        if key in payload:
            session.state[key] = payload[key]


def _reply(
    payload: dict[str, Any],
    session: SessionAppend,
    reply: tuple[str | None, str | None] | None,
) -> None:
    state = session.state
    used: tuple[str, ...] = ("stop_hook_active",)
    if isinstance(payload.get("last_assistant_message"), str):
        text: str | None = payload["last_assistant_message"]
        used += ("last_assistant_message",)
    else:
        text, entry_id = reply if reply is not None else (None, None)
        if entry_id is not None and entry_id == state.get("reply_entry"):
            text = None  # that reply is logged already (the transcript lagged)
        elif entry_id is not None:
            state["reply_entry"] = entry_id
    if not text:
        return
    metadata = _metadata(payload, state, used)
    if payload.get("stop_hook_active"):
        metadata = {**(metadata or {}), "stop_hook_active": True}
    session.add("message", role="assistant", content=text, metadata=metadata)


def _tool_event(name: str, payload: dict[str, Any], session: SessionAppend) -> None:
    state = session.state
    tools: dict[str, float] = state.setdefault("tools", {})
    call_id = payload.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        call_id = _fallback_call_id(payload)
    now = session.at or time.time()
    used = ("tool_name", "tool_input", "tool_use_id", "tool_response", "error", "is_interrupt")
    if name == "PreToolUse" or call_id not in tools:
        # A finish without a start (the start's hook did not run) still gets a name.
        session.add(
            "tool_started",
            call_id=call_id,
            name=str(payload.get("tool_name") or "unknown"),
            input=payload.get("tool_input"),
            ts=now,
        )
        tools[call_id] = now
    if name != "PreToolUse":
        started = tools.pop(call_id, now)
        error = None
        output = payload.get("tool_response")
        if name == "PostToolUseFailure":
            error = payload.get("error")
            error = error if isinstance(error, str) and error else "the tool failed"
            if payload.get("is_interrupt"):
                error = f"interrupted: {error}"
        session.add(
            "tool_finished",
            call_id=call_id,
            output=output,
            error=error,
            duration_ms=max(0.0, (now - float(started)) * 1000.0),
            ts=now,
        )
    extras = _extras(payload, used)
    if extras:  # tool executions have no metadata of their own: keep unknown fields
        _hook_message(payload, session, {"tool_use_id": call_id, **extras})


def _hook_message(
    payload: dict[str, Any], session: SessionAppend, fields: dict[str, Any] | None = None
) -> None:
    """A ``hook`` message: the event's name, its fields (or ``fields``) as metadata."""
    metadata = _extras(payload, ()) if fields is None else fields
    metadata.update(_changed_context(payload, session.state))
    session.add(
        "message",
        role=HOOK_ROLE,
        content=payload["hook_event_name"],
        metadata=metadata or None,
    )


def _metadata(
    payload: dict[str, Any], state: dict[str, Any], used: tuple[str, ...]
) -> dict[str, Any] | None:
    """A message's metadata: the event's fields no mapping used, and the context
    fields (cwd, permission mode) when they changed since the last message."""
    metadata = _extras(payload, used)
    metadata.update(_changed_context(payload, state))
    return metadata or None


def _extras(payload: dict[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in COMMON_FIELDS and k not in used}


def _changed_context(payload: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    changed = {}
    for key in CONTEXT_FIELDS:
        if key in payload and payload[key] != state.get(key):
            changed[key] = state[key] = payload[key]
    return changed


def _fallback_call_id(payload: dict[str, Any]) -> str:
    """Events without ``tool_use_id`` (older Claude Code): the same tool with the same
    input in the same session pairs its Pre and Post calls."""
    import hashlib

    key = json.dumps([payload.get("tool_name"), payload.get("tool_input")], sort_keys=True)
    return "h-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


# ---- settings ---------------------------------------------------------------------


def settings_block(command: str) -> dict[str, Any]:
    """The ``hooks`` block for ``.claude/settings.json`` that sends every event to
    ``command``. Tool events take a matcher (``*``: every tool); the others do not."""
    hooks: dict[str, Any] = {}
    for event in HOOK_EVENTS:
        entry: dict[str, Any] = {"hooks": [{"type": "command", "command": command}]}
        if event in TOOL_EVENTS:
            entry = {"matcher": "*", **entry}
        hooks[event] = [entry]
    return {"hooks": hooks}


def merge_settings(existing: dict[str, Any], command: str) -> tuple[dict[str, Any], list[str]]:
    """``existing`` settings with this hook added to every event, keeping every other
    key and hook; an event that already runs ``agentspool hook claude-code`` (by any
    path) is left as it is. Returns the new settings and the events added."""
    merged = dict(existing)
    hooks = merged.get("hooks")
    if hooks is None:
        hooks = {}
    if not isinstance(hooks, dict):
        raise ValueError('its "hooks" is not an object')
    hooks = dict(hooks)
    added = []
    for event, entries in settings_block(command)["hooks"].items():
        current = hooks.get(event, [])
        if not isinstance(current, list):
            raise ValueError(f'its "hooks.{event}" is not a list')
        if any(_runs_this_hook(entry) for entry in current):
            continue
        hooks[event] = [*current, *entries]
        added.append(event)
    merged["hooks"] = hooks
    return merged, added


def _runs_this_hook(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("hooks"), list):
        return False
    return any(
        isinstance(h, dict)
        and isinstance(h.get("command"), str)
        and h["command"].rstrip().endswith("hook claude-code")
        for h in entry["hooks"]
    )


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"agentspool hook claude-code: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
