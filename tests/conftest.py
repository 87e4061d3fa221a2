from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.sqld import Sqld, sqld_binary

# A busy machine (a shared CI runner) slows example generation too: that is no
# finding about the code, so the property tests never fail on time alone.
settings.register_profile(
    "busy-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("busy-machine")


@pytest.fixture(scope="session")
def sqld_bin() -> Path:
    return sqld_binary()


@pytest.fixture
def sqld(sqld_bin: Path, tmp_path: Path) -> Iterator[Sqld]:
    """A fresh real sqld on a free 127.0.0.1 port, stopped with SIGTERM afterwards."""
    workdir = tmp_path / "sqld"
    workdir.mkdir()
    server = Sqld(sqld_bin, workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir(mode=0o700)
    return path
