"""Install a pinned npm package once into ``.cache/npm/<name>@<version>``.

CI starts from a clean clone: the first test that needs a package installs it from the
registry (the only network a CI machine has besides loopback); later runs reuse it. An
install is built in a scratch directory and renamed into place, so an interrupted one
is never mistaken for a finished one; a lock keeps two test processes from racing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from tests.sqld import CACHE_DIR

NPM_CACHE = CACHE_DIR / "npm"
INSTALL_TIMEOUT_S = 600


def installed(spec: str) -> Path:
    """The directory holding ``node_modules`` with ``spec`` (``name@version``) in it."""
    target = NPM_CACHE / spec.replace("/", "+")
    if (target / ".complete").exists():
        return target
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    with open(NPM_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        scratch = target.with_name(target.name + f".partial-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        (scratch / "package.json").write_text('{"private": true}\n')
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", spec],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise RuntimeError(f"npm install {spec} failed:\n{result.stderr[-2000:]}")
        (scratch / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
    return target
