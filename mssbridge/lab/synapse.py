"""A real Synapse homeserver on 127.0.0.1, started in a directory, for demos and tests."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

SYNAPSE_PYTHON_ENV = "MSSBRIDGE_SYNAPSE_PYTHON"
DEFAULT_SYNAPSE_VENV = Path.home() / ".cache" / "mssbridge-synapse"

_CONFIG_FILE = "homeserver.yaml"
_LAB_CONFIG_FILE = "lab.yaml"
_LOG_CONFIG_FILE = "log.yaml"
_LOG_FILE = "homeserver.log"
_STDERR_FILE = "synapse.stderr"

# High enough that no test or demo ever hits a rate limit.
_UNLIMITED = {"per_second": 10000, "burst_count": 10000}


class SynapseLabError(RuntimeError):
    """Synapse could not be found, started or queried."""


class SynapseRequestError(SynapseLabError):
    """The homeserver answered a request with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def find_synapse_python() -> Path:
    """Return the interpreter that has Synapse installed, or explain how to install it."""
    configured = os.environ.get(SYNAPSE_PYTHON_ENV)
    python = Path(configured) if configured else DEFAULT_SYNAPSE_VENV / "bin" / "python"
    if python.is_file() and os.access(python, os.X_OK):
        return python
    where = f"${SYNAPSE_PYTHON_ENV}={configured}" if configured else str(python)
    raise SynapseLabError(
        f"No Synapse interpreter at {where}. Install Synapse in its own virtualenv:\n"
        f"  python3 -m venv {DEFAULT_SYNAPSE_VENV} && "
        f"{DEFAULT_SYNAPSE_VENV}/bin/pip install matrix-synapse\n"
        f"or point {SYNAPSE_PYTHON_ENV} at the python of a virtualenv that has it "
        "(`bash .ci/run` does the former)."
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SynapseLab:
    """Runs one Synapse (SQLite, client API only, no TLS) on 127.0.0.1 out of `directory`.

    The appservice registration files must exist before `start()`: Synapse reads them once.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        server_name: str = "hospital.test",
        port: int | None = None,
        appservice_files: Sequence[Path | str] = (),
        log_level: str = "WARNING",
        start_timeout: float = 30.0,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.server_name = server_name
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.appservice_files = [Path(p).resolve() for p in appservice_files]
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.registration_shared_secret = secrets.token_urlsafe(32)
        self.config_path = self.directory / _CONFIG_FILE
        self.log_path = self.directory / _LOG_FILE
        self._process: subprocess.Popen[bytes] | None = None
        self._python = find_synapse_python()

    @property
    def pid(self) -> int | None:
        """The process id of the running homeserver, or None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> SynapseLab:
        """Generate the config if needed, start Synapse and wait until /health answers."""
        if self._process is not None:
            raise SynapseLabError("this SynapseLab is already started")
        for registration in self.appservice_files:
            if not registration.is_file():
                raise SynapseLabError(f"appservice registration {registration} does not exist")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self._generate_config()
        self._write_lab_config()
        with (self.directory / _STDERR_FILE).open("wb") as stderr:
            self._process = subprocess.Popen(
                [
                    str(self._python),
                    "-m",
                    "synapse.app.homeserver",
                    "--config-path",
                    str(self.config_path),
                    "--config-path",
                    str(self.directory / _LAB_CONFIG_FILE),
                ],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        atexit.register(self._kill_at_exit)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Synapse: SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
        process, self._process = self._process, None
        atexit.unregister(self._kill_at_exit)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def __enter__(self) -> SynapseLab:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Synapse's stderr and log file, for error messages."""
        parts = []
        for path in (self.directory / _STDERR_FILE, self.log_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(Synapse wrote no log)"

    def _kill_at_exit(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    def _generate_config(self) -> None:
        # The generated log config points at the current directory: run it from ours.
        result = subprocess.run(
            [
                str(self._python),
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                self.server_name,
                "--config-path",
                str(self.config_path),
                "--data-directory",
                str(self.directory),
                "--generate-config",
                "--report-stats=no",
            ],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SynapseLabError(
                f"synapse --generate-config failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def _write_lab_config(self) -> None:
        """Write the overrides; Synapse merges them over homeserver.yaml key by key."""
        log_config = {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                    "%(request)s - %(message)s"
                }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": self.log_level, "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        log_config_path = self.directory / _LOG_CONFIG_FILE
        log_config_path.write_text(json.dumps(log_config, indent=2) + "\n")
        overrides: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.url + "/",
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "log_config": str(log_config_path),
            "report_stats": False,
            "enable_registration": False,
            "registration_shared_secret": self.registration_shared_secret,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "app_service_config_files": [str(p) for p in self.appservice_files],
            "presence": {"enabled": False},
            "rc_message": _UNLIMITED,
            "rc_registration": _UNLIMITED,
            "rc_login": {
                "address": _UNLIMITED,
                "account": _UNLIMITED,
                "failed_attempts": _UNLIMITED,
            },
            "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
            "rc_joins_per_room": _UNLIMITED,
            "rc_invites": {
                "per_room": _UNLIMITED,
                "per_user": _UNLIMITED,
                "per_issuer": _UNLIMITED,
            },
            "rc_admin_redaction": _UNLIMITED,
            "rc_media_create": _UNLIMITED,
            "rc_room_creation": _UNLIMITED,
            "rc_profile": _UNLIMITED,
        }
        # JSON is YAML: no YAML library needed on this side.
        (self.directory / _LAB_CONFIG_FILE).write_text(json.dumps(overrides, indent=2) + "\n")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise SynapseLabError(
                    f"Synapse exited with code {code} while starting\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise SynapseLabError(
                    f"Synapse did not answer {self.url}/health within {self.start_timeout} s\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    # -- a tiny synchronous client -------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        query: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Send one JSON request to the homeserver and return the decoded JSON answer."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise SynapseRequestError(
                method, path, exc.code, exc.read().decode(errors="replace")
            ) from None
        return json.loads(payload) if payload else {}

    def register_user(self, localpart: str, password: str, admin: bool = False) -> tuple[str, str]:
        """Create a user with the shared-secret admin API; return (user_id, access_token)."""
        path = "/_synapse/admin/v1/register"
        nonce = self.request("GET", path)["nonce"]
        mac = hmac.new(self.registration_shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode())
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        answer = self.request(
            "POST",
            path,
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return answer["user_id"], answer["access_token"]

    def register_appservice_user(self, localpart: str, as_token: str) -> str:
        """Create a user in an appservice's namespace with its as_token; return its id."""
        try:
            answer = self.request(
                "POST",
                "/_matrix/client/v3/register",
                {
                    "type": "m.login.application_service",
                    "username": localpart,
                    "inhibit_login": True,
                },
                token=as_token,
            )
        except SynapseRequestError as exc:
            if exc.status == 400 and "M_USER_IN_USE" in exc.body:
                return f"@{localpart}:{self.server_name}"
            raise
        return str(answer["user_id"])


def main() -> None:
    """Run a lab homeserver in the directory given as argument until interrupted."""
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd() / "synapse-lab"
    started = time.monotonic()
    with SynapseLab(directory) as lab:
        print(
            f"Synapse {lab.server_name} at {lab.url} (pid {lab.pid}) "
            f"in {time.monotonic() - started:.2f} s",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
