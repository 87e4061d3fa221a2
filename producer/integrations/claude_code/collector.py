"""The worker's half of the Claude Code integration: inbox and transcripts -> events.

The hooks only drop payloads in the inbox (inbox.py). On every pass, before it
drains the queues, the worker calls ``collect``: each inbox file, oldest first, is
mapped (mapping.py) into the shared queue of Claude Code sessions
(producer/sharedqueue.py), the session's transcript is read on from where it was
left, and the file is deleted once its events are committed. A file's payloads are
marked (``i:`` keys) in the same transaction as their events, so a crash between the
commit and the delete does not log them twice.

A ``SessionEnd`` is taken ``END_GRACE_S`` after it was written (Claude Code may write
the last transcript lines after the hook ran): until then the session's later files
wait. ``final=True`` (a burst, a drain: Claude Code has exited) takes it at once.

``gone_sessions`` tells the worker which open sessions' Claude Code process is gone
(the pid and start time of the hook's parent, recorded at the session's start): it
reads their transcripts a last time, and the worker seals them ``abandoned``.

``import_transcripts`` runs the same mapping over transcripts on disk
(``agentspool import claude-code``): what the hooks logged is not logged again.

Standard library only (the producer's rule); the worker imports it.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from agentspool.producer.queuefile import process_start_time
from agentspool.producer.sharedqueue import SessionAppend, SharedQueue

from . import inbox, mapping
from .transcript import read_chunks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

END_GRACE_S = 2.0


@dataclass
class Collected:
    files: int = 0  # inbox files taken
    payloads: int = 0
    waiting: int = 0  # files left for a later pass (being written, or an end's grace)
    unreadable: list[tuple[str, bytes, str]] = field(default_factory=list)  # name, data, why
    warnings: list[str] = field(default_factory=list)


def collect(
    spool_dir: str, *, final: bool = False, now: Callable[[], float] = time.time
) -> Collected:
    """Take every inbox file that is ready (see the module docstring)."""
    result = Collected()
    queue = SharedQueue(spool_dir, mapping.AGENT)
    host = socket.gethostname()
    held_owners: set[int | None] = set()  # a session's later files wait behind its end
    for file in inbox.pending_files(spool_dir):
        if file.owner_pid in held_owners or inbox.writer_running(file):
            result.waiting += 1
            continue
        try:
            payloads = inbox.read_payloads(file)
        except FileNotFoundError:
            continue
        except (OSError, inbox.Unreadable) as exc:
            result.unreadable.append((file.name, _raw(file.path), str(exc)))
            _remove(file.path)
            continue
        owner = _owner(file, host)
        done = True
        for index, payload in enumerate(payloads):
            problem = _payload_problem(payload)
            if problem is not None:
                result.unreadable.append((f"{file.name}#{index}", _raw(file.path), problem))
                continue
            is_end = payload["hook_event_name"] == "SessionEnd"
            if is_end and not final and now() - file.at < END_GRACE_S:
                done = False
                held_owners.add(file.owner_pid)
                break
            _take(queue, payload, f"i:{file.key}#{index}", file.at, owner, result)
            result.payloads += 1
        if done:
            _remove(file.path)
            result.files += 1
        else:
            result.waiting += 1
    return result


def _take(
    queue: SharedQueue,
    payload: dict[str, Any],
    key: str,
    at: float,
    owner: dict[str, Any] | None,
    result: Collected,
) -> None:
    """One payload, in its session's transaction. A subagent's event goes to the
    subagent's session; each session's transaction is its own (one queue file, one
    writer at a time), and each marks ``key``, so a payload taken twice adds nothing."""
    name = payload["hook_event_name"]
    session_id = payload["session_id"]
    agent_id = payload.get("agent_id")
    if isinstance(agent_id, str) and agent_id and name != "SessionEnd":
        _subagent_event(queue, payload, agent_id, key, at, owner, result)
        return
    if name == "SessionEnd":  # its subagents end first, each in its own transaction
        for sub_id, path in _open_subagents(queue, session_id):
            _end_subagent(queue, session_id, sub_id, path, key, at, owner, result)
    with queue.session(session_id) as main:
        if main.seen(key):
            return
        main.mark(key)
        main.at = at
        if name == "SessionStart" and main.known and owner:  # a resume: a new owner
            main.state["owner"] = owner
            main.state.pop("sealed", None)
            main.state.pop("ended", None)
        mapping.start(main, payload, owner)
        _remember_transcript(main, payload.get("transcript_path"))
        mapping.hook_event(main, payload)
        _read(main, result, final=name == "SessionEnd")
        if name == "SessionEnd":
            mapping.end(main, payload)


def _subagent_event(
    queue: SharedQueue,
    payload: dict[str, Any],
    agent_id: str,
    key: str,
    at: float,
    owner: dict[str, Any] | None,
    result: Collected,
) -> None:
    name = payload["hook_event_name"]
    parent_id = payload["session_id"]
    with queue.session(parent_id) as main:  # the parent knows its subagents
        main.at = at
        mapping.start(main, payload, owner)
        _remember_transcript(main, payload.get("transcript_path"))
        sub = main.state.setdefault("subagents", {}).setdefault(agent_id, {})
        given = payload.get("agent_transcript_path")
        if isinstance(given, str) and given:
            sub["path"] = given
        elif not sub.get("path"):
            sub["path"] = _subagent_path(main.state, agent_id)
        if name == "SubagentStop":
            sub["ended"] = True
        path = sub["path"]
    with queue.session(mapping.subagent_session_id(parent_id, agent_id)) as child:
        if child.seen(key):
            return
        child.mark(key)
        child.at = at
        mapping.start_subagent(child, parent_id, agent_id, payload.get("agent_type"), owner)
        if name not in ("SubagentStart", "SubagentStop"):
            mapping.hook_event(child, payload)
        _read_subagent(child, path, result, final=name == "SubagentStop")
        if name == "SubagentStop" and not child.state.get("ended"):
            mapping.end(child, None)


def _end_subagent(
    queue: SharedQueue,
    parent_id: str,
    agent_id: str,
    path: str | None,
    key: str,
    at: float,
    owner: dict[str, Any] | None,
    result: Collected,
) -> None:
    """A subagent still open when its session ends: its last lines, then its end."""
    with queue.session(mapping.subagent_session_id(parent_id, agent_id)) as child:
        if child.seen(key) or child.state.get("ended"):
            return
        child.mark(key)
        child.at = at
        mapping.start_subagent(child, parent_id, agent_id, None, owner)
        _read_subagent(child, path, result, final=True)
        mapping.end(child, None)


def _open_subagents(queue: SharedQueue, session_id: str) -> list[tuple[str, str | None]]:
    state = _state_of(queue, session_id)
    subagents = state.get("subagents") if state else None
    if not isinstance(subagents, dict):
        return []
    return [
        (agent_id, sub.get("path"))
        for agent_id, sub in subagents.items()
        if isinstance(sub, dict) and not sub.get("ended")
    ]


def _read(session: SessionAppend, result: Collected, *, final: bool) -> None:
    """Read the session's transcript on from where it was left (its own records: a
    subagent's, in the same file in older versions, are the subagent's session's)."""
    known = session.state.get("transcript")
    if not isinstance(known, dict) or not isinstance(known.get("path"), str):
        return
    offset = int(known.get("offset") or 0)
    known["offset"] = _read_on(session, known["path"], offset, result, final, main_only=True)


def _read_subagent(
    session: SessionAppend, path: str | None, result: Collected, *, final: bool
) -> None:
    if not path:
        return
    session.state["path"] = path
    offset = int(session.state.get("transcript_offset") or 0)
    session.state["transcript_offset"] = _read_on(
        session, path, offset, result, final, main_only=False
    )


def _read_on(
    session: SessionAppend,
    path: str,
    offset: int,
    result: Collected,
    final: bool,
    *,
    main_only: bool,
) -> int:
    """Map the transcript's records after ``offset`` into ``session``; returns the
    offset reached. A file not there yet is read later; one that cannot be read (not
    a regular file, say) is reported once per session."""
    try:
        for read in read_chunks(path, offset, final=final):
            records = read.records
            if main_only:
                records = [r for r in records if not getattr(r, "is_sidechain", False)]
            mapping.transcript_records(session, records, final=final)
            offset = read.offset
    except FileNotFoundError:
        pass  # not written yet (or removed): a later read, or an import
    except OSError as exc:  # NotATranscript too
        _warn_once(session, result, f"transcript of session {session.session_id}: {exc}")
    return offset


def _remember_transcript(session: SessionAppend, path: Any) -> None:
    if isinstance(path, str) and path:
        known = session.state.setdefault("transcript", {})
        if known.get("path") != path:
            known.update(path=path, offset=0)


def _subagent_path(state: dict[str, Any], agent_id: str) -> str | None:
    main = state.get("transcript", {}).get("path")
    if not isinstance(main, str) or not main.endswith(".jsonl"):
        return None
    return os.path.join(main[: -len(".jsonl")], "subagents", f"agent-{agent_id}.jsonl")


def _warn_once(session: SessionAppend, result: Collected, message: str) -> None:
    if not session.state.get("warned"):
        session.state["warned"] = True
        result.warnings.append(message)


def _owner(file: inbox.InboxFile, host: str) -> dict[str, Any] | None:
    if file.owner_pid is None:
        return None
    return {"pid": file.owner_pid, "start": process_start_time(file.owner_pid), "host": host}


def _payload_problem(payload: dict[str, Any]) -> str | None:
    from agentspool.producer import events

    session_id = payload.get("session_id")
    if not isinstance(session_id, str) or not 0 < len(session_id) <= 200:
        return "the hook payload has no session_id (a string of 1 to 200 characters)"
    if events.session_id_problem(session_id) is not None:
        return "the hook payload's session_id is not valid UTF-8 text"
    if not isinstance(payload.get("hook_event_name"), str):
        return "the hook payload has no hook_event_name"
    return None


def _raw(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(inbox.MAX_FILE_BYTES)
    except OSError:
        return b""


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def owner_gone(owner: dict[str, Any], host: str) -> bool:
    """Is the Claude Code process that owned a session gone (pid and start time)?"""
    if owner.get("host") != host or not isinstance(owner.get("pid"), int):
        return False  # another machine's process cannot be checked: the silence timeout
    start = process_start_time(owner["pid"])
    return start == "" or (bool(owner.get("start")) and start != owner["start"])


def gone_sessions(spool_dir: str) -> list[str]:
    """Open sessions whose Claude Code process is gone and whose inbox files are all
    taken: their transcripts are read a last time, and their ids returned for the
    worker to seal ``abandoned`` (each is reported once)."""
    queue = SharedQueue(spool_dir, mapping.AGENT)
    host = socket.gethostname()
    waiting = {f.owner_pid for f in inbox.pending_files(spool_dir)}
    gone = []
    for session_id, state in _open_states(queue):
        owner = state.get("owner")
        if not isinstance(owner, dict) or owner.get("pid") in waiting:
            continue
        if not owner_gone(owner, host):
            continue
        with queue.session(session_id) as session:
            ignored = Collected()
            if "transcript" in session.state:
                _read(session, ignored, final=True)
            else:
                _read_subagent(session, session.state.get("path"), ignored, final=True)
            session.state["sealed"] = True
        gone.append(session_id)
    return gone


def _state_of(queue: SharedQueue, session_id: str) -> dict[str, Any] | None:
    found = queue.states(session_id=session_id)
    return found[0][1] if found else None


def _open_states(queue: SharedQueue) -> list[tuple[str, dict[str, Any]]]:
    return queue.states(having="owner", lacking=("ended", "sealed"))
