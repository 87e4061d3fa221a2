"""The package's shape: imports only go downward, the CLI alone speaks click, modules stay small.

Read from the installed package (what the tests run against), by parsing each module's
imports, wherever they stand (a function-local import is still a dependency).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import agentspool
import agentspool.worker

# The stages in the order an event flows through them (docs/DESIGN.md). A module may
# import its own stage and the ones before it, never a later one. The web viewer is
# a library like the reports; the CLI, last, is the thin layer that starts it.
STAGES = ("base", "intake", "sync", "daemon", "reports", "ui", "cli")

# Imports that point up the stages on purpose. ``demo`` is a flat module that runs a
# whole worker (it is the quick start), so it may use the daemon.
ALLOWED_UPWARD = {
    ("agentspool.worker.demo", "daemon"),
}

MAX_LINES = 500

PACKAGE_ROOT = Path(agentspool.__file__).parent
WORKER_ROOT = Path(agentspool.worker.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for block in ast.walk(tree):  # imports for the type checker only run at no time
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING":
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in known else source)
    return found


def stage_of(module: str) -> str | None:
    """The worker stage a module belongs to; None for the producer side (below them all)."""
    parts = module.split(".")
    if parts[:2] != ["agentspool", "worker"]:
        return None
    if len(parts) > 3 and parts[2] in STAGES:
        return parts[2]
    if len(parts) == 3 and parts[2] in STAGES and parts[2] != "base":
        return parts[2]  # the subpackage's __init__
    return "base"


def test_worker_imports_only_go_down_the_stages() -> None:
    modules = library_modules()
    known = set(modules)
    upward = []
    for name, path in modules.items():
        own = stage_of(name)
        for target in imported_modules(path, known):
            if not target.startswith("agentspool."):
                continue
            theirs = stage_of(target)
            if theirs is None:
                continue  # the producer side (producer, integrations) is below every stage
            if own is None:
                upward.append(f"{name} (producer side) imports {target}")
                continue
            if STAGES.index(theirs) > STAGES.index(own) and (name, theirs) not in ALLOWED_UPWARD:
                upward.append(f"{name} ({own}) imports {target} ({theirs})")
    assert upward == [], "imports going up the stages:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules() -> None:
    modules = library_modules()
    known = set(modules)
    graph = {
        name: {t for t in imported_modules(path, known) if t in known and t != name}
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_only_the_cli_imports_click() -> None:
    cli = WORKER_ROOT / "cli"
    known = set(library_modules())
    offenders = [
        module_name(path)
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        if cli not in path.parents
        and any(m == "click" or m.startswith("click.") for m in imported_modules(path, known))
    ]
    assert offenders == [], f"click imported outside worker/cli/: {offenders}"


def test_no_module_is_over_500_lines() -> None:
    too_long = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        rel = path.relative_to(PACKAGE_ROOT.parent).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            too_long[rel] = lines
    assert too_long == {}, f"modules over {MAX_LINES} lines: {too_long}"


def _source_of_others(owner: str, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        name: path.read_text()
        for name, path in library_modules().items()
        if name != owner and not name.startswith(skip)
    }


def test_only_queuefile_touches_the_queue_tables() -> None:
    """producer/queuefile.py owns the queue-file format; layout.py holds its names (the
    Claude Code hook's fast path reads only that) and sharedqueue.py the writes of a
    queue file shared by many short-lived processes. Nothing else names the tables."""
    owner = "agentspool.producer.queuefile"
    also_owners = ("agentspool.producer.layout", "agentspool.producer.sharedqueue")
    table = re.compile(
        r"\bqueuefile\.(TABLE|META_TABLE)\b|\back_queue_default\b|\bagentspool_producer\b"
    )
    others = _source_of_others(owner, skip=also_owners)
    offenders = sorted(name for name, text in others.items() if table.search(text))
    assert offenders == [], f"modules that reach into queue files past queuefile.py: {offenders}"


def test_transactions_go_through_the_one_helper() -> None:
    owner = "agentspool.producer.transaction"
    # The hook's shared queue file keeps its own: its fast path imports no contextlib.
    # (A Hrana batch's BEGIN/COMMIT steps are steps of a request, not calls here.)
    others = _source_of_others(owner, skip=("agentspool.producer.sharedqueue",))
    statement = re.compile(
        r"""execute\(\s*["'](BEGIN( IMMEDIATE| EXCLUSIVE| DEFERRED)?|COMMIT|ROLLBACK)["']"""
    )
    offenders = sorted(name for name, text in others.items() if statement.search(text))
    assert offenders == [], f"hand-written BEGIN/COMMIT/ROLLBACK (use transaction()): {offenders}"


def test_worker_db_is_opened_through_the_state_helpers() -> None:
    """``state.existing_state`` for commands and reports; ``open_state_store`` (which
    quarantines and rebuilds a damaged file) for the worker."""
    owners = ("agentspool.worker.state", "agentspool.worker.intake.quarantine")
    opened = re.compile(r"\bStateStore\(")
    offenders = sorted(
        name
        for name, text in _source_of_others(owners[0], skip=owners[1:]).items()
        if opened.search(text)
    )
    assert offenders == [], f"modules opening worker.db by hand: {offenders}"


def test_exit_codes_are_defined_once() -> None:
    owner = "agentspool.worker.exitcodes"
    defined = {}
    for name, path in library_modules().items():
        if name == owner:
            continue
        tree = ast.parse(path.read_text())
        names = [
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
            and target.id.startswith("EXIT_")
            and isinstance(node.value, ast.Constant)
            and type(node.value.value) is int  # not EXIT_FLUSH_TIMEOUT_S, a time
        ]
        if names:
            defined[name] = names
    assert defined == {}, f"exit codes defined outside worker/exitcodes.py: {defined}"
