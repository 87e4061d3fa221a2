"""The integrations are optional: `import agentspool` loads none of them, and each
loads nothing beyond the producer, its own framework and the standard library (never
the worker, never another integration's framework)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FRAMEWORKS = {"agents", "langchain_core", "opentelemetry"}


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return set(json.loads(out))


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_import_agentspool_loads_no_integration() -> None:
    loaded = modules_after("import agentspool")
    assert not {m for m in loaded if m.startswith("agentspool.integrations")}
    assert not top_level(loaded) & FRAMEWORKS


@pytest.mark.parametrize(
    ("module", "framework"),
    [
        ("openai_agents", "import agents.tracing, agents.tracing.span_data"),
        (
            "langchain",
            "import langchain_core.callbacks, langchain_core.messages, langchain_core.outputs",
        ),
        ("otel", "import opentelemetry.sdk.trace, opentelemetry.trace, opentelemetry.context"),
    ],
)
def test_an_integration_loads_only_its_framework(module: str, framework: str) -> None:
    """What the module adds to what its framework's own imports load."""
    by_framework = modules_after(framework)
    by_both = modules_after(f"{framework}; import agentspool.integrations.{module}")
    added = {m for m in by_both - by_framework if not m.startswith("agentspool")}
    assert top_level(added) <= set(sys.stdlib_module_names) | top_level(by_framework), added
    ours = {m for m in by_both if m.startswith("agentspool")}
    assert not {m for m in ours if m.startswith("agentspool.worker")}
    assert not top_level(added) & {"libsql", "click", "watchdog", "prometheus_client"}
