"""``--env-file``: settings from a file in the format of ``.env.example``.

One ``KEY=VALUE`` per line; blank lines and lines starting with ``#`` are skipped;
an optional ``export `` prefix is allowed; a value wrapped in matching single or
double quotes loses them. Nothing else is interpreted (no ``$VAR`` expansion, no
comment after a value): the same file works as systemd's ``EnvironmentFile=``.
Errors name the file and line, never a value (values may be secrets).
"""

from __future__ import annotations

import re
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(ValueError):
    pass


def read_env_file(path: Path) -> list[tuple[int, str, str]]:
    """The file's (line number, key, value) assignments, in order."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"cannot read {path}: {exc}") from None
    assignments = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise EnvFileError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        assignments.append((number, key, value))
    return assignments
