"""Config loading, `init`, `registration` and the --config/MSSBRIDGE_CONFIG resolution."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssbridge import config
from mssbridge.cli import app
from mssbridge.errors import ConfigError
from mssbridge.provisioning import set_values, toml_value

READY = [
    "matrix.homeserver_url=http://127.0.0.1:8008",
    "matrix.server_name=hospital.example",
    "mailbox.address=bal@chu-test.mssante.fr",
    "mailbox.smtp.host=smtp.chu-test.mssante.fr",
    "mailbox.imap.host=imap.chu-test.mssante.fr",
]


def _init(tmp_path: Path, *extra: str) -> tuple[Path, object]:
    path = tmp_path / "etc" / "config.toml"
    args = ["init", "--config", str(path)]
    for item in (*READY, *extra):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    return path, result


def test_init_writes_private_config_and_key(tmp_path: Path) -> None:
    path, result = _init(tmp_path)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.parent / "at-rest.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    settings = config.load(path)
    assert settings.matrix.server_name == "hospital.example"
    assert len(settings.matrix.as_token) >= 40
    assert settings.matrix.as_token != settings.matrix.hs_token
    # relative paths are resolved against the config file's directory
    assert settings.bridge.state_dir == (path.parent / "state").resolve()
    assert settings.tls.ca_file == (path.parent / "certs/igc-sante-roots.pem").resolve()
    assert "# Where the bridge listens" in path.read_text()


def test_init_tokens_differ_between_installations(tmp_path: Path) -> None:
    first, _ = _init(tmp_path / "a")
    second, _ = _init(tmp_path / "b")
    assert config.load(first).matrix.as_token != config.load(second).matrix.as_token


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    path, _ = _init(tmp_path)
    before = path.read_text()
    _, result = _init(tmp_path)
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert path.read_text() == before


def test_init_rejects_unknown_key(tmp_path: Path) -> None:
    _, result = _init(tmp_path, "matrix.no_such_key=1")
    assert result.exit_code == 2
    assert "matrix.no_such_key" in result.output


def test_placeholders_are_refused_with_their_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    result = CliRunner().invoke(app, ["init", "--config", str(path)])
    assert result.exit_code == 0
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert "matrix.homeserver_url" in str(caught.value)
    assert "mailbox.address" in str(caught.value)


def test_invalid_value_names_the_key(tmp_path: Path) -> None:
    path, _ = _init(tmp_path, "mailbox.smtp.security=ssl3")
    with pytest.raises(ConfigError, match=r"mailbox\.smtp\.security"):
        config.load(path)


def test_missing_config_explains_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mssbridge init"):
        config.load(tmp_path / "nowhere.toml")


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    assert config.config_path(None) == config.DEFAULT_CONFIG_PATH
    monkeypatch.setenv(config.CONFIG_ENV, str(tmp_path / "env.toml"))
    assert config.config_path(None) == tmp_path / "env.toml"
    assert config.config_path(tmp_path / "opt.toml") == tmp_path / "opt.toml"


def test_registration_uses_env_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _init(tmp_path, "matrix.listen_port=29444")
    monkeypatch.setenv(config.CONFIG_ENV, str(path))
    result = CliRunner().invoke(app, ["registration"])
    assert result.exit_code == 0, result.output
    settings = config.load(path)
    assert f'as_token: "{settings.matrix.as_token}"' in result.output
    assert f'hs_token: "{settings.matrix.hs_token}"' in result.output
    assert 'url: "http://127.0.0.1:29444"' in result.output
    assert r'regex: "@mss_.*:hospital\\.example"' in result.output
    assert 'sender_localpart: "mss_bot"' in result.output


def test_set_values_keeps_comments_and_sections() -> None:
    template = '# top\n[a]\n# doc of x\nx = 1\n[b]\nx = "old"\n'
    out = set_values(template, {"b.x": '"new"'})
    assert out == '# top\n[a]\n# doc of x\nx = 1\n[b]\nx = "new"\n'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12", "12"),
        ("true", "true"),
        ('["@a:b"]', '["@a:b"]'),
        ("a b", '"a b"'),
        ('quo"te', '"quo\\"te"'),
    ],
)
def test_toml_value(raw: str, expected: str) -> None:
    assert toml_value(raw) == expected
