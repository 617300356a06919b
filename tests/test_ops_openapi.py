"""Schemathesis against /openapi.json of a running gateway, on each listener: no 5xx, and
every status code, content type, header and body matches the document. The agency API is
called with an agency's client certificate; the web listener is called without one."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from gateway.clock import FrozenClock
from gateway.settings import Settings
from tests.support import REPO, running_gateway

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
SHARED = r"\.well-known/|openapi\.json|healthz|readyz|metrics"
SEED = os.environ.get("CMR_TEST_SEED", "20261201")
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


async def _run(base_url: str, ca: Path, examples: int, extra: list[str]) -> tuple[int, str]:
    # Its cache (.schemathesis/) goes beside the installation, not into the checkout.
    work = ca.parent.parent.parent
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{base_url}/openapi.json",
        "--url",
        base_url,
        "--tls-verify",
        str(ca),
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--phases",
        "examples,coverage,fuzzing",
        # One worker: hypothesis' lambda-source cache is not thread-safe (a runtime error).
        "--workers",
        "1",
        "--seed",
        SEED,
        "--no-color",
        "--request-timeout",
        "20",
        *extra,
        cwd=work,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(REPO),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.slow
async def test_schemathesis_on_both_listeners(
    sqlite_installation: Settings, clock: FrozenClock
) -> None:
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    async with running_gateway(sqlite_installation, clock) as gw:
        psni = await gw.agency("PSNI")
        ca = sqlite_installation.client_ca
        code, out = await _run(
            gw.api_url,
            ca,
            30,
            [
                "--include-path-regex",
                rf"^/(v1/|{SHARED})",
                "--request-cert",
                str(psni.dir / "client.crt"),
                "--request-cert-key",
                str(psni.dir / "client.key"),
            ],
        )
        assert code == 0, out[-6000:]
        assert "passed" in out
        # The web listener: every route the document names but the agency API's.
        code, out = await _run(gw.web_url, ca, 8, ["--exclude-path-regex", "^/v1/"])
        assert code == 0, out[-6000:]
