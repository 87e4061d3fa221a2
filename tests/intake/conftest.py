"""Fixtures of the intake tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentspool.worker.intake.replica import Replica, replica_path
from tests.intake.test_replica import SID


@pytest.fixture
def replica(spool: Path) -> Iterator[Replica]:
    """The replica of session SID in the test's spool, closed afterwards."""
    r = Replica(replica_path(spool, SID))
    try:
        yield r
    finally:
        r.close()
