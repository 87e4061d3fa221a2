"""``agentspool hook opencode``: installing and printing the plugin (no OpenCode run:
tests/integrations/test_opencode.py drives the real one with the installed plugin)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from agentspool.integrations import opencode
from agentspool.producer import layout
from tests.helpers import run_cli


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}


def test_install_into_the_project_is_idempotent(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = env_for(tmp_path / "home")
    first = run_cli("hook", "opencode", "--install", "--project", str(project), env=env, check=True)
    plugin = project / ".opencode" / "plugin" / "agentspool.js"
    assert first.stdout.strip() == f"{plugin}: installed"
    assert plugin.read_text() == opencode.plugin_source()
    before = plugin.stat().st_mtime_ns
    again = run_cli("hook", "opencode", "--install", "--project", str(project), env=env, check=True)
    assert again.stdout.strip() == f"{plugin}: already up to date"
    assert plugin.stat().st_mtime_ns == before
    plugin.write_text("// an older version\n")  # installing again updates it
    run_cli("hook", "opencode", "--install", "--project", str(project), env=env, check=True)
    assert plugin.read_text() == opencode.plugin_source()
    assert [p.name for p in plugin.parent.iterdir()] == ["agentspool.js"]  # no temp files left


def test_install_global_goes_to_the_users_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_cli("hook", "opencode", "--install", "--global", env=env_for(home), check=True)
    assert (home / ".config/opencode/plugin/agentspool.js").read_text() == opencode.plugin_source()
    config = tmp_path / "xdg"
    env = env_for(home, XDG_CONFIG_HOME=str(config))
    run_cli("hook", "opencode", "--install", "--global", env=env, check=True)
    assert (config / "opencode/plugin/agentspool.js").exists()


def test_print_shows_the_plugin_and_usage_errors(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    printed = run_cli("hook", "opencode", "--print", env=env, check=True)
    assert printed.stdout == opencode.plugin_source()
    assert "export const AgentspoolPlugin" in printed.stdout
    for args in ((), ("--global",), ("--global", "--print")):
        result = run_cli("hook", "opencode", *args, env=env)
        assert result.returncode == 2, result


def test_the_plugin_writes_the_queue_format_layout_defines() -> None:
    """The plugin cannot import layout.py: its copy of the format must be the same."""
    source = opencode.plugin_source()
    joined = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', source))  # its string literals, joined
    for sql in (layout.QUEUE_SQL, layout.META_SQL):
        assert sql in joined, sql
    assert f'QUEUES_DIRNAME = "{layout.QUEUES_DIRNAME}"' in source
    assert f'DB_FILENAME = "{layout.DB_FILENAME}"' in source
    assert f"INSERT INTO {layout.TABLE} (data, timestamp, status)" in source
    assert f"VALUES (CAST(? AS BLOB), ?, {layout.STATUS_INITED})" in source
