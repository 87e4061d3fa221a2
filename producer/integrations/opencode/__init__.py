"""OpenCode -> agentspool: a plugin that runs inside OpenCode, and its installer.

OpenCode (``opencode-ai`` on npm) loads JavaScript plugins from a project's
``.opencode/plugin/`` and from ``~/.config/opencode/plugin/`` and calls them, in its
own Bun process, for every event on its bus. ``agentspool.js`` beside this module is
that plugin: it writes each event agentspool logs synchronously into a queue file of
its own process (persist-queue's SQLite format, through ``bun:sqlite``), so no Python
process runs per event and nothing is lost when OpenCode exits or is killed. Its
header says how OpenCode's events map onto agentspool's; docs/INTEGRATIONS.md has the
table. This module only finds, shows and installs the plugin (``agentspool hook
opencode``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

PLUGIN_NAME = "agentspool.js"


def plugin_source() -> str:
    """The plugin, as shipped in this package."""
    return resources.files(__name__).joinpath(PLUGIN_NAME).read_text(encoding="utf-8")


def project_plugin_dir(project: Path) -> Path:
    """Where OpenCode finds a project's plugins."""
    return project / ".opencode" / "plugin"


def global_plugin_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where OpenCode finds the plugins of every project (``$XDG_CONFIG_HOME/opencode``)."""
    env = os.environ if environ is None else environ
    config = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(config) / "opencode" / "plugin"


def install(plugin_dir: Path) -> tuple[Path, bool]:
    """Write the plugin into ``plugin_dir``; returns its path and whether it changed
    (an identical file is left alone). The file is replaced whole (written aside,
    fsynced, renamed): OpenCode never loads half of it."""
    path = plugin_dir / PLUGIN_NAME
    source = plugin_source()
    try:
        if path.read_text(encoding="utf-8") == source:
            return path, False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    plugin_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=plugin_dir, prefix=f".{PLUGIN_NAME}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(plugin_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path, True
