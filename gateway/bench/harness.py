"""The bench's installations and the gateway as a real subprocess: `init`, development
credentials for one agency, `serve` on free ports, readiness, peak RSS, and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from gateway.settings import Settings

AGENCY = "PSNI"
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class Installation:
    kind: str  # "sqlite" or "postgresql"
    data_dir: Path
    settings: Settings
    credentials: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_installation(
    root: Path, kind: str, database_url: str = "", extra_settings: dict[str, str] | None = None
) -> Installation:
    """A fresh installation the way an operator makes one (`init`), with the scheduler off so
    that no background job competes with intake, and credentials for one agency."""
    from gateway.cli import init_installation, issue_credentials

    data_dir = root / f"{kind}-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True)
    lines = ['scheduler = "off"']
    if database_url:
        lines.append(f'database_url = "{database_url}"')
    for key, value in (extra_settings or {}).items():
        lines.append(f'{key} = "{value}"')
    (data_dir / "settings.toml").write_text("\n".join(lines) + "\n")
    settings, _ = init_installation(data_dir)
    credentials = data_dir / "credentials" / AGENCY
    asyncio.run(issue_credentials(settings, AGENCY, credentials))
    return Installation(kind, data_dir, settings, credentials)


def pin(pid: int, cpu: int | None) -> None:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    available = os.sched_getaffinity(0)
    if cpu in available and len(available) > 1:
        os.sched_setaffinity(pid, {cpu})


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM, the resident set's high-water mark over the process's whole life."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GatewayProcess:
    """`python -m gateway serve` for one installation, stopped by SIGTERM when done."""

    command: tuple[str, ...] = ("gateway", "serve")

    def __init__(self, installation: Installation, cpu: int | None = None) -> None:
        self.installation = installation
        self.cpu = cpu
        self.api_port = free_port()
        self.web_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.peak_rss_mib: float | None = None

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> GatewayProcess:
        inst = self.installation
        self._log = (inst.data_dir / "gateway.log").open("ab")
        cmd = [
            sys.executable,
            "-m",
            *self.command,
            "--data-dir",
            str(inst.data_dir),
            "--api-port",
            str(self.api_port),
            "--web-port",
            str(self.web_port),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("CMR_GATEWAY_DATA_DIR", None)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        pin(self.proc.pid, self.cpu)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self.installation.settings.client_ca))
        url = f"https://127.0.0.1:{self.web_port}/readyz"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited at start-up; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the gateway did not become ready; see {self.log_path}")

    @property
    def log_path(self) -> Path:
        return self.installation.data_dir / "gateway.log"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.peak_rss_mib = peak_rss_mib(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FloorProcess(GatewayProcess):
    """The HTTP floor (gateway.bench.floor) on the same installation's certificates."""

    command = ("gateway.bench.floor",)


def run_loadgen(
    gateway: GatewayProcess,
    args: list[str],
    timeout: float,
    cpu: int | None = None,
    on_ready: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """One run of the load generator in its own process; its JSON result. `on_ready` is called
    once its envelopes are sealed and its connections open, just before the clock starts."""
    import json
    import tempfile

    cmd = [
        sys.executable,
        "-m",
        "gateway.bench.loadgen",
        "--url",
        gateway.api_url,
        "--credentials",
        str(gateway.installation.credentials),
        *args,
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready"
        cmd += ["--ready-file", str(ready)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + timeout
            if on_ready is not None:
                while not ready.exists() and proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(cmd, timeout)
                    time.sleep(0.02)
                if ready.exists():
                    on_ready()
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# -- PostgreSQL: a database of the bench's own, created and dropped here -----------------------


def pg_admin_url() -> str:
    return os.environ.get("CMR_BENCH_POSTGRES_URL", PG_ADMIN_DEFAULT)


def pg_reachable(admin: str) -> str | None:
    """None when reachable, else why not."""
    import psycopg

    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def pg_database(admin: str) -> Iterator[str]:
    """A fresh database; its asyncpg URL. Dropped (with its connections) afterwards."""
    import psycopg

    name = f"cmr_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
