"""Settings: one validated object; a bad or unknown key is one clear error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import SettingsError
from gateway.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "settings.toml").write_text(text)
    return tmp_path


def test_defaults_and_derived_paths(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={})
    assert s.api_port == 8443 and s.web_port == 8444
    assert s.effective_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'gateway.db'}"
    assert s.web_base_url == "https://127.0.0.1:8444"
    assert s.max_body_bytes == 1024 * 1024


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    write(tmp_path, "api_port = 9000\nweb_port = 9001\n")
    env = {"CMR_GATEWAY_WEB_PORT": "9100", "CMR_GATEWAY_TRUSTED_PROXIES": "127.0.0.1, ::1"}
    s = load_settings(tmp_path, environ=env, api_port=9500)
    assert (s.api_port, s.web_port) == (9500, 9100)
    assert s.trusted_proxies == ("127.0.0.1", "::1")


def test_data_dir_from_environment(tmp_path: Path) -> None:
    s = load_settings(None, environ={"CMR_GATEWAY_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("api_prot = 1\n", {}, "api_prot"),
        ("", {"CMR_GATEWAY_NO_SUCH": "1"}, "no_such"),
        ('api_port = "eighty"\n', {}, "api_port"),
        ("api_port = 70000\n", {}, "api_port"),
        ("", {"CMR_GATEWAY_MAX_BODY_BYTES": "-5"}, "max_body_bytes"),
        ('log_format = "xml"\n', {}, "log_format"),
        ('database_url = "mysql://x"\n', {}, "database_url"),
        ('signing_algorithms = ["HS256"]\n', {}, "signing_algorithms"),
        ('trusted_proxies = ["not-an-ip"]\n', {}, "trusted_proxies"),
        ('database_password_file = "/nonexistent/secret"\n', {}, "database_password_file"),
        ('public_base_url = "http://plain.example"\n', {}, "public_base_url"),
        ("[agencies.NOPE]\ncontact = 'a@b.example'\n", {}, "agencies.NOPE"),
        ("api_port = \n", {}, "settings.toml"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        s = load_settings(tmp_path, environ=env)
        from gateway.agencies.registry import AgencyRegistry

        AgencyRegistry.load(s.config_dir, s.extra.get("agencies"))
    assert named in str(info.value)


def test_database_password_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t\n")
    write(
        tmp_path,
        f'database_url = "postgresql+asyncpg://cmr@db/cmr"\ndatabase_password_file = "{secret}"\n',
    )
    s = load_settings(tmp_path, environ={})
    assert s.effective_database_url == "postgresql+asyncpg://cmr:s3cr3t@db/cmr"
    assert "s3cr3t" not in repr(s)


def test_cli_reports_a_bad_setting_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "colour = 'blue'\n")
    assert main(["--data-dir", str(tmp_path), "audit", "verify"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "colour" in err
    assert "Traceback" not in err
