"""The deployment files: the systemd units pass `systemd-analyze verify` (where it exists),
the container file parses and runs as non-root with a health check, the production settings
are valid settings, every alert rule's metric is exported, and docs/operations.md documents
every setting with its default."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FrozenClock
from gateway.paths import PROJECT_ROOT
from gateway.settings import Settings, _coerce
from tests.support import REPO, running_gateway

DEPLOY = REPO / "deploy"
UNITS = ["cmr-gateway.service", "cmr-gateway-backup.service", "cmr-gateway-backup.timer"]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # verify checks that ExecStart exists: point it at this checkout's entry point.
    executable = Path(sys.executable).parent / "cmr-gateway"
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        (tmp_path / name).write_text(
            text.replace("/opt/cmr-gateway/bin/cmr-gateway", str(executable))
        )
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    ours = [line for line in (done.stdout + done.stderr).splitlines() if unit in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_service_unit_is_hardened() -> None:
    text = (DEPLOY / "cmr-gateway.service").read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z]\w*=", line)
    )
    assert settings["User"] == "cmr-gateway"
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "cmr-gateway",
        "ProtectHome": "yes",
    }.items():
        assert settings.get(key) == value, key
    assert settings["CapabilityBoundingSet"] == ""
    assert "CMR_GATEWAY_DATA_DIR=/var/lib/cmr-gateway" in text


def _instructions() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    path = DEPLOY / "Containerfile"
    try:
        import dockerfile  # the official (BuildKit) parser, through its Python binding
    except ImportError:
        # A minimal parser: joins continuation lines, splits the instruction from its value.
        joined = re.sub(r"\\\n", " ", path.read_text())
        result = []
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                cmd, _, rest = line.partition(" ")
                flags = tuple(w for w in rest.split() if w.startswith("--"))
                result.append((cmd.upper(), flags, (rest,)))
        return result
    return [
        (c.cmd.upper(), tuple(c.flags), tuple(c.value)) for c in dockerfile.parse_file(str(path))
    ]


def test_containerfile_parses_and_runs_unprivileged() -> None:
    cmds = _instructions()
    names = [c for c, _, _ in cmds]
    froms = [v for c, _, v in cmds if c == "FROM"]
    assert froms and all(v[0].startswith("python:3.11-slim") for v in froms)
    # The final stage runs as a numeric non-root user, with a health check and an entry point.
    last_from = max(i for i, n in enumerate(names) if n == "FROM")
    final = cmds[last_from:]
    users = [v for c, _, v in final if c == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1][0].split(":")[0]
    assert user not in ("root", "0")
    health = [(f, v) for c, f, v in final if c == "HEALTHCHECK"]
    assert health and "gateway.healthcheck" in " ".join(health[0][1])
    assert any(c == "ENTRYPOINT" for c, _, _ in final)
    assert {"8443", "8444"} <= {p for c, _, v in final if c == "EXPOSE" for p in v}
    # COPY sources exist in the build context (the repository).
    for c, flags, values in cmds:
        if c == "COPY" and not any(f.startswith("--from") for f in flags):
            for source in values[:-1]:
                assert (REPO / source).exists(), source


def test_healthcheck_module_answers(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.healthcheck"],
        env={"CMR_GATEWAY_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1 and "unhealthy" in done.stderr  # nothing listens there


def test_production_settings_are_valid_settings() -> None:
    raw = tomllib.loads((DEPLOY / "settings.production.toml").read_text())
    agencies = raw.pop("agencies")
    fields = {f.name for f in dataclasses.fields(Settings)}
    for key, value in raw.items():
        assert key in fields, f"unknown setting {key}"
        _coerce(key, value, from_env=False)
    assert raw["database_url"].startswith("postgresql+asyncpg://")
    assert raw["mail_transport"] == "smtp"
    assert raw["agency_ca_file"].startswith("/etc/") and raw["tls_cert_file"].startswith("/etc/")
    assert raw["api_rate_per_minute"] > 0
    assert all("contact" in a for a in agencies.values())


async def test_alert_rules_use_exported_metrics(
    sqlite_installation: Settings, clock: FrozenClock
) -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    names = {a["alert"] for a in alerts}
    for needed in (
        "CmrGatewayNoSchedulerLeader",
        "CmrGatewayOutboxBacklog",
        "CmrGatewayMailDeliveryFailed",
        "CmrGatewayRejectedEnvelopeSpike",
        "CmrGatewayCertificateExpiresSoon",
    ):
        assert needed in names
    for a in alerts:
        assert a["expr"] and a["labels"]["severity"] in ("warning", "critical")
        assert a["annotations"]["summary"]
    async with (
        running_gateway(sqlite_installation, clock) as gw,
        gw.web_session() as web,
        web.get("/metrics") as r,
    ):
        exposition = await r.text()
    exported = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            exported.add(name)
            if kind == "counter":
                exported.add(f"{name}_total")
    for a in alerts:
        for metric in re.findall(r"\bcmr_[a-z_]+", a["expr"]):
            assert metric in exported, f"{a['alert']}: {metric} is not exported"
    expiry = re.search(r'cmr_certificate_expiry_seconds\{listener="api"\} (\S+)', exposition)
    assert expiry and float(expiry.group(1)) > 30 * 86400  # a fresh development certificate


def render_default(value: Any) -> str:
    """How docs/operations.md shows a default."""
    if value is None:
        return "(none)"
    if isinstance(value, Path):
        return f"`<release>/{value.relative_to(PROJECT_ROOT)}`"
    if isinstance(value, tuple):
        return f"`{json.dumps(list(value))}`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def test_every_setting_is_documented() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    rows = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\| `([a-z_]+)` \| (.+?) \| .+ \|$", doc, re.MULTILINE)
    }
    problems = []
    for f in dataclasses.fields(Settings):
        if f.name in ("data_dir", "extra"):
            continue
        expected = render_default(f.default)
        if f.name not in rows:
            problems.append(f"| `{f.name}` | {expected} | ... | is missing")
        elif rows[f.name] != expected:
            problems.append(f"{f.name}: documented {rows[f.name]}, default {expected}")
    assert not problems, "docs/operations.md, Settings:\n" + "\n".join(problems)
