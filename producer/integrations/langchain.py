"""LangChain -> agentspool: a callback handler.

    from agentspool import Spool
    from agentspool.integrations.langchain import SpoolCallbackHandler

    handler = SpoolCallbackHandler(Spool(), agent="support-bot")
    agent.invoke(inputs, config={"callbacks": [handler]})

One top-level run (a run without a parent) is one session (id = its run id); nested
chains, agents, models and tools stay in it. A hand-written loop that calls a model
(and tools) several times makes several top-level runs: inside
``with handler.session("my-agent"):`` they are all one session. ``on_chat_model_start`` gets the whole
history on every call: each message is logged once, in order. ``on_llm_end`` gives
the model's reply (its requested tool calls, model and token usage in the metadata).
Tools are tool executions keyed by the ``tool_call_id`` when there is one, else the
tool's run id. The top-level run's end or error ends the session.

Written for langchain-core 1.x (``pip install agentspool[langchain]``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from agentspool.producer import Session, Spool

from ._guard import CallbackGuard
from ._mapping import Message, SessionLog, ToolCall, Usage, role_of, session_block, text_of

__all__ = ["SpoolCallbackHandler"]

SOURCE = "langchain"


class SpoolCallbackHandler(BaseCallbackHandler):
    """Logs each top-level LangChain run as an agentspool session.

    ``agent`` names the agent (default: the top-level run's name). Callbacks never
    raise into LangChain; ``errors`` counts the ones that failed."""

    # Called on the run's own thread, in order, also under async (LangChain would
    # otherwise hand a sync handler to an executor, and the order could change).
    run_inline = True
    raise_error = False

    def __init__(self, spool: Spool, agent: str | None = None) -> None:
        super().__init__()
        self.spool = spool
        self.agent = agent
        self._guard = CallbackGuard(SOURCE)
        self._lock = threading.Lock()
        self._root_of: dict[UUID, UUID] = {}  # every open run -> its top-level run
        self._logs: dict[UUID, SessionLog] = {}  # top-level run -> its session
        self._tool_calls: dict[UUID, str] = {}  # open tool run -> call id
        self._models: dict[UUID, str] = {}  # open model run -> model name
        self._borrowed: set[UUID] = set()  # top-level runs inside a session() block
        # The session of the `session()` block the caller is in (per thread and task).
        self._block: ContextVar[SessionLog | None] = ContextVar(
            f"agentspool-langchain-{id(self)}", default=None
        )

    @property
    def errors(self) -> int:
        return self._guard.errors

    @property
    def unmapped(self) -> int:
        """Replies left out or usage not reported (each kind logged once)."""
        return self._guard.unmapped

    @contextmanager
    def session(
        self,
        agent: str | None = None,
        *,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Iterator[Session]:
        """One session for every run started inside the block (a hand-written loop's
        model calls and tool calls, each a top-level run of its own otherwise). Ends
        ``completed``, or ``error`` when the block raises."""
        session_metadata: dict[str, Any] = {"source": SOURCE, **(metadata or {})}
        session = self.spool.session(
            agent or self.agent or "langchain", session_id=session_id, metadata=session_metadata
        )
        with session_block(session, self._block, self._lock):
            yield session

    # ---- runs ---------------------------------------------------------------
    # LangChain passes every start callback the run's id, its parent's id, its tags,
    # metadata and name by keyword; they arrive in **kwargs and are read inside the
    # guard (_Run.of), so a missing one is a counted error, never an exception.

    def _enter(self, run: _Run) -> SessionLog | None:
        """Register a run and return its session. A run whose parent this handler
        never saw is top-level (the handler may be attached below the real root) and
        opens a session; a run of a top-level run that already ended (work left
        running past it) has none."""
        parent = run.parent_id
        root = self._root_of.get(parent, run.id) if parent else run.id
        self._root_of[run.id] = root
        log = self._logs.get(root)
        if log is None and root == run.id:
            block = self._block.get()
            if block is not None and not block.ended:
                self._logs[root] = block  # the block's session; the block ends it
                self._borrowed.add(root)
                return block
            session_metadata: dict[str, Any] = {"source": SOURCE, "run_name": run.name}
            if run.tags:
                session_metadata["tags"] = list(run.tags)
            if run.metadata:
                session_metadata["run_metadata"] = dict(run.metadata)
            session = self.spool.session(
                self.agent or run.name, session_id=str(root), metadata=session_metadata
            )
            log = self._logs[root] = SessionLog(session)
        return log

    def _entered(
        self, serialized: dict[str, Any] | None, kwargs: dict[str, Any], kind: str
    ) -> None:
        self._enter(_Run.of(serialized, kwargs, kind))

    def _log_of(self, run_id: UUID) -> SessionLog | None:
        root = self._root_of.get(run_id)
        return None if root is None else self._logs.get(root)

    def _exit(self, run_id: UUID, error: BaseException | None = None) -> None:
        """A run ended; the top-level one ends its session."""
        root = self._root_of.pop(run_id, None)
        if root is None or root != run_id:
            return
        log = self._logs.pop(root, None)
        if root in self._borrowed:
            self._borrowed.discard(root)
        elif log is not None:
            if error is None:
                log.end("completed")
            else:
                log.end("error", f"{type(error).__name__}: {error}")

    # ---- chains, retrievers (a retriever is a nested run like a chain) -------

    def on_chain_start(
        self, serialized: dict[str, Any], inputs: dict[str, Any], **kwargs: Any
    ) -> None:
        self._guard.call(self._locked(self._entered), serialized, kwargs, "chain")

    def on_chain_end(self, outputs: dict[str, Any], *, run_id: UUID, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._exit), run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._exit), run_id, error)

    def on_retriever_start(self, serialized: dict[str, Any], query: str, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._entered), serialized, kwargs, "retriever")

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._exit), run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._exit), run_id, error)

    # ---- models -------------------------------------------------------------

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self._guard.call(
            self._locked(self._model_started),
            serialized,
            kwargs,
            "chat_model",
            lambda: [[_message(m) for m in batch] for batch in messages],
        )

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        self._guard.call(
            self._locked(self._model_started),
            serialized,
            kwargs,
            "llm",
            lambda: [[Message("user", str(prompt))] for prompt in prompts],
        )

    def _model_started(
        self,
        serialized: dict[str, Any] | None,
        kwargs: dict[str, Any],
        kind: str,
        histories: Callable[[], list[list[Message]]],
    ) -> None:
        run = _Run.of(serialized, kwargs, kind)
        log = self._enter(run)
        model = _model_name(run.invocation_params, run.metadata)
        if model:
            self._models[run.id] = model
        if log is not None:
            for history in histories():  # converted here, inside the guard
                log.history(history)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._model_ended), run_id, response)

    def _model_ended(self, run_id: UUID, response: LLMResult) -> None:
        model = self._models.pop(run_id, None)
        log = self._log_of(run_id)
        if log is not None:
            outputs: list[Message] = []
            usage: Usage | None = None
            for generations in response.generations:  # one list per prompt of a batch
                if not generations:
                    continue
                generation = generations[0]  # alternatives (n > 1) are not the transcript
                reply = getattr(generation, "message", None)
                if isinstance(reply, BaseMessage):
                    outputs.append(_message(reply))
                    usage = _add(usage, Usage.from_mapping(getattr(reply, "usage_metadata", None)))
                    meta = getattr(reply, "response_metadata", None) or {}
                    model = meta.get("model_name") or meta.get("model") or model
                    finish = meta.get("finish_reason") or meta.get("stop_reason")
                    if finish:
                        outputs[-1].metadata["finish_reason"] = finish
                else:
                    outputs.append(Message("assistant", generation.text))
            if usage is None and response.llm_output:
                llm_output = response.llm_output
                usage = Usage.from_mapping(llm_output.get("token_usage") or llm_output.get("usage"))
                model = model or llm_output.get("model_name")
            if usage is None and outputs:
                self._guard.notice(
                    "no-usage",
                    "agentspool %s integration: a model reply carried no token usage"
                    " (a streamed ChatOpenAI needs stream_usage=True); its usage is left"
                    " unknown",
                )
            log.outputs(outputs, model=None if model is None else str(model), usage=usage)
        self._exit(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        def model_failed() -> None:
            self._models.pop(run_id, None)
            self._exit(run_id, error)

        self._guard.call(self._locked(model_failed))

    # ---- tools --------------------------------------------------------------

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, **kwargs: Any) -> None:
        def tool_started() -> None:
            run = _Run.of(serialized, kwargs, "tool")
            log = self._enter(run)
            if log is None:
                return
            # input_str is a Python repr; the dict is in `inputs`.
            inputs = kwargs.get("inputs")
            arguments = inputs if inputs is not None else input_str
            call_id = str(kwargs.get("tool_call_id") or run.id)
            log.tool_ran(call_id)
            self._tool_calls[run.id] = log.session.tool_started(run.name, arguments, call_id)

        self._guard.call(self._locked(tool_started))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._tool_ended), run_id, output)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._guard.call(self._locked(self._tool_ended), run_id, None, error)

    def _tool_ended(self, run_id: UUID, output: Any, error: BaseException | None = None) -> None:
        call_id = self._tool_calls.pop(run_id, None)
        log = self._log_of(run_id)
        if call_id is not None and log is not None:
            if error is not None:
                log.session.tool_finished(call_id, error=f"{type(error).__name__}: {error}")
            elif isinstance(output, BaseMessage):
                # Invoked with a tool call, a tool returns a ToolMessage (status "error"
                # when the tool handled its own failure); else the raw value.
                content = text_of(output.content)
                failed = getattr(output, "status", None) == "error"
                error_text = (
                    (content if isinstance(content, str) else "tool error") if failed else None
                )
                log.session.tool_finished(call_id, content, error_text)
            else:
                log.session.tool_finished(call_id, output)
        self._exit(run_id, error)

    # ---- helpers ------------------------------------------------------------

    def _locked(self, function: Any) -> Any:
        def locked(*args: Any) -> Any:
            with self._lock:
                return function(*args)

        locked.__name__ = getattr(function, "__name__", "callback")
        return locked


@dataclass(frozen=True)
class _Run:
    """What LangChain tells a start callback about the run, by keyword."""

    id: UUID
    parent_id: UUID | None
    name: str
    tags: list[str] | None
    metadata: dict[str, Any] | None
    invocation_params: Any  # a model run's settings (its model name among them)

    @classmethod
    def of(cls, serialized: dict[str, Any] | None, kwargs: dict[str, Any], kind: str) -> _Run:
        return cls(
            kwargs["run_id"],
            kwargs.get("parent_run_id"),
            _name(serialized, kwargs, kind),
            kwargs.get("tags"),
            kwargs.get("metadata"),
            kwargs.get("invocation_params"),
        )


def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
    """A run's name: ``serialized`` is ``None`` for a RunnableLambda, whose name is in
    ``kwargs["name"]``."""
    name = kwargs.get("name")
    if not name and isinstance(serialized, dict):
        name = serialized.get("name")
        if not name and isinstance(serialized.get("id"), list) and serialized["id"]:
            name = serialized["id"][-1]
    return str(name or default)


def _model_name(params: Any, metadata: dict[str, Any] | None) -> str | None:
    for source in (params, metadata):
        if isinstance(source, dict):
            for key in ("model", "model_name", "ls_model_name"):
                if source.get(key):
                    return str(source[key])
    return None


def _message(message: BaseMessage) -> Message:
    """A LangChain message: types ``human``/``ai``/``system``/``tool`` (``...Chunk``
    when streamed; a ``ChatMessage`` names its own role)."""
    kind = str(getattr(message, "type", "") or "")
    if kind.endswith("MessageChunk"):
        kind = kind[: -len("MessageChunk")]
    if kind.lower() == "chat":
        kind = str(getattr(message, "role", "") or "chat")
    calls = [
        ToolCall(
            None if call.get("id") is None else str(call["id"]),
            str(call.get("name", "")),
            call.get("args"),
        )
        for call in getattr(message, "tool_calls", None) or []
    ]
    tool_call_id = getattr(message, "tool_call_id", None)
    content = message.content
    if calls and isinstance(content, list):
        # The Responses API's reply keeps its function calls among the content blocks;
        # they are the tool calls above, not text.
        content = [b for b in content if not _is_call_block(b)]
    return Message(
        role_of(kind),
        text_of(content),
        calls,
        tool_call_id=None if tool_call_id is None else str(tool_call_id),
    )


_CALL_BLOCKS = frozenset({"function_call", "tool_call", "tool_call_chunk", "tool_use"})


def _is_call_block(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") in _CALL_BLOCKS


def _add(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    if total is None:
        return more
    total.add(more)
    return total
