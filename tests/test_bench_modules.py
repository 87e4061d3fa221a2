"""Every benchmark module imports: `.ci/run` runs the bench smoke first, and a broken
import there (a helper moved, a name renamed) must fail `make test` as well, in a second,
not only the smoke run."""

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in {"__init__", "__main__"})


def test_the_bench_has_modules() -> None:
    assert len(MODULES) >= 10, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__name__ == f"bench.{name}"


def test_every_group_has_a_run_function() -> None:
    from bench import GROUPS

    assert GROUPS
    for group in GROUPS:
        module = importlib.import_module(f"bench.{group}")
        assert callable(getattr(module, "run", None)), f"bench.{group} has no run(cfg)"
