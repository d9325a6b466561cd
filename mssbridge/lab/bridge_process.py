"""``mssbridge run`` as a child process, started, stopped or killed like an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class BridgeProcess:
    """``mssbridge run`` in its own process, killed or stopped like an operator would."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        handle = self.log.open("ab")
        handle.write(f"--- start {self.starts} ---\n".encode())
        handle.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mssbridge", "run", "--config", str(self.config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mssbridge exited {self.process.returncode}:\n{self.tail()}")
            if self._live() and self.log.read_text().count("mssbridge running") >= self.starts:
                return
            time.sleep(0.05)
        raise RuntimeError(f"mssbridge did not start in {timeout} s:\n{self.tail()}")

    def _live(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/_matrix/mau/live", timeout=1
            ) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as in a power cut."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(40)
        return self.process.returncode if self.process else 0

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
