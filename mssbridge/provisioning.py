"""Setting up a new installation: the config file from the example, and the Synapse registration."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from mssbridge.config import Settings
from mssbridge.errors import ConfigError
from mssbridge.security.atrest import new_key_file

_SECTION = re.compile(r"^\s*\[([A-Za-z0-9_.]+)\]\s*$")
_KEY = re.compile(r"^(\s*)#?\s*([A-Za-z0-9_]+)\s*=")


def example_config() -> str:
    return resources.files("mssbridge").joinpath("config.example.toml").read_text("utf-8")


def toml_value(text: str) -> str:
    """A command-line value as TOML: numbers and booleans as is, lists as JSON, else a string."""
    if re.fullmatch(r"-?\d+(\.\d+)?|true|false", text) or text.startswith("["):
        return text
    return json.dumps(text, ensure_ascii=False)


def set_values(template: str, values: dict[str, str]) -> str:
    """Replace ``section.key`` values in the TOML text, keeping every comment."""
    pending = dict(values)
    lines = template.splitlines()
    section = ""
    for index, line in enumerate(lines):
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
            continue
        match = _KEY.match(line)
        if not match:
            continue
        dotted = f"{section}.{match.group(2)}" if section else match.group(2)
        if dotted in pending:
            lines[index] = f"{match.group(1)}{match.group(2)} = {pending.pop(dotted)}"
    if pending:
        raise ConfigError("unknown config key(s): " + ", ".join(sorted(pending)))
    return "\n".join(lines) + "\n"


def write_new_config(path: Path, overrides: Iterable[str]) -> Path:
    """Write a config with fresh tokens and a new key file; never overwrite an existing one."""
    if path.exists():
        raise ConfigError(f"{path} already exists; not overwritten")
    values = {
        "matrix.as_token": json.dumps(secrets.token_urlsafe(32)),
        "matrix.hs_token": json.dumps(secrets.token_urlsafe(32)),
    }
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        values[key.strip()] = toml_value(value.strip())
    text = set_values(example_config(), values)
    path.parent.mkdir(parents=True, exist_ok=True)
    key_line = re.search(r'^key_file = "(.*)"', text, re.MULTILINE)
    key_path = Path(key_line.group(1)) if key_line else Path("at-rest.key")
    if not key_path.is_absolute():
        key_path = path.parent / key_path
    if not key_path.exists():
        new_key_file(key_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return key_path


def registration_yaml(settings: Settings) -> str:
    """The appservice registration file for Synapse (``app_service_config_files``)."""
    matrix = settings.matrix
    server = re.escape(matrix.server_name)
    ghosts = f"@{re.escape(matrix.ghost_prefix)}.*:{server}"
    bot = f"@{re.escape(matrix.bot_localpart)}:{server}"
    lines = [
        "# Appservice registration of mssbridge: add this file to the homeserver's",
        "# app_service_config_files and restart it.",
        f"id: {json.dumps(matrix.appservice_id)}",
        f"url: {json.dumps(settings.appservice_url)}",
        f"as_token: {json.dumps(matrix.as_token)}",
        f"hs_token: {json.dumps(matrix.hs_token)}",
        f"sender_localpart: {json.dumps(matrix.bot_localpart)}",
        "rate_limited: false",
        "namespaces:",
        "  users:",
        "    - exclusive: true",
        f"      regex: {json.dumps(ghosts)}",
        "    - exclusive: true",
        f"      regex: {json.dumps(bot)}",
        "  aliases: []",
        "  rooms: []",
    ]
    return "\n".join(lines) + "\n"
