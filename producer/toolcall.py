"""``with session.tool(name, input) as call:`` — one tool call as a block.

A clean exit records the call ``completed`` with ``call.output`` and its duration;
an exception records it ``error`` with the exception's text and propagates. It
works the same under ``async with`` (nothing here waits). Like every producer
call it never raises into the agent on its own account.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session


def error_text(exc_type: type[BaseException] | None, exc: BaseException) -> str:
    """How an exception that ended a block is recorded (a session's or a tool call's)."""
    return f"{exc_type.__name__ if exc_type else 'Error'}: {exc}"


class ToolCall:
    """A started tool call; set ``output`` (or ``error``) before the block ends."""

    __slots__ = ("_session", "error", "id", "name", "output")

    def __init__(self, session: Session, name: str, input: Any, call_id: str | None) -> None:
        self._session = session
        self.name = str(name)
        self.output: Any = None
        # Set to report a failure without raising (a tool that returned an error).
        self.error: str | None = None
        self.id = session.tool_started(name, input, call_id)

    def __enter__(self) -> ToolCall:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        exc_type, exc, _ = exc_info
        error = self.error if exc is None else error_text(exc_type, exc)
        self._session.tool_finished(self.id, output=self.output, error=error)

    async def __aenter__(self) -> ToolCall:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)
