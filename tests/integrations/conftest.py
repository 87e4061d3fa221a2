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
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.claude_cli import ClaudeHome, claude_binary, hook_settings
from tests.fakes.anthropic_api import FakeAnthropicAPI
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
