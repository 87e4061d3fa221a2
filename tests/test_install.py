"""Installing outside the clone (issue 23): ``make dist`` builds the wheel, a fresh
virtualenv installs it with each extra, and ``agentspool --help`` runs there. Every
``pip install`` line in the README and docs/ is one of the lines checked here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXTRAS = ("", "openai-agents", "langchain", "otel")
EXTRA_IMPORTS = {
    "": "agentspool.worker.cli",
    "openai-agents": "agentspool.integrations.openai_agents",
    "langchain": "agentspool.integrations.langchain",
    "otel": "agentspool.integrations.otel",
}


def install_lines() -> list[str]:
    lines = []
    for doc in DOCS:
        for found in re.findall(r"pip install ([^`\n#]+)", doc.read_text()):
            lines.append(found.strip().rstrip(")").strip())
    return lines


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``make dist`` builds, from a copy of the repository (the worktree's
    own dist/ is left alone)."""
    copy = tmp_path_factory.mktemp("clone") / "agentspool"
    shutil.copytree(
        REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "dist", ".*cache*", "build")
    )
    made = subprocess.run(
        ["make", "dist", f"BIN={Path(sys.executable).parent}"],
        cwd=copy, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    (built,) = (copy / "dist").glob("*.whl")
    assert built.name in made.stdout
    return built


def test_every_install_line_in_the_docs_names_the_wheel_make_dist_builds(wheel: Path) -> None:
    lines = install_lines()
    assert lines, "no install lines found"
    allowed = {".", "'.[otel]'"}
    for line in lines:
        target = line.strip("'\"")
        if line in allowed:
            continue
        base, _, extra = target.partition("[")
        assert base == f"dist/{wheel.name}", line
        assert extra.rstrip("]") in EXTRAS, line


@pytest.mark.slow
@pytest.mark.parametrize("extra", EXTRAS)
def test_the_wheel_installs_with_each_extra_in_a_fresh_venv(
    wheel: Path, tmp_path: Path, extra: str
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", target],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    helped = subprocess.run(
        [str(venv / "bin" / "agentspool"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert "worker" in helped.stdout and "ingest" in helped.stdout
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {EXTRA_IMPORTS[extra]}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
