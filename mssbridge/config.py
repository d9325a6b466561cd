"""Typed settings read from the TOML config file, with errors that name the key."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from mssbridge.errors import ConfigError
from mssbridge.mail.mx import nameserver

DEFAULT_CONFIG_PATH = Path("/etc/mssbridge/config.toml")
CONFIG_ENV = "MSSBRIDGE_CONFIG"
PLACEHOLDER = "CHANGE_ME"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BridgeSection(_Section):
    state_dir: Path = Path("/var/lib/mssbridge")
    database: str = ""
    key_file: Path = Path("/etc/mssbridge/at-rest.key")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    admin_room: str = ""
    lease_seconds: float = Field(default=60.0, ge=2.0, le=3600.0)


class MatrixSection(_Section):
    homeserver_url: str
    server_name: str
    as_token: str
    hs_token: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 29333
    public_url: str = ""
    appservice_id: str = "mssbridge"
    bot_localpart: str = "mss_bot"
    bot_displayname: str = "Passerelle MSSanté"
    ghost_prefix: str = "mss_"
    command_prefix: str = "!mss"
    allowed_users: tuple[str, ...] = ()

    @field_validator("ghost_prefix")
    @classmethod
    def _prefix_charset(cls, value: str) -> str:
        if not value or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789._-" for c in value):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return value


class TlsSection(_Section):
    ca_file: Path
    cert_file: Path
    key_file: Path
    check_hostname: bool = True
    crl_files: tuple[Path, ...] = ()
    crl_urls: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_file_per_url(self) -> TlsSection:
        if self.crl_urls and len(self.crl_urls) != len(self.crl_files):
            raise ValueError("crl_urls needs one entry per crl_files entry (same order)")
        return self


class SmtpSection(_Section):
    host: str
    port: int = 587
    security: Literal["starttls", "tls"] = "starttls"
    timeout: float = 60.0


class ImapSection(_Section):
    host: str
    port: int = 143
    security: Literal["starttls", "tls"] = "starttls"
    folder: str = "INBOX"
    idle_timeout: float = 600.0
    timeout: float = 60.0


class AuthSection(_Section):
    method: Literal["external", "plain", "login"] = "external"
    username: str = ""
    password: str = ""
    password_file: Path | None = None


class MailboxSection(_Section):
    address: str
    display_name: str = "Messagerie instantanée"
    self_copy: bool = True
    self_copy_wait: float = 20.0
    smtp: SmtpSection
    imap: ImapSection
    auth: AuthSection = AuthSection()


class RouteRule(_Section):
    sender: str = Field(
        description="fnmatch pattern on the sender address, e.g. '*@chu-x.mssante.fr'"
    )
    invite: tuple[str, ...]


class RoutingSection(_Section):
    default_invite: tuple[str, ...] = ()
    rules: tuple[RouteRule, ...] = ()


class LimitsSection(_Section):
    max_message_size: int = 10_000_000


class RetrySection(_Section):
    first_delay: float = 5.0
    max_delay: float = 900.0
    give_up_after: float = 4 * 24 * 3600.0


class AccessSection(_Section):
    """Who may do what from Matrix (user ids, ":server" suffixes or "*")."""

    users: tuple[str, ...] = ()
    patient_context: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()


class DkimSection(_Section):
    key_file: Path | None = None
    selector: str = "mssbridge"
    domain: str = ""
    verify_policy: Literal["record", "reject"] = "record"
    dns_fallback: bool = True
    trusted_keys: dict[str, str] = {}

    @field_validator("key_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


class WhitelistSection(_Section):
    enforce: bool = True
    allow_patient_domain: bool = False
    ca_file: Path | None = None
    max_age_days: int = Field(default=30, ge=1)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _no_ca_file(cls, value: object) -> object:
        return None if value == "" else value


class RetentionSection(_Section):
    """How long the bridge keeps what it relayed (docs/retention.md)."""

    content_days: int = Field(default=90, ge=1)
    audit_days: int = Field(default=183, ge=1)
    rejected_days: int = Field(default=30, ge=1)
    schedule_minutes: int = Field(default=60, ge=0)
    batch: int = Field(default=1000, ge=1, le=100_000)


class MetricsSection(_Section):
    """Prometheus ``/metrics`` and ``/health`` on a loopback port; empty ``listen`` disables."""

    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464, or empty")
        return value


class ReceiptsSection(_Section):
    """Delivery and read notifications, both ways (docs/receipts.md)."""

    request_delivery: bool = True
    request_read: bool = True
    answer_read_requests: bool = True
    notify_delayed: bool = True


class MssanteSection(_Section):
    """MSSanté specifics: the product reference (X-MSS-NIL) and the documents' organisation."""

    nil: str = ""
    name: str = ""
    finess: str = ""
    siret: str = ""
    # Root OID of the hospital for local ids (IPP, authors without RPPS, documents); empty:
    # an OID derived from the mailbox address (2.25.…).
    oid: str = ""
    # Authority of the INS given with "ins=": NIR (1.2.250.1.213.1.4.8), or the test/demo OIDs.
    ins_root: str = "1.2.250.1.213.1.4.8"
    rpps: dict[str, str] = {}

    @field_validator("nil")
    @classmethod
    def _nil_ascii(cls, value: str) -> str:
        if value and (len(value) > 100 or not all(" " <= c <= "~" for c in value)):
            raise ValueError("must be printable ASCII, at most 100 characters")
        return value.strip()

    @field_validator("finess")
    @classmethod
    def _finess(cls, value: str) -> str:
        if value and not re.fullmatch(r"(?:[0-9]{2}|2[AB])[0-9]{7}", value):
            raise ValueError("a FINESS number has 9 characters")
        return value

    @field_validator("siret")
    @classmethod
    def _siret(cls, value: str) -> str:
        if value and not re.fullmatch(r"[0-9]{14}", value):
            raise ValueError("a SIRET number has 14 digits")
        return value

    @field_validator("oid", "ins_root")
    @classmethod
    def _oid(cls, value: str) -> str:
        if value and (len(value) > 48 or not re.fullmatch(r"[0-2](?:\.(?:0|[1-9][0-9]*))+", value)):
            raise ValueError("must be a dotted numeric OID of at most 48 characters")
        return value

    @field_validator("rpps")
    @classmethod
    def _rpps(cls, value: dict[str, str]) -> dict[str, str]:
        for user, number in value.items():
            if not re.fullmatch(r"[0-9]{11}", number):
                raise ValueError(f"{user}: an RPPS number has 11 digits")
        return value

    @model_validator(mode="after")
    def _one_org_id(self) -> MssanteSection:
        if self.finess and self.siret:
            raise ValueError("set finess or siret, not both")
        if self.ins_root not in {f"1.2.250.1.213.1.4.{n}" for n in (8, 10, 11)}:
            raise ValueError("ins_root must be an INS OID (1.2.250.1.213.1.4.8, .10 or .11)")
        return self

    @property
    def documents_enabled(self) -> bool:
        """Health documents need the NIL, the organisation's name and its FINESS or SIRET."""
        return bool(self.nil and self.name.strip() and (self.finess or self.siret))


# A fully qualified domain name: dot-separated LDH labels, at least two.
_DOMAIN_RE = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+"


class GatewayRecipientRule(_Section):
    """Mail to a local part matching ``local_part`` (fnmatch, case-insensitive) goes to ``user``."""

    local_part: str = Field(min_length=1, max_length=64)
    user: str

    @field_validator("user")
    @classmethod
    def _matrix_user(cls, value: str) -> str:
        if not re.fullmatch(r"@[a-z0-9._=/+-]+:[A-Za-z0-9.:\[\]-]+", value):
            raise ValueError("must be a Matrix user id, e.g. @dr.house:hospital.example")
        return value


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GatewaySection(_Section):
    """Gateway mode: the bridge's own SMTP server for a chat domain (docs/gateway.md)."""

    enabled: bool = False
    domain: str = ""
    listen: tuple[str, ...] = ("127.0.0.1:2525",)
    hostname: str = ""
    cert_file: Path | None = None
    key_file: Path | None = None
    default_rule: bool = True
    recipients: tuple[GatewayRecipientRule, ...] = ()
    max_recipients: int = Field(default=50, ge=1, le=1000)
    max_sessions_per_peer: int = Field(default=10, ge=1, le=1000)
    max_messages_per_session: int = Field(default=100, ge=1, le=10_000)
    command_timeout: float = Field(default=300.0, ge=1.0, le=3600.0)
    data_timeout: float = Field(default=180.0, ge=1.0, le=3600.0)
    max_line_length: int = Field(default=998, ge=78, le=10_000)
    max_command_length: int = Field(default=512, ge=512, le=4096)
    # Benchmarks and tests only: false lets a session without STARTTLS send mail (no
    # certificate, so only the sender domain is checked); refused unless every listen
    # address is loopback.
    require_tls: bool = True
    # Processes accepting SMTP on the listen addresses (SO_REUSEPORT): the daemon's own, plus
    # processes - 1 SMTP-only workers it starts, restarts and stops, each storing what it
    # accepts with its own writer before its 250.
    processes: int = Field(default=1, ge=1, le=64)
    # How users' messages leave: through [mailbox], to each domain's MX, or the local relay.
    outbound: Literal["mailbox", "mx", "relay"] = "mailbox"
    relay: str = ""
    max_per_domain: int = Field(default=4, ge=1, le=100)
    delivery_timeout: float = Field(default=60.0, ge=1.0, le=600.0)
    # The DNS servers the MX lookups ask ("IP", "IP:PORT", "[IPv6]:PORT"); empty: the system's.
    nameservers: tuple[str, ...] = ()
    # Port of MX hosts; another than 25 is for the lab and tests only (needs nameservers).
    mx_port: int = Field(default=25, ge=1, le=65535)

    @field_validator("relay")
    @classmethod
    def _relay(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be HOST:PORT, e.g. relais.chu-exemple.fr:25")
        return value

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            nameserver(entry)  # ValueError names the entry
        return value

    @field_validator("cert_file", "key_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("domain", "hostname")
    @classmethod
    def _domain_name(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if value and not re.fullmatch(_DOMAIN_RE, value):
            raise ValueError("must be a domain name, e.g. chat.chu-exemple.mssante.fr")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            host, sep, port = entry.rpartition(":")
            # Port 0 takes any free port (tests).
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError(f"{entry!r}: must be HOST:PORT, e.g. 0.0.0.0:25 or [::]:25")
        return value

    @model_validator(mode="after")
    def _complete(self) -> GatewaySection:
        if self.enabled:
            if not self.domain:
                raise ValueError("domain is required when the gateway is enabled")
            if not self.listen:
                raise ValueError("listen needs at least one HOST:PORT")
        if self.outbound != "mailbox" and not self.enabled:
            raise ValueError(f"outbound = {self.outbound!r} needs enabled = true")
        if self.outbound == "relay" and not self.relay:
            raise ValueError("relay (HOST:PORT) is required when outbound = 'relay'")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        if self.mx_port != 25 and not self.nameservers:
            raise ValueError(
                "mx_port other than 25 (lab and tests only) needs nameservers naming the "
                "resolver that serves the test zones"
            )
        if not self.require_tls and not all(_is_loopback(entry) for entry in self.listen):
            raise ValueError(
                "require_tls = false (benchmarks and tests only) needs loopback listen "
                "addresses only (127.0.0.1:PORT, [::1]:PORT)"
            )
        return self


class Settings(_Section):
    bridge: BridgeSection = BridgeSection()
    matrix: MatrixSection
    tls: TlsSection
    mailbox: MailboxSection
    routing: RoutingSection = RoutingSection()
    limits: LimitsSection = LimitsSection()
    retry: RetrySection = RetrySection()
    whitelist: WhitelistSection = WhitelistSection()
    access: AccessSection = AccessSection()
    dkim: DkimSection = DkimSection()
    retention: RetentionSection = RetentionSection()
    metrics: MetricsSection = MetricsSection()
    mssante: MssanteSection = MssanteSection()
    receipts: ReceiptsSection = ReceiptsSection()
    gateway: GatewaySection = GatewaySection()
    source: Path = Path(".")

    @property
    def database_url(self) -> str:
        if self.bridge.database:
            return self.bridge.database
        return f"sqlite+aiosqlite:///{self.bridge.state_dir / 'mssbridge.db'}"

    @property
    def appservice_url(self) -> str:
        return (
            self.matrix.public_url or f"http://{self.matrix.listen_host}:{self.matrix.listen_port}"
        )

    def mailbox_password(self) -> str:
        auth = self.mailbox.auth
        if auth.password_file is not None:
            return auth.password_file.read_text(encoding="utf-8").strip()
        return auth.password


def config_path(explicit: Path | None) -> Path:
    """The config path from the option, then ``MSSBRIDGE_CONFIG``, then the default."""
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def _resolve_paths(data: dict, base: Path) -> None:
    """Make every path-valued key relative to the directory of the config file."""
    path_keys = {
        "bridge": ("state_dir", "key_file"),
        "tls": ("ca_file", "cert_file", "key_file"),
        "whitelist": ("ca_file",),
        "dkim": ("key_file",),
        "gateway": ("cert_file", "key_file"),
    }
    for section, keys in path_keys.items():
        for key in keys:
            value = data.get(section, {}).get(key)
            if isinstance(value, str) and value and not os.path.isabs(value):
                data[section][key] = str((base / value).resolve())
    crl_files = data.get("tls", {}).get("crl_files")
    if isinstance(crl_files, list):
        data["tls"]["crl_files"] = [
            str((base / f).resolve()) if isinstance(f, str) and not os.path.isabs(f) else f
            for f in crl_files
        ]
    auth = data.get("mailbox", {}).get("auth", {})
    if isinstance(auth.get("password_file"), str) and not os.path.isabs(auth["password_file"]):
        auth["password_file"] = str((base / auth["password_file"]).resolve())


def _error_key(error: ErrorDetails) -> str:
    return ".".join(str(part) for part in error["loc"])


def load(path: Path) -> Settings:
    """Read and validate the config file; raise ConfigError naming the faulty key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file not found: {path} (run 'mssbridge init --config {path}')"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    _resolve_paths(data, path.resolve().parent)
    data["source"] = str(path.resolve())
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_error_key(e)}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
    placeholders = _placeholder_keys(data)
    if placeholders:
        raise ConfigError(
            f"{path}: replace the example value {PLACEHOLDER!r} of " + ", ".join(placeholders)
        )
    return settings


def _placeholder_keys(data: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.extend(_placeholder_keys(value, name + "."))
        elif isinstance(value, str) and PLACEHOLDER in value:
            found.append(name)
    return found
