"""pyproject.toml says only what is true: each runtime dependency is imported by the code.

Read at test time, so a dependency added or dropped later is checked as it stands.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from tests.test_layout import imported_modules, library_modules

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def runtime_distributions() -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    # "libsql==0.1.11", "click>=8.1,<9", "name[extra]; marker": the name comes first
    return [
        re.split(r"[^A-Za-z0-9._-]", req.strip(), maxsplit=1)[0] for req in project["dependencies"]
    ]


def import_names(distribution: str) -> set[str]:
    """The top-level import names an installed distribution provides."""
    wanted = _normalized(distribution)
    return {
        name
        for name, dists in metadata.packages_distributions().items()
        if any(_normalized(d) == wanted for d in dists)
    }


def test_every_runtime_dependency_is_imported_by_the_library() -> None:
    modules = library_modules()
    known = set(modules)
    imported = {
        target.split(".")[0]
        for name, path in modules.items()
        if name.startswith(("agentspool.producer", "agentspool.worker"))
        for target in imported_modules(path, known)
    }
    unused = {}
    for distribution in runtime_distributions():
        names = import_names(distribution)
        assert names, f"{distribution} is a dependency but is not installed"
        if not names & imported:
            unused[distribution] = sorted(names)
    assert unused == {}, (
        f"runtime dependencies no code under producer/ or worker/ imports: {unused};"
        " move them to an extra (pyproject.toml [project.optional-dependencies])"
    )


def test_the_producer_imports_only_the_standard_library() -> None:
    modules = library_modules()
    known = set(modules)
    outside = {
        name: sorted(foreign)
        for name, path in modules.items()
        if not name.startswith("agentspool.worker")
        and not name.startswith("agentspool.integrations")
        and (
            foreign := {
                t
                for t in imported_modules(path, known)
                if t.split(".")[0] not in sys.stdlib_module_names
                and t.split(".")[0] != "agentspool"
            }
        )
    }
    assert outside == {}, f"the producer imports more than the standard library: {outside}"
