"""Fixtures for driving the real Claude Code CLI offline (tests/claude_cli.py).

- ``claude_bin``: the pinned ``claude.exe``, npm-installed into ``.cache/`` once.
- ``loopback``: a loopback-only network namespace for this test.
- ``fake_api``: a scripted Anthropic Messages API listening inside it
  (``fake_api.script([turn(...), ...], when=None)``).
- ``claude``: a ``ClaudeHome`` (fresh HOME and project, the test's spool) whose
  settings run ``agentspool hook claude-code`` on every event ``--print-settings``
  registers; ``claude.run(prompt, resume=..., debug_file=...)`` returns a ``ClaudeRun``
  (``.result``, ``.session_id``, ``.transcript``, ``.subagent_transcripts``);
  ``claude.start(...)`` returns a ``ClaudeProcess`` to ``wait()`` for or ``kill()``.
- ``openai_api``: a scripted OpenAI API (chat completions and Responses) on 127.0.0.1
  for the OpenAI-compatible libraries, which run in the test's own process: while it
  is up, a connection to any address but the loopback fails the test, so a library
  that would reach the internet (an exporter, a download) is caught, not tolerated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.claude_cli import ClaudeHome, claude_binary, hook_settings
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.openai_api import FakeOpenAIAPI, loopback_only
from tests.netns import LoopbackNamespace


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    return claude_binary()


@pytest.fixture
def loopback() -> Iterator[LoopbackNamespace]:
    with LoopbackNamespace() as namespace:
        yield namespace


@pytest.fixture
def fake_api(loopback: LoopbackNamespace) -> Iterator[FakeAnthropicAPI]:
    with FakeAnthropicAPI(loopback.listen()) as api:
        yield api


@pytest.fixture
def claude(
    claude_bin: Path,
    loopback: LoopbackNamespace,
    fake_api: FakeAnthropicAPI,
    spool: Path,
    tmp_path: Path,
) -> ClaudeHome:
    return ClaudeHome(
        claude_bin, loopback, fake_api.url, tmp_path / "claude", spool, settings=hook_settings()
    )


@pytest.fixture
def openai_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIAPI]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-offline")
    with loopback_only() as refused, FakeOpenAIAPI() as api:
        monkeypatch.setenv("OPENAI_BASE_URL", api.url)
        yield api
    assert refused == [], f"a library tried to leave the loopback: {refused}"
